# SeCo (Separate and Conquer): train the single-stage network, export CAM seeds and segmentation
# logits, evaluate its own segmentation. Intermediate checkpoints and the metrics CSV live under
# results/runs/train_seco/seco/ (outside the DAG) so a killed job resumes.
# The CAM seeds go through the shared eval_cam rule (method wildcard "seco").
# One thread per job: the tiny synthetic ViT is bound by per-op overhead, and two intra-op
# threads ran 6x slower than one on the shared 2-core machine (40 iterations: 106 s vs 18 s);
# a free core lets Snakemake run another job beside it. On GPUs the thread count hardly matters.


rule train_seco:
    input:
        index="results/dataset/index.json",
        # the offline patch tags (tag_patches on the CAM baseline) only when seco.tagging is offline
        tags=lambda wildcards: ["results/tags/baseline/tags.h5"] if config["seco"]["tagging"] == "offline" else [],
        pretrained=pretrained_input("seco"),  # the pretrain job's weights (seco.pretrained: pretrain), else none
    output:
        "results/seco/model_final.pth",
    log:
        "logs/train_seco/seco.log",
    benchmark:
        "benchmarks/train_seco/seco.tsv"
    conda:
        ENV
    group:
        "seco"
    threads: 1
    resources:
        **gpu_resources("seco"),
    params:
        code=stage_code("train_seco"),
        cfg=stage_cfg("train_seco"),
        run_dir="results/runs/train_seco/seco",
        tags=lambda wildcards, input: f"--tags {input.tags}" if input.tags else "",
    shell:
        "python -m pipeline.stages.train_seco --cfg {params.cfg:q} --index {input.index} --gpus {resources.gpu}"
        " --threads {threads} {params.tags} --out {output} --ckpt-dir {params.run_dir}"
        " --metrics {params.run_dir}/metrics.csv 2>&1 | tee -a {log}.attempts > {log}"


rule infer_seco:
    input:
        index="results/dataset/index.json",
        model="results/seco/model_final.pth",
    output:
        cams="results/cam/seco/cams.h5",
        logits="results/seco/seg_logits.h5",
        metrics="results/seco/infer_metrics.json",
    log:
        "logs/infer_seco/seco.log",
    benchmark:
        "benchmarks/infer_seco/seco.tsv"
    conda:
        ENV
    group:
        "seco"
    threads: 1
    resources:
        **gpu_resources("seco", train=False),
    params:
        code=stage_code("infer_seco"),
        cfg=stage_cfg("infer_seco"),
    shell:
        "python -m pipeline.stages.infer_seco --cfg {params.cfg:q} --index {input.index} --gpus {resources.gpu}"
        " --threads {threads} --model {input.model} --cams {output.cams} --logits {output.logits}"
        " --metrics {output.metrics} 2>&1 | tee -a {log}.attempts > {log}"


rule eval_seco:
    input:
        index="results/dataset/index.json",
        logits="results/seco/seg_logits.h5",
        metrics="results/seco/infer_metrics.json",
    output:
        summary="results/seco/eval_seg.json",
        classes="results/seco/eval_seg_classes.tsv",
    log:
        "logs/eval_seco/seco.log",
    benchmark:
        "benchmarks/eval_seco/seco.tsv"
    conda:
        ENV
    resources:
        **RES_CPU,
    params:
        code=stage_code("eval_seco"),
        cfg=stage_cfg("eval_seco"),
    shell:
        "python -m pipeline.stages.eval_seco --cfg {params.cfg:q} --index {input.index} --logits {input.logits}"
        " --infer-metrics {input.metrics} --summary {output.summary} --classes {output.classes} 2>&1 | tee -a {log}.attempts > {log}"
