"""Where pretrained weights live, and which pretraining a config asks for: one job per distinct pretraining.

A section with a backbone (`cam`, `seco`, `deeplab`, `mctformer`, `irn`) asks for the pretrain stage's weights with
`pretrained: pretrain`. The workflow (common.smk) calls `resolve` once when the DAG is built: it
replaces that value by the weight file's absolute path, so every stage loads it through the same
`pretrained: <file>` path as real ImageNet weights (pipeline/backbones.py), and the methods get no
special case.

The path is a function of everything that determines the weights: the corpus parameters, the
backbone and its kwargs, the family's recipe, crop, batch, seed, precision and the code of the
corpus and pretrain stages (their code hashes). Equal pretraining config gives the same path in a
cache folder shared by all run directories (`pretrain.cache_dir`, default `results/pretrain_cache`
beside the Snakefile), so the benchmark's seeds x presets, each in its own `--directory`, pretrain
once: the second run directory finds the file and Snakemake does not rerun the job.

    <cache>/corpus-<key>/                      the corpus (make_pretrain_corpus)
    <cache>/<backbone>-<key>/model.safetensors the weights (pretrain), a plain timm state dict
    <cache>/<backbone>-<key>/eval.json         held-out accuracy on the corpus's val split
    <cache>/<backbone>-<key>/run/              checkpoints and metrics.csv (a killed job resumes)

Standard library only: the Snakefile imports this when the DAG is built.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from pipeline.errors import PipelineError

PRETRAIN = "pretrain"  # the `<section>.pretrained` value that asks for the pretrain stage's weights
# Sections whose training rules depend on the pretrain job. mctformer's weights also start
# mctformer_csd; irn's are read only with `irn.backbone_from: pretrained` (IRN's frozen ResNet).
SECTIONS = ("cam", "seco", "deeplab", "mctformer", "irn")
WEIGHTS = "model.safetensors"
EVAL = "eval.json"
RUN = "run"
KEY_CHARS = 12
_VIT_PREFIXES = ("vit", "deit")


def recipe_kind(backbone: str) -> str:
    """`vit` for timm's vision transformers, `cnn` for the rest (ResNets)."""
    return "vit" if backbone.split(".")[0].startswith(_VIT_PREFIXES) else "cnn"


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:KEY_CHARS]


def cache_dir(config: dict, basedir: str | os.PathLike) -> Path:
    """`pretrain.cache_dir` (relative to the workflow's folder), default `<basedir>/results/pretrain_cache`."""
    value = (config.get("pretrain") or {}).get("cache_dir")
    path = Path(value) if value else Path("results/pretrain_cache")
    return (Path(basedir) / path).resolve() if not path.is_absolute() else path


def corpus_key(pretrain: dict, code: str = "") -> str:
    return _digest({"corpus": pretrain["corpus"], "code": code})


def corpus_dir(config: dict, basedir: str | os.PathLike, code: str = "") -> Path:
    """<cache>/corpus-<key>: the corpus of this config's `pretrain.corpus`."""
    return cache_dir(config, basedir) / f"corpus-{corpus_key(config['pretrain'], code)}"


def job_spec(config: dict, section: str, corpus: str) -> dict:
    """What one pretraining depends on (besides code): the stage's `pretrain` config for it."""
    pre, sec = config["pretrain"], config[section]
    kind = recipe_kind(sec["backbone"])
    return {
        "backbone": sec["backbone"],
        "backbone_kwargs": dict(sec.get("backbone_kwargs") or {}),
        "kind": kind,
        "recipe": pre["recipes"][kind],
        "crop_size": pre["crop_size"],
        "batch_size": pre["batch_size"],
        "seed": pre["seed"],
        "amp": config["runtime"]["amp"],
        "corpus": corpus,
    }


def job_key(spec: dict, code: str = "") -> str:
    return _digest({"spec": spec, "code": code})


def stage_cfg(config: dict, job: dict) -> str:
    """The pretrain stage's `--cfg` for one job: its spec, where it runs, and the loop settings
    that do not change the weights (checkpoint interval, loader workers)."""
    spec = job["spec"]
    pre = config["pretrain"]
    return json.dumps({"seed": spec["seed"], "runtime": config["runtime"],
                       "pretrain": {**spec, "ckpt_every": pre["ckpt_every"], "num_workers": pre["num_workers"]}},
                      sort_keys=True)


def weight_path(cache: Path, backbone: str, key: str) -> Path:
    return cache / f"{backbone}-{key}" / WEIGHTS


def _reads_weights(config: dict, section: str) -> bool:
    """IRN builds on the CAM classifier unless `irn.backbone_from: pretrained`: then nothing to pretrain."""
    return section != "irn" or config["irn"].get("backbone_from") == "pretrained"


def resolve(config: dict, basedir: str | os.PathLike, corpus_code: str = "", pretrain_code: str = "") -> dict:
    """Replace every `<section>.pretrained: pretrain` by its weight file's path (in place) and
    return the jobs: {"<backbone>-<key>": {"spec", "sections", "weights", "corpus"}} ({} when
    nothing asks for pretraining). Sections with equal specs share one job."""
    wanted = [s for s in SECTIONS if (config.get(s) or {}).get("pretrained") == PRETRAIN and _reads_weights(config, s)]
    for section in config:
        if section not in SECTIONS and isinstance(config[section], dict) and config[section].get("pretrained") == PRETRAIN:
            raise PipelineError(f"config key {section}.pretrained: {PRETRAIN!r} is supported for "
                                f"{', '.join(SECTIONS)} (their rules depend on the pretrain job); give a file path")
    if not wanted:
        return {}
    cache = cache_dir(config, basedir)
    corpus = corpus_dir(config, basedir, corpus_code).name
    jobs: dict = {}
    for section in wanted:
        spec = job_spec(config, section, corpus)
        name = f"{spec['backbone']}-{job_key(spec, pretrain_code)}"
        job = jobs.setdefault(name, {"spec": spec, "sections": [], "weights": str(cache / name / WEIGHTS),
                                     "corpus": str(cache / corpus)})
        job["sections"].append(section)
        config[section]["pretrained"] = job["weights"]
    return jobs
