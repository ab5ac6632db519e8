# CAM baseline (IRN): train the classifier, export multi-scale CAMs, evaluate seeds, tag patches.
# Training writes intermediate checkpoints and its metrics CSV under results/runs/ (outside the
# DAG) so a killed job resumes instead of starting over.


rule train_cam:
    input:
        index="results/dataset/index.json",
        pretrained=pretrained_input("cam"),  # the pretrain job's weights (cam.pretrained: pretrain), else none
    output:
        "results/cam/baseline/model_final.pth",
    log:
        "logs/train_cam/baseline.log",
    benchmark:
        "benchmarks/train_cam/baseline.tsv"
    conda:
        ENV
    group:
        "cam_model"
    threads: 2
    resources:
        **gpu_resources("cam"),
    params:
        code=stage_code("train_cam"),
        cfg=stage_cfg("train_cam"),
        run_dir="results/runs/train_cam/baseline",
    shell:
        "python -m pipeline.stages.train_cam --cfg {params.cfg:q} --index {input.index} --gpus {resources.gpu}"
        " --threads {threads} --out {output} --ckpt-dir {params.run_dir}"
        " --metrics {params.run_dir}/metrics.csv 2>&1 | tee -a {log}.attempts > {log}"


rule make_cam:
    input:
        index="results/dataset/index.json",
        model="results/cam/{method}/model_final.pth",
    output:
        cams="results/cam/{method}/cams.h5",
        strided="results/cam/{method}/cams_strided.h5",  # IRN's stride-4 `cam`: the random walk's input (irn.smk)
    wildcard_constraints:
        method="|".join(CAM_METHODS),
    log:
        "logs/make_cam/{method}.log",
    benchmark:
        "benchmarks/make_cam/{method}.tsv"
    conda:
        ENV
    group:
        "cam_model"
    threads: 2
    resources:
        **gpu_resources("cam", train=False),
    params:
        code=stage_code("make_cam"),
        cfg=stage_cfg("make_cam"),
    shell:
        "python -m pipeline.stages.make_cam --cfg {params.cfg:q} --index {input.index} --gpus {resources.gpu}"
        " --threads {threads} --model {input.model} --out {output.cams} --strided {output.strided}"
        " 2>&1 | tee -a {log}.attempts > {log}"


rule eval_cam:
    input:
        index="results/dataset/index.json",
        cams="results/cam/{method}/cams.h5",
    output:
        summary="results/cam/{method}/eval_cam.json",
        classes="results/cam/{method}/eval_cam_classes.tsv",
        sweep="results/cam/{method}/eval_cam_sweep.tsv",
    log:
        "logs/eval_cam/{method}.log",
    benchmark:
        "benchmarks/eval_cam/{method}.tsv"
    conda:
        ENV
    resources:
        **RES_CPU,
    params:
        code=stage_code("eval_cam"),
        cfg=stage_cfg("eval_cam"),
    shell:
        "python -m pipeline.stages.eval_cam --cfg {params.cfg:q} --method {wildcards.method} --index {input.index} --cams {input.cams}"
        " --summary {output.summary} --classes {output.classes} --sweep {output.sweep} 2>&1 | tee -a {log}.attempts > {log}"


rule tag_patches:
    input:
        index="results/dataset/index.json",
        cams="results/cam/{method}/cams.h5",
    output:
        tags="results/tags/{method}/tags.h5",
        metrics="results/tags/{method}/tag_accuracy.json",
    log:
        "logs/tag_patches/{method}.log",
    benchmark:
        "benchmarks/tag_patches/{method}.tsv"
    conda:
        ENV
    resources:
        **RES_CPU,
    params:
        code=stage_code("tag_patches"),
        cfg=stage_cfg("tag_patches"),
    shell:
        "python -m pipeline.stages.tag_patches --cfg {params.cfg:q} --index {input.index} --cams {input.cams}"
        " --out {output.tags} --metrics {output.metrics} 2>&1 | tee -a {log}.attempts > {log}"
