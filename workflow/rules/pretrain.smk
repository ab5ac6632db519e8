# Pretraining on the ImageNet stand-in (configs/pretrained.yaml; nothing here runs by default): the
# corpus, then one supervised pretraining per backbone family that a section asks for with
# `pretrained: pretrain` (common.smk resolves that to the weight file below). Both write into the
# cache folder shared by every run directory (pretrain.cache_dir), under a hash of what
# determines them (pipeline/pretrain/cache.py): equal pretraining config means one pretraining,
# and a run directory that finds the file does not rerun it. Checkpoints and metrics.csv live in
# <cache>/<backbone>-<hash>/run/, so a killed pretraining resumes from any run directory.

PRETRAIN_CACHE = str(_pretrain_cache.cache_dir(config, workflow.basedir))
PRETRAIN_CORPUS = str(_pretrain_cache.corpus_dir(config, workflow.basedir, stage_code_hash(
    "pipeline.stages.make_pretrain_corpus", os.path.join(workflow.basedir, "pipeline"))))
_PRETRAIN_IMAGES = config["pretrain"]["corpus"]["train_per_class"] * (
    config["pretrain"]["corpus"]["num_new_classes"] + 10 * config["pretrain"]["corpus"]["wsss_classes"])
# One data-center GPU: ~0.05 s per iteration of the small backbones at the corpus's crops.
_PRETRAIN_MINUTES = 2 * 0.05 * max(r["epochs"] for r in config["pretrain"]["recipes"].values()) * (
    _PRETRAIN_IMAGES // config["pretrain"]["batch_size"]) / 60


rule make_pretrain_corpus:
    output:
        directory(PRETRAIN_CORPUS),
    log:
        f"logs/make_pretrain_corpus/{os.path.basename(PRETRAIN_CORPUS)}.log",
    benchmark:
        f"benchmarks/make_pretrain_corpus/{os.path.basename(PRETRAIN_CORPUS)}.tsv"
    conda:
        ENV
    resources:
        **RES_CPU,
    params:
        code=stage_code("make_pretrain_corpus"),
        cfg=stage_cfg("make_pretrain_corpus"),
    shell:
        "python -m pipeline.stages.make_pretrain_corpus --cfg {params.cfg:q} --out {output} 2>&1 | tee -a {log}.attempts > {log}"


rule pretrain:
    input:
        corpus=PRETRAIN_CORPUS,
    output:
        weights=os.path.join(PRETRAIN_CACHE, "{family}-{key}", _pretrain_cache.WEIGHTS),
        eval=os.path.join(PRETRAIN_CACHE, "{family}-{key}", _pretrain_cache.EVAL),
    wildcard_constraints:
        family="[A-Za-z0-9_.]+",
        key="[0-9a-f]{%d}" % _pretrain_cache.KEY_CHARS,
    log:
        "logs/pretrain/{family}-{key}.log",
    benchmark:
        "benchmarks/pretrain/{family}-{key}.tsv"
    conda:
        ENV
    threads: 2
    resources:
        gpu=1,
        mem_mb=12000,
        runtime=int(max(60, _PRETRAIN_MINUTES + 30)),
        cpus_per_task=lambda wildcards, threads: max(threads, config["pretrain"]["num_workers"] + 1),
    params:
        code=stage_code("pretrain"),
        cfg=stage_cfg("pretrain"),
        run_dir=lambda wildcards, output: os.path.join(os.path.dirname(output.weights), _pretrain_cache.RUN),
    shell:
        "python -m pipeline.stages.pretrain --cfg {params.cfg:q} --corpus {input.corpus} --gpus {resources.gpu}"
        " --threads {threads} --out {output.weights} --eval {output.eval} --ckpt-dir {params.run_dir}"
        " --metrics {params.run_dir}/metrics.csv 2>&1 | tee -a {log}.attempts > {log}"
