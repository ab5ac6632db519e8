# Shared helpers: config validation, per-stage config slices, dataset inputs.
import json
import sys
from pathlib import Path

from snakemake.utils import validate

# The workflow's own `pipeline` package (not an installed copy) defines the code hashes.
sys.path.insert(0, workflow.basedir)
from pipeline.provenance import stage_code_hash


validate(config, schema="../schemas/config.schema.yaml")

ENV = "../../envs/wsss.yaml"
SYNTHETIC = config["dataset"]["kind"] == "synthetic"
DATA_ROOT = config["dataset"]["root"]


def _cpus(wildcards, threads):
    return threads


# Resource requests per kind of job. Locally only `gpu` is counted (`--resources gpu=4`); on
# SLURM the plugin turns them into --gpus, --mem, --time and --cpus-per-task. Override them
# with `--set-resources NAME:mem_mb=...` or in a profile.
RES_TRAIN = dict(gpu=1, mem_mb=12000, runtime=720, cpus_per_task=_cpus)
RES_GPU = dict(gpu=1, mem_mb=12000, runtime=240, cpus_per_task=_cpus)
RES_CPU = dict(mem_mb=4000, runtime=60, cpus_per_task=_cpus)


def stage_cfg(*sections):
    """The config sections a stage reads, as JSON: passed via params so only they trigger reruns."""
    return json.dumps({s: config.get(s) for s in sections}, sort_keys=True)


def stage_code(module):
    """Hash of a stage's module and the `pipeline` modules it imports: as a param, an edit to
    any of them reruns the stage (and, through mtimes, everything downstream)."""
    return stage_code_hash(module, str(Path(workflow.basedir) / "pipeline"))


def dataset_input(wildcards=None):
    """The generated dataset for the synthetic kind; user data is not a DAG product."""
    return [DATA_ROOT] if SYNTHETIC else []


# Methods whose CAMs come from an IRN-style classifier through make_cam (SeCo writes its own).
CAM_METHODS = ["baseline", "csd"]
# Methods whose CAM seeds eval_cam evaluates; each method's rule file appends its name.
SEED_METHODS = ["baseline"]
# Targets of `rule all`; each rule file appends what it contributes.
FINAL_OUTPUTS = ["results/dataset/index.json"]


wildcard_constraints:
    method="[a-z0-9_]+",


def final_outputs():
    """Evaluated after every rule file is included, so late SEED_METHODS entries count."""
    return FINAL_OUTPUTS + expand("results/cam/{method}/eval_cam.json", method=SEED_METHODS)
