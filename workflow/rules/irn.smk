# IRN's inter-pixel relations for each random-walk method (RW_METHODS, common.smk): train the boundary
# (+ displacement) network on the method's IR labels, random-walk its maps into pseudo masks, evaluate them.
# IRN's cam_to_ir_label (dual thresholds 0.30 / 0.05 + label CRF) is exactly the mask stage's CRF
# recipe of a CAM method, so its artifact results/masks/<m>/crf.h5 is the IR label (no rule of its own);
# for MCTformer it stands for PSA's alpha 1 / alpha 12 CRF labels (masks.methods.mctformer).
# The walk's recipe is the method's RW_RECIPE: IRN's on make_cam's stride-4 cams_strided.h5, or PSA's
# (irn.psa, as MCTformer's run_psa.sh) on the full-resolution cams.h5 of an MCTformer-based method.
# Training checkpoints go to results/runs/train_irn/<m>/ (outside the DAG) as for the other trainers.


# Per-method inputs, resolved at parse time: the CAM classifier only when it is the backbone
# (irn.backbone_from: cam_model): the method's own, or for a PSA-recipe (ViT) method the ResNet CAM
# baseline's, trained on the same images (PSA's AffinityNet likewise starts from its classifier).
IRN_TRAIN_INPUTS = {
    m: {"index": INDEX, "ir_labels": f"results/masks/{m}/crf.h5"}
    | ({"cam_model": f"results/cam/{m if RW_RECIPE[m] == 'irn' else 'baseline'}/model_final.pth"}
       if config["irn"]["backbone_from"] == "cam_model" else {"pretrained": pretrained_input("irn")})
    for m in RW_METHODS
}
RW_CAMS = {m: f"results/cam/{m}/{'cams_strided.h5' if RW_RECIPE[m] == 'irn' else 'cams.h5'}" for m in RW_METHODS}


rule train_irn:
    input:
        unpack(lambda w: IRN_TRAIN_INPUTS[w.method]),
    output:
        "results/irn/{method}/model_final.pth",
    wildcard_constraints:
        method="|".join(RW_METHODS),
    log:
        "logs/train_irn/{method}.log",
    benchmark:
        "benchmarks/train_irn/{method}.tsv"
    conda:
        ENV
    group:
        "irn"
    # One thread: the frozen backbone's small convolutions gain little from a second one, and two
    # single-threaded jobs (baseline, csd) then share a 2-core machine without oversubscription.
    threads: 1
    resources:
        **gpu_resources("irn"),
    params:
        code=stage_code("train_irn"),
        cfg=stage_cfg("train_irn"),
        run_dir="results/runs/train_irn/{method}",
        cam_model=lambda w, input: f"--cam-model {input.cam_model}" if "cam_model" in input.keys() else "",
    shell:
        "python -m pipeline.stages.train_irn --cfg {params.cfg:q} --index {input.index} --gpus {resources.gpu}"
        " --threads {threads} --ir-labels {input.ir_labels} {params.cam_model} --out {output}"
        " --ckpt-dir {params.run_dir} --metrics {params.run_dir}/metrics.csv 2>&1 | tee -a {log}.attempts > {log}"


rule make_sem_seg_labels:
    input:
        index="results/dataset/index.json",
        model="results/irn/{method}/model_final.pth",
        cams=lambda w: RW_CAMS[w.method],
    output:
        "results/masks/{method}/rw.h5",
    wildcard_constraints:
        method="|".join(RW_METHODS),
    log:
        "logs/make_sem_seg_labels/{method}.log",
    benchmark:
        "benchmarks/make_sem_seg_labels/{method}.tsv"
    conda:
        ENV
    group:
        "irn"
    threads: 1
    resources:
        **gpu_resources("irn", train=False),
    params:
        code=stage_code("make_sem_seg_labels"),
        cfg=stage_cfg("make_sem_seg_labels"),
        recipe=lambda w: RW_RECIPE[w.method],
    shell:
        "python -m pipeline.stages.make_sem_seg_labels --cfg {params.cfg:q} --index {input.index} --gpus {resources.gpu}"
        " --threads {threads} --method {wildcards.method} --recipe {params.recipe} --model {input.model}"
        " --cams {input.cams} --out {output} 2>&1 | tee -a {log}.attempts > {log}"


rule eval_rw_masks:
    input:
        index="results/dataset/index.json",
        rw="results/masks/{method}/rw.h5",
    output:
        summary="results/masks/{method}/eval_rw.json",
        classes="results/masks/{method}/eval_rw_classes.tsv",
    wildcard_constraints:
        method="|".join(RW_METHODS),
    log:
        "logs/eval_rw_masks/{method}.log",
    benchmark:
        "benchmarks/eval_rw_masks/{method}.tsv"
    conda:
        ENV
    resources:
        **RES_CPU,
    params:
        code=stage_code("eval_rw_masks"),
        cfg=stage_cfg("eval_rw_masks"),
    shell:
        "python -m pipeline.stages.eval_masks --cfg {params.cfg:q} --index {input.index} --method {wildcards.method}"
        " --rw {input.rw} --summary {output.summary} --classes-rw {output.classes} 2>&1 | tee -a {log}.attempts > {log}"
