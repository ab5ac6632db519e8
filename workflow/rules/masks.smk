# Pseudo masks -> dense CRF -> DeepLab -> evaluation -> summary table and report.
# Every method in METHODS (common.smk) gets masks, CRF, DeepLab and its evaluation; GT_METHOD
# ("gt") is the fully supervised ceiling: the same DeepLab trained on the GT masks of the same images.
# The CRF (single-threaded C++) is sharded across jobs with scatter/gather
# (`--set-scatter crf=N`) and across `crf.processes` worker processes within a job.


scattergather:
    crf=config["crf"]["shards"],


# Per-method inputs, resolved at parse time (the rules pick them with one-line lambdas).
# DeepLab trains on a method's refined (or raw) pseudo masks; the ceiling only on the dataset's GT.
# With train_on: crf, a CAM method's `refine` picks the refined masks: the CRF's or the random walk's (irn.smk).
_REFINED = {m: "rw.h5" if r.get("refine", "crf") == "random_walk" else "crf.h5" for m, r in config["masks"]["methods"].items()}
_TRAIN_MASK = {m: _REFINED[m] if config["masks"]["train_on"] == "crf" else "masks.h5" for m in METHODS}
TRAIN_INPUTS = {m: {"index": INDEX, "masks": f"results/masks/{m}/{_TRAIN_MASK[m]}"} for m in METHODS}
TRAIN_INPUTS[GT_METHOD] = {"index": INDEX}
# Qualitative rows: CAM and pseudo mask where the method has them (not the ceiling).
QUALITATIVE_INPUTS = {
    m: {"index": INDEX, "pred": f"results/deeplab/{m}/pred_crf.h5"}
    | ({"cams": f"results/cam/{m}/cams.h5", "masks": f"results/masks/{m}/crf.h5"} if m != GT_METHOD else {})
    for m in DEEPLAB_METHODS
}


rule export_masks:
    input:
        index="results/dataset/index.json",
        source=lambda w: SEED_SOURCE[w.method],
    output:
        "results/masks/{method}/masks.h5",
    wildcard_constraints:
        method="|".join(METHODS),
    log:
        "logs/export_masks/{method}.log",
    benchmark:
        "benchmarks/export_masks/{method}.tsv"
    conda:
        ENV
    resources:
        **RES_CPU,
    params:
        code=stage_code("export_masks"),
        cfg=stage_cfg("export_masks"),
    shell:
        "python -m pipeline.stages.export_masks --cfg {params.cfg:q} --index {input.index} --method {wildcards.method}"
        " --source {input.source} --out {output} 2>&1 | tee -a {log}.attempts > {log}"


rule crf_masks:
    input:
        index="results/dataset/index.json",
        source=lambda w: SEED_SOURCE[w.method],
    output:
        temp("results/masks/{method}/crf_shards/{scatteritem}.h5"),
    wildcard_constraints:
        method="|".join(METHODS),
    log:
        "logs/crf_masks/{method}/{scatteritem}.log",
    benchmark:
        "benchmarks/crf_masks/{method}/{scatteritem}.tsv"
    conda:
        ENV
    group:
        "crf"
    threads: config["crf"]["processes"]
    resources:
        **RES_CPU,
    params:
        code=stage_code("crf_masks"),
        cfg=stage_cfg("crf_masks"),
    shell:
        "python -m pipeline.stages.crf --cfg {params.cfg:q} --index {input.index} --target masks"
        " --method {wildcards.method} --source {input.source} --shard {wildcards.scatteritem}"
        " --processes {threads} --out {output} 2>&1 | tee -a {log}.attempts > {log}"


