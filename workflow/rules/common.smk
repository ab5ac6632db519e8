# Shared helpers: config validation, the method lists and targets (derived once, here, from the
# config), per-rule config slices and code hashes, dataset inputs.
import os
import sys
from pathlib import Path

from snakemake.utils import validate

# The workflow's own `pipeline` package (not an installed copy) defines the code hashes.
sys.path.insert(0, workflow.basedir)
from pipeline.config_checks import check_config
from pipeline.io.fingerprint import dataset_fingerprint
from pipeline.provenance import stage_code_hash
from pipeline.rules import RULES
from pipeline.rules import stage_cfg as _stage_cfg


validate(config, schema="../schemas/config.schema.yaml")
check_config(config)  # what the schema cannot express: cross-field order and references

ENV = "../../envs/wsss.yaml"
SYNTHETIC = config["dataset"]["kind"] == "synthetic"
DATA_ROOT = config["dataset"]["root"]
INDEX = "results/dataset/index.json"

# ---- Methods and targets ------------------------------------------------------------------
# Every method with a mask recipe gets seeds -> masks -> CRF -> DeepLab; in config order.
METHODS = list(config["masks"]["methods"])
# Methods whose CAMs come from IRN's classifier through make_cam (SeCo exports its own).
CAM_METHODS = [m for m in METHODS if m in ("baseline", "csd")]
# The fully supervised ceiling: the same DeepLab trained on the GT masks of the same images.
GT_METHOD = "gt"
DEEPLAB_METHODS = METHODS + [GT_METHOD]
SEED_SOURCES = {"cam": "results/cam/{method}/cams.h5", "seg_logits": "results/{method}/seg_logits.h5"}
SEED_SOURCE = {m: SEED_SOURCES[config["masks"]["methods"][m]["source"]].format(method=m) for m in METHODS}


def final_outputs():
    """The targets of `rule all` (snakemake-workflows' get_final_output)."""
    out = [INDEX, "results/tags/baseline/tag_accuracy.json"]
    out += expand("results/cam/{method}/eval_cam.json", method=METHODS)
    if "seco" in METHODS:
        out.append("results/seco/eval_seg.json")
    if config["masks"]["png"]:
        out += expand("results/masks/{method}/crf_png", method=METHODS)
    out += ["results/summary.tsv", "results/report/summary.html"]
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
SECONDS_PER_ITER = {"cam": 0.3, "csd": 0.7, "seco": 0.4, "deeplab": 0.6, "irn": 0.5}


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
    if section == "deeplab":
        return config["deeplab"]["iterations"] * config["deeplab"]["iter_size"]
    return config[section]["iterations"]


def gpu_resources(section, train=True):
    """`gpu`, `mem_mb`, `runtime` (minutes) and `cpus_per_task` of a GPU job reading `section`."""
    workers = config["cam" if section == "csd" else section].get("num_workers", 0)
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
    return _stage_cfg(config, rule)


def stage_code(rule):
    """Hash of the rule's stage module and the `pipeline` modules it imports: as a param, an
    edit to any of them reruns the stage (and, through mtimes, everything downstream)."""
    return stage_code_hash(f"pipeline.stages.{RULES[rule].stage}", str(Path(workflow.basedir) / "pipeline"))


def dataset_input(wildcards=None):
    """The generated dataset for the synthetic kind; user data is not a DAG product."""
    return [DATA_ROOT] if SYNTHETIC else []
