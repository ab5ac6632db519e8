# MCTformer-V2 (method `mctformer`, when listed in masks.methods): train the multi-class-token
# ViT, then write its fused, patch-affinity-refined localisation maps as the method's CAM cache.
# Method `mctformer_csd` (CSD on MCTformer, round 2) trains the same network with CSD's
# copy-paste and losses, cutting sources with mctformer's masks; make_cam_mctformer writes both.
# results/cam/<method>/cams.h5 then goes through the shared eval_cam, export_masks, CRF and
# DeepLab rules like any CAM method's. Intermediate checkpoints and the metrics CSV live in
# results/runs/ (outside the DAG), so a killed job resumes.


rule train_mctformer:
    input:
        index="results/dataset/index.json",
        pretrained=pretrained_input("mctformer"),  # the pretrain job's weights (mctformer.pretrained: pretrain), else none
    output:
        "results/cam/mctformer/model_final.pth",
    log:
        "logs/train_mctformer/mctformer.log",
    benchmark:
        "benchmarks/train_mctformer/mctformer.tsv"
    conda:
        ENV
    group:
        "mctformer"
    threads: 2
    resources:
        **gpu_resources("mctformer"),
    params:
        code=stage_code("train_mctformer"),
        cfg=stage_cfg("train_mctformer"),
        run_dir="results/runs/train_mctformer/mctformer",
    shell:
        "python -m pipeline.stages.train_mctformer --cfg {params.cfg:q} --index {input.index} --gpus {resources.gpu}"
        " --threads {threads} --out {output} --ckpt-dir {params.run_dir}"
        " --metrics {params.run_dir}/metrics.csv 2>&1 | tee -a {log}.attempts > {log}"


MCT_CSD_SOURCE_MASKS = {
    "crf_masks": "results/masks/mctformer/crf.h5",  # MCTformer's dual thresholds + CRF
    "rw_masks": "results/masks/mctformer/rw.h5",  # MCTformer's random-walk masks (PSA's walk, irn.smk)
    "cam_seeds": "results/cam/mctformer/cams.h5",  # dual thresholds applied by train_mctformer_csd
}


rule train_mctformer_csd:
    input:
        index="results/dataset/index.json",
        masks=MCT_CSD_SOURCE_MASKS[config["mctformer_csd"]["source_masks"]],
        pretrained=pretrained_input("mctformer"),  # the same starting weights as train_mctformer
    output:
        "results/cam/mctformer_csd/model_final.pth",
    log:
        "logs/train_mctformer_csd/mctformer_csd.log",
    benchmark:
        "benchmarks/train_mctformer_csd/mctformer_csd.tsv"
    conda:
        ENV
    group:
        "mctformer"
    threads: 2
    resources:
        **gpu_resources("mctformer_csd"),
    params:
        code=stage_code("train_mctformer_csd"),
        cfg=stage_cfg("train_mctformer_csd"),
        run_dir="results/runs/train_mctformer_csd/mctformer_csd",
    shell:
        "python -m pipeline.stages.train_mctformer_csd --cfg {params.cfg:q} --index {input.index} --gpus {resources.gpu}"
        " --threads {threads} --source-masks {input.masks} --out {output} --ckpt-dir {params.run_dir}"
        " --metrics {params.run_dir}/metrics.csv 2>&1 | tee -a {log}.attempts > {log}"


rule make_cam_mctformer:
    input:
        index="results/dataset/index.json",
        model="results/cam/{method}/model_final.pth",
    output:
        "results/cam/{method}/cams.h5",
    wildcard_constraints:
        method="|".join(MCT_METHODS) or "(?!)",  # no MCTformer method listed: matches nothing
    log:
        "logs/make_cam_mctformer/{method}.log",
    benchmark:
        "benchmarks/make_cam_mctformer/{method}.tsv"
    conda:
        ENV
    group:
        "mctformer"
    threads: 2
    resources:
        **gpu_resources("mctformer", train=False),
    params:
        code=stage_code("make_cam_mctformer"),
        cfg=stage_cfg("make_cam_mctformer"),
    shell:
        "python -m pipeline.stages.make_cam_mctformer --cfg {params.cfg:q} --index {input.index} --gpus {resources.gpu}"
        " --threads {threads} --model {input.model} --out {output} 2>&1 | tee -a {log}.attempts > {log}"
