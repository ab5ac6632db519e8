# CSD (Cross-domain Semantic Decoupling) on the CAM baseline: round 2 retrains IRN's classifier
# with co-occurrence-oriented copy-paste, cutting objects with the baseline's round-1 masks.
# Its model feeds the shared make_cam / eval_cam rules (method "csd") and the mask/CRF/DeepLab stages. Intermediate checkpoints live in results/runs/ (outside the DAG).

CSD_SOURCE_MASKS = {
    "cam_seeds": "results/cam/baseline/cams.h5",  # dual thresholds applied by train_csd
    "crf_masks": "results/masks/baseline/crf.h5",  # the CRF stage's refined masks
}


rule train_csd:
    input:
        index="results/dataset/index.json",
        masks=CSD_SOURCE_MASKS[config["csd"]["source_masks"]],
    output:
        "results/cam/csd/model_final.pth",
    log:
        "logs/train_csd/csd.log",
    benchmark:
        "benchmarks/train_csd/csd.tsv"
    conda:
        ENV
    group:
        "cam_model"
    threads: 2
    resources:
        **gpu_resources("csd"),
    params:
        code=stage_code("train_csd"),
        cfg=stage_cfg("train_csd"),
        run_dir="results/runs/train_csd/csd",
    shell:
        "python -m pipeline.stages.train_csd --cfg {params.cfg:q} --index {input.index} --gpus {resources.gpu}"
        " --threads {threads} --source-masks {input.masks} --out {output} --ckpt-dir {params.run_dir}"
        " --metrics {params.run_dir}/metrics.csv 2>&1 | tee -a {log}.attempts > {log}"