rule gather_crf_masks:
    input:
        gather.crf("results/masks/{{method}}/crf_shards/{scatteritem}.h5"),
    output:
        "results/masks/{method}/crf.h5",
    wildcard_constraints:
        method="|".join(METHODS),
    log:
        "logs/gather_crf_masks/{method}.log",
    benchmark:
        "benchmarks/gather_crf_masks/{method}.tsv"
    conda:
        ENV
    group:
        "crf"
    resources:
        **RES_CPU,
    params:
        code=stage_code("gather_crf_masks"),
        cfg=stage_cfg("gather_crf_masks"),
    shell:
        "python -m pipeline.stages.gather_shards --cfg {params.cfg:q} --shards {input} --out {output} 2>&1 | tee -a {log}.attempts > {log}"


rule eval_masks:
    input:
        index="results/dataset/index.json",
        masks="results/masks/{method}/masks.h5",
        crf="results/masks/{method}/crf.h5",
    output:
        summary="results/masks/{method}/eval_masks.json",
        classes_raw="results/masks/{method}/eval_masks_classes.tsv",
        classes_crf="results/masks/{method}/eval_crf_classes.tsv",
    wildcard_constraints:
        method="|".join(METHODS),
    log:
        "logs/eval_masks/{method}.log",
    benchmark:
        "benchmarks/eval_masks/{method}.tsv"
    conda:
        ENV
    resources:
        **RES_CPU,
    params:
        code=stage_code("eval_masks"),
        cfg=stage_cfg("eval_masks"),
    shell:
        "python -m pipeline.stages.eval_masks --cfg {params.cfg:q} --index {input.index} --method {wildcards.method}"
        " --masks {input.masks} --crf {input.crf} --summary {output.summary}"
        " --classes-raw {output.classes_raw} --classes-crf {output.classes_crf} 2>&1 | tee -a {log}.attempts > {log}"


rule export_mask_pngs:
    input:
        "results/masks/{method}/crf.h5",
    output:
        directory("results/masks/{method}/crf_png"),
    wildcard_constraints:
        method="|".join(METHODS),
    log:
        "logs/export_mask_pngs/{method}.log",
    benchmark:
        "benchmarks/export_mask_pngs/{method}.tsv"
    conda:
        ENV
    resources:
        **RES_CPU,
    params:
        code=stage_code("export_mask_pngs"),
        cfg=stage_cfg("export_mask_pngs"),
    shell:
        "python -m pipeline.stages.export_mask_pngs --cfg {params.cfg:q} --masks {input} --out {output} 2>&1 | tee -a {log}.attempts > {log}"


rule train_deeplab:
    input:
        unpack(lambda w: TRAIN_INPUTS[w.method]),
        pretrained=pretrained_input("deeplab"),  # the pretrain job's weights (deeplab.pretrained: pretrain), else none
    output:
        "results/deeplab/{method}/model_final.pth",
    wildcard_constraints:
        method="|".join(DEEPLAB_METHODS),
    log:
        "logs/train_deeplab/{method}.log",
    benchmark:
        "benchmarks/train_deeplab/{method}.tsv"
    conda:
        ENV
    group:
        "deeplab"
    threads: 1
    resources:
        **gpu_resources("deeplab"),
    params:
        code=stage_code("train_deeplab"),
        cfg=stage_cfg("train_deeplab"),
        run_dir="results/runs/train_deeplab/{method}",
        masks=lambda w, input: f"--masks {input.masks}" if "masks" in input.keys() else "",
    shell:
        "python -m pipeline.stages.train_deeplab --cfg {params.cfg:q} --index {input.index} --gpus {resources.gpu}"
        " --threads {threads} --method {wildcards.method} {params.masks} --out {output}"
        " --ckpt-dir {params.run_dir} --metrics {params.run_dir}/metrics.csv 2>&1 | tee -a {log}.attempts > {log}"


