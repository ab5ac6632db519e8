# WSSS pipeline: CAM seeds -> patch tags -> SeCo / CSD training -> pseudo masks -> CRF -> DeepLab.
# Paths: results/<stage>/... (artifacts), logs/<rule>/... and benchmarks/<rule>/... per job.
# Run:    snakemake --cores 8 --resources gpu=4        (see README for presets and SLURM)
import os
import shlex

from snakemake.utils import min_version

min_version("9.0")


# The defaults live beside this Snakefile, so `--directory <scratch>` and a preset given alone
# (`--configfile configs/voc12.yaml`) both layer on them.
configfile: os.path.join(workflow.basedir, "config.yaml")


report: "workflow/report/workflow.rst"


# Every job imports this checkout's `pipeline` package, whatever is installed (a conda env from
# envs/wsss.yaml holds only the dependencies) and whatever the working directory. A prefix of
# our own replaces Snakemake's strict-mode default, so it is restated: a stage that fails fails
# its job even though the rule pipes its output through `tee` (see common.smk).
shell.prefix(f"set -euo pipefail; export PYTHONPATH={shlex.quote(workflow.basedir)}${{{{PYTHONPATH:+:$PYTHONPATH}}}}; ")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/cam.smk"
include: "workflow/rules/csd.smk"
include: "workflow/rules/seco.smk"
include: "workflow/rules/masks.smk"
include: "workflow/rules/irn.smk"
include: "workflow/rules/mctformer.smk"


# Seconds-long CPU jobs run where Snakemake runs, not through sbatch: under SLURM each job
# costs tens of seconds of queueing and status polling, far more than the work itself. The
# other jobs run in groups (the rules' `group:`), one sbatch job per connected chain: a model's
# training with its inference (cam_model: the CAM classifier, its CAMs and CSD's round 2; seco;
# irn; deeplab; mctformer) and one method's CRF shards with their gather (crf). Local runs ignore
# groups; `--groups RULE=NAME` / `--group-components NAME=N` regroup them (profiles/README.md).
localrules:
    all,
    make_synthetic,
    make_pretrain_corpus,
    index_dataset,
    eval_cam,
    tag_patches,
    eval_seco,
    export_masks,
    eval_masks,
    eval_rw_masks,
    export_mask_pngs,
    eval_deeplab,
    summarize,
    report_qualitative,
    report_front,


rule all:
    default_target: True
    input:
        final_outputs(),
