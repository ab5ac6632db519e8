# Dataset stages: synthetic generation (embedded default) and the validated dataset index.


rule make_synthetic:
    output:
        directory(DATA_ROOT if SYNTHETIC else "results/data/synthetic"),
    log:
        "logs/make_synthetic/make_synthetic.log",
    benchmark:
        "benchmarks/make_synthetic/make_synthetic.tsv"
    conda:
        ENV
    resources:
        **RES_CPU,
    params:
        code=stage_code("make_synthetic"),
        cfg=stage_cfg("make_synthetic"),
    shell:
        "python -m pipeline.stages.make_synthetic --cfg {params.cfg:q} --out {output} 2>&1 | tee -a {log}.attempts > {log}"


rule index_dataset:
    input:
        dataset_input,
    output:
        "results/dataset/index.json",
    log:
        "logs/index_dataset/index_dataset.log",
    benchmark:
        "benchmarks/index_dataset/index_dataset.tsv"
    conda:
        ENV
    threads: 2
    resources:
        **RES_CPU,
    params:
        code=stage_code("index_dataset"),
        cfg=stage_cfg("index_dataset"),
        # User data is not a DAG product: a change of its files or split lists changes this.
        data=dataset_fingerprint(config["dataset"]) if not SYNTHETIC else "",
    shell:
        "python -m pipeline.stages.index_dataset --cfg {params.cfg:q} --out {output} --workers {threads} 2>&1 | tee -a {log}.attempts > {log}"