rule infer_deeplab:
    input:
        index="results/dataset/index.json",
        model="results/deeplab/{method}/model_final.pth",
    output:
        "results/deeplab/{method}/logits.h5",
    wildcard_constraints:
        method="|".join(DEEPLAB_METHODS),
    log:
        "logs/infer_deeplab/{method}.log",
    benchmark:
        "benchmarks/infer_deeplab/{method}.tsv"
    conda:
        ENV
    group:
        "deeplab"
    threads: 1
    resources:
        **gpu_resources("deeplab", train=False),
    params:
        code=stage_code("infer_deeplab"),
        cfg=stage_cfg("infer_deeplab"),
    shell:
        "python -m pipeline.stages.infer_deeplab --cfg {params.cfg:q} --index {input.index} --gpus {resources.gpu}"
        " --threads {threads} --model {input.model} --out {output} 2>&1 | tee -a {log}.attempts > {log}"


rule crf_predictions:
    input:
        index="results/dataset/index.json",
        source="results/deeplab/{method}/logits.h5",
    output:
        temp("results/deeplab/{method}/crf_shards/{scatteritem}.h5"),
    wildcard_constraints:
        method="|".join(DEEPLAB_METHODS),
    log:
        "logs/crf_predictions/{method}/{scatteritem}.log",
    benchmark:
        "benchmarks/crf_predictions/{method}/{scatteritem}.tsv"
    conda:
        ENV
    group:
        "crf"
    threads: config["crf"]["processes"]
    resources:
        **RES_CPU,
    params:
        code=stage_code("crf_predictions"),
        cfg=stage_cfg("crf_predictions"),
    shell:
        "python -m pipeline.stages.crf --cfg {params.cfg:q} --index {input.index} --target predictions"
        " --method {wildcards.method} --source {input.source} --shard {wildcards.scatteritem}"
        " --processes {threads} --out {output} 2>&1 | tee -a {log}.attempts > {log}"


rule gather_crf_predictions:
    input:
        gather.crf("results/deeplab/{{method}}/crf_shards/{scatteritem}.h5"),
    output:
        "results/deeplab/{method}/pred_crf.h5",
    wildcard_constraints:
        method="|".join(DEEPLAB_METHODS),
    log:
        "logs/gather_crf_predictions/{method}.log",
    benchmark:
        "benchmarks/gather_crf_predictions/{method}.tsv"
    conda:
        ENV
    group:
        "crf"
    resources:
        **RES_CPU,
    params:
        code=stage_code("gather_crf_predictions"),
        cfg=stage_cfg("gather_crf_predictions"),
    shell:
        "python -m pipeline.stages.gather_shards --cfg {params.cfg:q} --shards {input} --out {output} 2>&1 | tee -a {log}.attempts > {log}"


rule eval_deeplab:
    input:
        index="results/dataset/index.json",
        logits="results/deeplab/{method}/logits.h5",
        crf="results/deeplab/{method}/pred_crf.h5",
    output:
        summary="results/deeplab/{method}/eval_deeplab.json",
        classes_raw="results/deeplab/{method}/eval_deeplab_classes.tsv",
        classes_crf="results/deeplab/{method}/eval_deeplab_crf_classes.tsv",
        png=directory("results/deeplab/{method}/pred_png"),
    wildcard_constraints:
        method="|".join(DEEPLAB_METHODS),
    log:
        "logs/eval_deeplab/{method}.log",
    benchmark:
        "benchmarks/eval_deeplab/{method}.tsv"
    conda:
        ENV
    resources:
        **RES_CPU,
    params:
        code=stage_code("eval_deeplab"),
        cfg=stage_cfg("eval_deeplab"),
    shell:
        "python -m pipeline.stages.eval_deeplab --cfg {params.cfg:q} --index {input.index} --method {wildcards.method}"
        " --logits {input.logits} --crf {input.crf} --summary {output.summary}"
        " --classes-raw {output.classes_raw} --classes-crf {output.classes_crf} --png-dir {output.png} 2>&1 | tee -a {log}.attempts > {log}"


