# MCTformer-V2 (method `mctformer`, when listed in masks.methods): train the multi-class-token
# ViT, then write its fused, patch-affinity-refined localisation maps as the method's CAM cache.
# results/cam/mctformer/cams.h5 then goes through the shared eval_cam, export_masks, CRF and
# DeepLab rules like any CAM method's. Intermediate checkpoints and the metrics CSV live in
# results/runs/ (outside the DAG), so a killed job resumes.


rule train_mctformer:
    input:
        index="results/dataset/index.json",
    output:
        "results/cam/mctformer/model_final.pth",
    log:
        "logs/train_mctformer/mctformer.log",
    benchmark:
        "benchmarks/train_mctformer/mctformer.tsv"
    conda:
        ENV
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


rule make_cam_mctformer:
    input:
        index="results/dataset/index.json",
        model="results/cam/mctformer/model_final.pth",
    output:
        "results/cam/mctformer/cams.h5",
    log:
        "logs/make_cam_mctformer/mctformer.log",
    benchmark:
        "benchmarks/make_cam_mctformer/mctformer.tsv"
    conda:
        ENV
    threads: 2
    resources:
        **gpu_resources("mctformer", train=False),
    params:
        code=stage_code("make_cam_mctformer"),
        cfg=stage_cfg("make_cam_mctformer"),
    shell:
        "python -m pipeline.stages.make_cam_mctformer --cfg {params.cfg:q} --index {input.index} --gpus {resources.gpu}"
        " --threads {threads} --model {input.model} --out {output} 2>&1 | tee -a {log}.attempts > {log}"
