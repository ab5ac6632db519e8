# Shared helpers: config validation, per-stage config slices, dataset inputs.
import json

from snakemake.utils import validate


validate(config, schema="../schemas/config.schema.yaml")

ENV = "../../envs/wsss.yaml"
SYNTHETIC = config["dataset"]["kind"] == "synthetic"
DATA_ROOT = config["dataset"]["root"]


def stage_cfg(*sections):
    """The config sections a stage reads, as JSON: passed via params so only they trigger reruns."""
    return json.dumps({s: config.get(s) for s in sections}, sort_keys=True)


def dataset_input(wildcards=None):
    """The generated dataset for the synthetic kind; user data is not a DAG product."""
    return [DATA_ROOT] if SYNTHETIC else []


# Methods whose CAMs come from an IRN-style classifier (make_cam); SeCo writes its own.
CAM_METHODS = ["baseline"]
# Every method with CAM seeds evaluated by eval_cam (rule files append theirs).
SEED_METHODS = ["baseline"]
# Each rule file appends the targets it contributes to `rule all`.
FINAL_OUTPUTS = ["results/dataset/index.json"]


wildcard_constraints:
    method="[a-z0-9_]+",


def final_outputs():
    return FINAL_OUTPUTS
