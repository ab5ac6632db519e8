# Shared helpers: config validation, the method lists and targets (derived once, here, from the
# config), per-rule config slices and code hashes, dataset inputs.
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
def _cpus(wildcards, threads):
    return threads


# Resource requests per kind of job. Locally only `gpu` is counted (`--resources gpu=4`); on
# SLURM the plugin turns them into --gpus, --mem, --time and --cpus-per-task. Override them
# with `--set-resources NAME:mem_mb=...` or in a profile.
RES_TRAIN = dict(gpu=1, mem_mb=12000, runtime=720, cpus_per_task=_cpus)
RES_GPU = dict(gpu=1, mem_mb=12000, runtime=240, cpus_per_task=_cpus)
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