rule summarize:
    input:
        seeds=expand("results/cam/{method}/eval_cam.json", method=METHODS),
        masks=expand("results/masks/{method}/eval_masks.json", method=METHODS),
        rw=expand("results/masks/{method}/eval_rw.json", method=RW_METHODS),
        finals=expand("results/deeplab/{method}/eval_deeplab.json", method=METHODS),
        ceiling=f"results/deeplab/{GT_METHOD}/eval_deeplab.json",
    output:
        tsv=report("results/summary.tsv", caption="../report/summary_tsv.rst", category="Summary"),
        json="results/summary.json",
        classes_tsv="results/report/per_class_iou.tsv",
        html=report("results/report/summary.html", caption="../report/summary.rst", category="Summary"),
        classes_html=report("results/report/per_class.html", caption="../report/per_class.rst", category="Per-class IoU"),
        chart_val=report("results/report/per_class_val_iou.png", caption="../report/chart_val.rst", category="Per-class IoU"),
        chart_mask=report("results/report/per_class_mask_iou.png", caption="../report/chart_mask.rst", category="Per-class IoU"),
    log:
        "logs/summarize/summarize.log",
    benchmark:
        "benchmarks/summarize/summarize.tsv"
    conda:
        ENV
    resources:
        **RES_CPU,
    params:
        code=stage_code("summarize"),
        cfg=stage_cfg("summarize"),
        methods=" ".join(METHODS),
        ceiling_method=GT_METHOD,
    shell:
        "python -m pipeline.stages.summarize --cfg {params.cfg:q} --methods {params.methods} --seed-evals {input.seeds}"
        " --mask-evals {input.masks} --rw-evals {input.rw} --final-evals {input.finals} --ceiling {input.ceiling}"
        " --ceiling-method {params.ceiling_method}"
        " --tsv {output.tsv} --json {output.json} --classes-tsv {output.classes_tsv} --html {output.html}"
        " --classes-html {output.classes_html} --chart-val {output.chart_val} --chart-mask {output.chart_mask}"
        " 2>&1 | tee -a {log}.attempts > {log}"


rule report_qualitative:
    input:
        unpack(lambda w: QUALITATIVE_INPUTS[w.method]),
    output:
        report("results/report/qualitative/{method}.png", caption="../report/qualitative.rst",
               category="Qualitative", subcategory="{method}"),
    wildcard_constraints:
        method="|".join(DEEPLAB_METHODS),
    log:
        "logs/report_qualitative/{method}.log",
    benchmark:
        "benchmarks/report_qualitative/{method}.tsv"
    conda:
        ENV
    resources:
        **RES_CPU,
    params:
        code=stage_code("report_qualitative"),
        cfg=stage_cfg("report_qualitative"),
        extra=lambda w, input: " ".join(f"--{k} {input[k]}" for k in ("cams", "masks") if k in input.keys()),
    shell:
        "python -m pipeline.stages.report_qualitative --cfg {params.cfg:q} --index {input.index} --method {wildcards.method}"
        " {params.extra} --pred {input.pred} --out {output} 2>&1 | tee -a {log}.attempts > {log}"


rule report_front:
    input:
        summary="results/summary.json",
        models=[model for model, _ in TRAINING_RUNS.values()],
    output:
        html=report("results/report/front.html", caption="../report/front.rst", category="Summary"),
        curves=report("results/report/training_curves.png", caption="../report/curves.rst", category="Training"),
    log:
        "logs/report_front/report_front.log",
    benchmark:
        "benchmarks/report_front/report_front.tsv"
    conda:
        ENV
    resources:
        **RES_CPU,
    params:
        code=stage_code("report_front"),
        cfg=stage_cfg("report_front"),
        curves=" ".join(shlex.quote(f"--curve={name}={csv}") for name, (_, csv) in TRAINING_RUNS.items()),
        presets=" ".join(shlex.quote(str(p)) for p in PRESETS),
    shell:
        "python -m pipeline.stages.report_front --cfg {params.cfg:q} --summary {input.summary} {params.curves}"
        " --presets {params.presets} --html {output.html} --curves-png {output.curves} 2>&1 | tee -a {log}.attempts > {log}"
