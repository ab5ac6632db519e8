# Shared helpers: config validation, the method lists and targets (derived once, here, from the
# config), per-rule config slices and code hashes, dataset inputs.
import os
import shlex
import sys
from pathlib import Path

from snakemake.utils import validate

# The workflow's own `pipeline` package (not an installed copy) defines the code hashes.
sys.path.insert(0, workflow.basedir)
from pipeline.config_checks import CAM_FAMILY, WALK_RECIPE, check_config
from pipeline.io.fingerprint import dataset_fingerprint
from pipeline.provenance import stage_code_hash
from pipeline.rules import RULES
from pipeline.rules import stage_cfg as _stage_cfg


validate(config, schema="../schemas/config.schema.yaml")
check_config(config)  # what the schema cannot express: cross-field order and references

# `<section>.pretrained: pretrain` -> the cached weight file of its backbone family, before any
# rule reads the config (pipeline/pretrain/cache.py; rules in pretrain.smk).
from pipeline.pretrain import cache as _pretrain_cache

PRETRAIN_JOBS = _pretrain_cache.resolve(
    config, workflow.basedir,
    stage_code_hash("pipeline.stages.make_pretrain_corpus", os.path.join(workflow.basedir, "pipeline")),
    stage_code_hash("pipeline.stages.pretrain", os.path.join(workflow.basedir, "pipeline")))


def pretrained_input(section):
    """The pretrain job's weight file a section's training loads (`pretrained: pretrain`), else nothing."""
    return [job["weights"] for job in PRETRAIN_JOBS.values() if section in job["sections"]]

# Config files given on the command line (`--configfile`), for the report's front page; shown
# relative to the workflow when they lie inside it.
PRESETS = [os.path.relpath(p, workflow.basedir) if os.path.abspath(p).startswith(workflow.basedir + os.sep) else str(p)
           for p in (workflow.overwrite_configfiles or [])]
ENV = "../../envs/wsss.yaml"
# Every rule body ends with `2>&1 | tee -a {log}.attempts > {log}`. The job's log gets both
# streams; `<log>.attempts` keeps every attempt's output appended (each opens with an
# "=== attempt" line), because Snakemake clears a job's log when it reruns the job, so a killed or
# retried attempt's log would otherwise be lost. The shell prefix (Snakefile) sets pipefail: the
# job fails when the stage fails, not with `tee`. (Written out in each rule: `--lint` flags a
# shell string built with `+`.)
SYNTHETIC = config["dataset"]["kind"] == "synthetic"
DATA_ROOT = config["dataset"]["root"]
INDEX = "results/dataset/index.json"

# ---- Methods and targets ------------------------------------------------------------------
# Every method with a mask recipe gets seeds -> masks -> CRF -> DeepLab; in config order.
METHODS = list(config["masks"]["methods"])
# Methods whose CAMs come from IRN's classifier through make_cam (SeCo exports its own).
CAM_METHODS = [m for m in METHODS if m in ("baseline", "csd")]
# Methods whose maps come from MCTformer-V2 through make_cam_mctformer (mctformer_csd: CSD on it).
MCT_METHODS = [m for m in METHODS if m in ("mctformer", "mctformer_csd")]
# Methods with random-walk masks (irn.smk) and each one's recipe, by its CAM model's family
# (pipeline/config_checks.py): IRN's walk for the CAM methods, PSA's (irn.psa) for MCTformer's.
RW_METHODS = [m for m in METHODS if m in CAM_FAMILY]
RW_RECIPE = {m: WALK_RECIPE[CAM_FAMILY[m]] for m in RW_METHODS}
# The fully supervised ceiling: the same DeepLab trained on the GT masks of the same images.
GT_METHOD = "gt"
DEEPLAB_METHODS = METHODS + [GT_METHOD]
SEED_SOURCES = {"cam": "results/cam/{method}/cams.h5", "seg_logits": "results/{method}/seg_logits.h5"}
SEED_SOURCE = {m: SEED_SOURCES[config["masks"]["methods"][m]["source"]].format(method=m) for m in METHODS}


# Training runs whose loss curves the report's front page draws: name -> (model, metrics CSV).
# The CSV lives in the run folder (outside the DAG, so a killed job resumes); the model file
# is the input that orders the report after the training.
TRAINING_RUNS = {}
if CAM_METHODS:
    TRAINING_RUNS["CAM classifier"] = ("results/cam/baseline/model_final.pth", "results/runs/train_cam/baseline/metrics.csv")
if "csd" in METHODS:
    TRAINING_RUNS["CSD"] = ("results/cam/csd/model_final.pth", "results/runs/train_csd/csd/metrics.csv")
if "mctformer" in METHODS:
    TRAINING_RUNS["MCTformer"] = ("results/cam/mctformer/model_final.pth", "results/runs/train_mctformer/mctformer/metrics.csv")
if "mctformer_csd" in METHODS:
    TRAINING_RUNS["MCTformer CSD"] = ("results/cam/mctformer_csd/model_final.pth",
                                      "results/runs/train_mctformer_csd/mctformer_csd/metrics.csv")
