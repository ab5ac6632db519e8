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