if "seco" in METHODS:
    TRAINING_RUNS["SeCo"] = ("results/seco/model_final.pth", "results/runs/train_seco/seco/metrics.csv")
for _m in RW_METHODS:
    TRAINING_RUNS[f"IRNet on {_m}"] = (f"results/irn/{_m}/model_final.pth", f"results/runs/train_irn/{_m}/metrics.csv")
for _m in DEEPLAB_METHODS:
    TRAINING_RUNS[f"DeepLab on {_m}"] = (f"results/deeplab/{_m}/model_final.pth", f"results/runs/train_deeplab/{_m}/metrics.csv")


def final_outputs():
    """The targets of `rule all` (snakemake-workflows' get_final_output)."""
    out = [INDEX, "results/tags/baseline/tag_accuracy.json"]
    out += expand("results/cam/{method}/eval_cam.json", method=METHODS)
    if "seco" in METHODS:
        out.append("results/seco/eval_seg.json")
    if config["masks"]["png"]:
        out += expand("results/masks/{method}/crf_png", method=METHODS)
    out += ["results/summary.tsv", "results/report/summary.html", "results/report/front.html"]
    out += expand("results/report/qualitative/{method}.png", method=DEEPLAB_METHODS)
    return out


wildcard_constraints:
    method="[a-z0-9_]+",


# ---- Resources ----------------------------------------------------------------------------
# Locally only `gpu` is counted (`--resources gpu=4`); on SLURM the plugin turns these into
# --gpus, --mem, --time and --cpus-per-task. They follow the preset: a GPU job asks for one CPU
# per data-loader worker plus its own, and its time limit grows with its iterations. Override
# with `--set-resources NAME:runtime=...` or in a profile.
# Seconds per iteration on one data-center GPU at the papers' settings (estimates with margin
# below; measured figures: docs/BENCHMARKS.md, GPU section).
SECONDS_PER_ITER = {"cam": 0.3, "csd": 0.7, "seco": 0.4, "deeplab": 0.6, "irn": 0.5, "mctformer": 0.3, "mctformer_csd": 0.7}


def _train_images():
    """Training images, for IRN's epoch-based schedules (a cheap line count of the split list)."""
    if SYNTHETIC:
        return config["synthetic"]["num_train"]
    split = config["dataset"]["splits"]["train"]
    for folder in (config["dataset"].get("split_dir"), os.path.join(DATA_ROOT, "ImageSets", "Segmentation")):
        path = os.path.join(folder or "", f"{split}.txt")
        if folder and os.path.isfile(path):
            with open(path) as fh:
                return sum(1 for line in fh if line.strip())
    return 10582  # VOC's train_aug, when the list is not there yet


def _iterations(section):
    if section in ("cam", "csd"):
        cam = config["cam"]
        return cam["epochs"] * max(1, _train_images() // cam["batch_size"])
    if section == "irn":
        irn = config["irn"]
        return irn["epochs"] * max(1, _train_images() // irn["batch_size"])
    if section in ("mctformer", "mctformer_csd"):
        mct = config["mctformer"]
        return mct["epochs"] * max(1, _train_images() // mct["batch_size"])
    if section == "deeplab":
        return config["deeplab"]["iterations"] * config["deeplab"]["iter_size"]
    return config[section]["iterations"]


def gpu_resources(section, train=True):
    """`gpu`, `mem_mb`, `runtime` (minutes) and `cpus_per_task` of a GPU job reading `section`."""
    workers = config[{"csd": "cam", "mctformer_csd": "mctformer"}.get(section, section)].get("num_workers", 0)
    minutes = 2 * _iterations(section) * SECONDS_PER_ITER[section] / 60 if train else 210
    return dict(gpu=1, mem_mb=12000, runtime=int(max(60, minutes + 30)),
                cpus_per_task=lambda wildcards, threads: max(threads, workers + 1))


def _cpus(wildcards, threads):
    return threads


RES_CPU = dict(mem_mb=4000, runtime=60, cpus_per_task=_cpus)


# ---- Per-rule params ----------------------------------------------------------------------
def stage_cfg(rule):
    """The config sections the rule's stage reads (pipeline/rules.py), as JSON: passed via
    params, so only they trigger reruns."""
    # The pretrain rule runs one job per backbone family, each with its own spec.
    return _pretrain_stage_cfg if rule == "pretrain" else _stage_cfg(config, rule)


def _pretrain_stage_cfg(wildcards):
    return _pretrain_cache.stage_cfg(config, PRETRAIN_JOBS[f"{wildcards.family}-{wildcards.key}"])


def stage_code(rule):
    """Hash of the rule's stage module and the `pipeline` modules it imports: as a param, an
    edit to any of them reruns the stage (and, through mtimes, everything downstream)."""
    return stage_code_hash(f"pipeline.stages.{RULES[rule].stage}", str(Path(workflow.basedir) / "pipeline"))


def dataset_input(wildcards=None):
    """The generated dataset for the synthetic kind; user data is not a DAG product."""
    return [DATA_ROOT] if SYNTHETIC else []
