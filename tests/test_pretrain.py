"""The pretraining corpus (ImageNet stand-in), the pretrain stage's weight file, its cache key and its DAG."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import subprocess
import time

import numpy as np
import pytest
import torch
import yaml

from pipeline.data import pretrain_corpus as pc
from pipeline.data import synthetic
from pipeline.data.shapes import CLASS_STYLES, CONTEXT_NAMES
from pipeline.errors import PipelineError
from pipeline.pretrain import cache
from tests.conftest import REPO, TINY_SPEC, preset_config, tool_env

DEFAULTS = yaml.safe_load((REPO / "config.yaml").read_text())
TINY_CORPUS = {"num_new_classes": 4, "train_per_class": 5, "val_per_class": 2, "min_size": 36, "max_size": 40}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    spec = pc.CorpusSpec.from_config({**DEFAULTS["pretrain"]["corpus"], **TINY_CORPUS})
    root = tmp_path_factory.mktemp("corpus") / "corpus"
    return spec, root, pc.generate(spec, root)


def test_default_corpus_is_mostly_new_classes_with_the_wsss_context_rates():
    spec = pc.CorpusSpec.from_config(DEFAULTS["pretrain"]["corpus"])
    classes = pc.corpus_classes(spec)
    assert len(classes) == spec.num_classes == 40
    assert sum(c.source == "new" for c in classes) > len(classes) / 2
    assert {c.name for c in classes if c.source == "wsss"} == {s.name for s in CLASS_STYLES}
    assert len({c.name for c in classes}) == len(classes)
    # Contexts are shared: each of water/rail/grass is the usual context of its WSSS class and of new ones.
    for ctx in range(1, len(CONTEXT_NAMES) + 1):
        assert sum(c.context == ctx for c in classes) >= 2
    assert spec.p_context == DEFAULTS["synthetic"]["p_context"]
    assert spec.p_stray_context == DEFAULTS["synthetic"]["p_stray_context"]


def test_corpus_layout_is_single_label_and_declares_its_classes(corpus):
    spec, root, manifest = corpus
    assert manifest["num_classes"] == spec.num_classes == len(manifest["classes"]) == 14
    names = [c["name"] for c in manifest["classes"]]
    for split, per_class in (("train", spec.train_per_class), ("val", spec.val_per_class)):
        items = pc.read_split(root, split)
        assert len(items) == per_class * spec.num_classes == manifest["splits"][split]["num_images"]
        for path, label in items:  # one label per image, and its folder is its class
            assert path.is_file() and path.parent.name == names[label]
        assert sorted(p.name for p in (root / split).rglob("*.jpg")) == sorted(p.name for p, _ in items)
        assert np.bincount([label for _, label in items]).tolist() == [per_class] * spec.num_classes
    train_files = {p.name for p, _ in pc.read_split(root, "train")}
    assert not train_files & {p.name for p, _ in pc.read_split(root, "val")}


def test_declared_context_rates_are_measured_from_the_images(corpus):
    spec, root, manifest = corpus
    classes = pc.corpus_classes(spec)
    for split in ("train", "val"):
        n = manifest["splits"][split]["num_images"]
        items = [pc.render(spec, classes, split, i)[1:] for i in range(n)]
        assert manifest["splits"][split]["context_rates"] == pc.context_rates(classes, items)
    # With enough images the usual context shows at the WSSS generator's rate.
    big = pc.CorpusSpec(**{**TINY_CORPUS, "train_per_class": 30, "min_size": 32, "max_size": 32,
                           "noise_std": (0.0, 0.0), "p_blur": 0.0})
    classes = pc.corpus_classes(big)
    items = [pc.render(big, classes, "train", i)[1:] for i in range(30 * big.num_classes)]
    rates = pc.context_rates(classes, items)
    assert abs(rates["p_context_pooled"] - big.p_context) < 0.12, rates
    assert rates["p_stray_context"] < 0.2


def test_corpus_is_disjoint_from_the_wsss_images():
    assert not set(pc.CORPUS_SPLIT_CODES.values()) & set(synthetic.SPLIT_CODES.values())
    wsss = synthetic.SyntheticSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in TINY_SPEC.items()})
    # Same seed, same image sizes: the RNG streams still differ, so no image repeats.
    spec = pc.CorpusSpec(seed=wsss.seed, min_size=wsss.min_size, max_size=wsss.max_size, num_new_classes=4)
    classes = pc.corpus_classes(spec)
    digest = lambda a: hashlib.md5(a.tobytes()).hexdigest()  # noqa: E731
    ours = {digest(pc.render(spec, classes, s, i)[0]) for s in pc.CORPUS_SPLIT_CODES for i in range(20)}
    theirs = {digest(synthetic.render(wsss, s, i)[0]) for s, n in
              (("train", wsss.num_train), ("val", wsss.num_val), ("decoupled", wsss.num_decoupled)) for i in range(n)}
    assert not ours & theirs


def test_corpus_spec_names_bad_keys():
    with pytest.raises(PipelineError, match="pretrain.corpus.colour"):
        pc.CorpusSpec.from_config({"colour": 1})
    with pytest.raises(PipelineError, match="pretrain.corpus.min_size"):
        pc.CorpusSpec.from_config({"min_size": 70, "max_size": 64})


# ---- cache key -------------------------------------------------------------------------------
def _config(**sections):
    cfg = copy.deepcopy(DEFAULTS)
    for section in ("cam", "deeplab", "seco"):
        cfg[section]["pretrained"] = cache.PRETRAIN
    for dotted, value in sections.items():
        *parents, leaf = dotted.split("__")
        node = cfg
        for key in parents:
            node = node[key]
        node[leaf] = value
    return cfg


def _paths(cfg, basedir="/repo"):
    jobs = cache.resolve(cfg, basedir, "corpus-code", "pretrain-code")
    return jobs, {s: cfg[s]["pretrained"] for s in ("cam", "deeplab", "seco")}


def test_cache_key_equal_config_same_path_changed_config_new_path():
    jobs, paths = _paths(_config())
    assert len(jobs) == 2  # one ResNet pretraining serves the CAM classifier and DeepLab
    assert paths["cam"] == paths["deeplab"] != paths["seco"]
    assert paths["cam"].startswith("/repo/results/pretrain_cache/resnet18-")
    assert paths["cam"].endswith("/model.safetensors")
    assert _paths(_config())[1] == paths
    # Not part of the pretraining: the WSSS seed, the checkpoint interval, the methods' own keys.
    assert _paths(_config(seed=3, pretrain__ckpt_every=7, cam__lr=0.5, seco__iterations=5))[1] == paths
    for change in ({"pretrain__seed": 1}, {"pretrain__crop_size": 56}, {"pretrain__batch_size": 32}):
        new = _paths(_config(**change))[1]
        assert new["cam"] != paths["cam"] and new["seco"] != paths["seco"], change
    cfg = _config()
    cfg["pretrain"]["corpus"]["num_new_classes"] = 31
    assert _paths(cfg)[1]["cam"] != paths["cam"]
    cfg = _config()
    cfg["pretrain"]["recipes"]["vit"]["lr"] = 5e-4  # only the ViT family's recipe
    new = _paths(cfg)[1]
    assert new["cam"] == paths["cam"] and new["seco"] != paths["seco"]
    new = _paths(_config(deeplab__backbone="resnet34"))[1]
    assert new["deeplab"] != new["cam"] == paths["cam"] and "/resnet34-" in new["deeplab"]
    cfg = _config()
    cfg["seco"]["backbone_kwargs"]["depth"] = 3
    assert _paths(cfg)[1]["seco"] != paths["seco"]
    # Code is part of the key; the cache folder may be moved.
    cfg = _config()
    assert cache.resolve(cfg, "/repo", "corpus-code", "other") != jobs
    assert _paths(_config(pretrain__cache_dir="/scratch/pc"))[1]["cam"].startswith("/scratch/pc/resnet18-")


def test_mctformer_shares_seco_vit_and_irn_pretrains_only_its_own_backbone():
    cfg = _config(mctformer__pretrained=cache.PRETRAIN, irn__pretrained=cache.PRETRAIN)
    cfg["mctformer"]["backbone_kwargs"] = dict(cfg["seco"]["backbone_kwargs"])
    jobs = cache.resolve(cfg, "/repo", "corpus-code", "pretrain-code")
    # the same ViT and kwargs: one pretraining serves SeCo and MCTformer (and mctformer_csd)
    assert cfg["mctformer"]["pretrained"] == cfg["seco"]["pretrained"]
    # irn builds on the trained CAM classifier by default: nothing to pretrain, the value is unread
    assert cfg["irn"]["pretrained"] == cache.PRETRAIN and len(jobs) == 2
    cfg = _config(irn__pretrained=cache.PRETRAIN, irn__backbone_from="pretrained")
    jobs = cache.resolve(cfg, "/repo", "corpus-code", "pretrain-code")
    assert "/resnet50-" in cfg["irn"]["pretrained"] and len(jobs) == 3  # IRN's own frozen ResNet-50
    cfg = _config(irn__pretrained=cache.PRETRAIN, irn__backbone_from="pretrained", irn__backbone="resnet18")
    cache.resolve(cfg, "/repo", "corpus-code", "pretrain-code")
    assert cfg["irn"]["pretrained"] == cfg["cam"]["pretrained"]


def test_only_the_sections_with_pretrain_rules_may_ask_for_it():
    from pipeline.config_checks import check_config

    cfg = _config()
    cfg["report"]["pretrained"] = cache.PRETRAIN
    with pytest.raises(PipelineError, match="report.pretrained"):
        check_config(cfg)
    cfg = copy.deepcopy(DEFAULTS)
    assert cache.resolve(cfg, "/repo") == {} and cfg == DEFAULTS


# ---- the stage's weight file -----------------------------------------------------------------
def _tiny_job(section_cfg: dict, corpus_root, tmp_path):
    cfg = {"runtime": {"device": "cpu", "amp": "off"}, "pretrain": {
        **DEFAULTS["pretrain"], "crop_size": 32, "batch_size": 8, "ckpt_every": 2,
        "recipes": {k: {**v, "epochs": 1, "warmup_epochs": 1} for k, v in DEFAULTS["pretrain"]["recipes"].items()}},
        "section": {**section_cfg, "pretrained": cache.PRETRAIN}}
    spec = cache.job_spec(cfg, "section", corpus_root.name)
    job = {"spec": spec}
    out = tmp_path / f"{spec['backbone']}-test"
    return cache.stage_cfg(cfg, job), out


@pytest.mark.parametrize("section", ["cam", "seco"])
def test_pretrain_stage_writes_weights_that_timm_loads(corpus, tmp_path, section):
    from safetensors.torch import load_file

    from pipeline._compat import import_timm
    from pipeline.stages import pretrain

    _, root, manifest = corpus
    cfg, out = _tiny_job(DEFAULTS[section], root, tmp_path)
    weights, eval_json = out / "model.safetensors", out / "eval.json"

    def run(folder):
        pretrain.main(["--cfg", cfg, "--corpus", str(root), "--eval", str(folder / "eval.json"),
                       "--out", str(folder / "model.safetensors"), "--ckpt-dir", str(folder / "run"),
                       "--metrics", str(folder / "run/metrics.csv"), "--threads", "1"])

    run(out)
    result = json.loads(eval_json.read_text())
    assert result["num_classes"] == manifest["num_classes"] and result["num_images"] == 2 * manifest["num_classes"]
    assert 0 <= result["top1"] <= result["top5"] <= 1
    assert (out / "run/metrics.csv").read_text().startswith("iteration,loss,acc,lr,seconds")
    state = load_file(str(weights))
    timm = import_timm()
    kwargs = dict(DEFAULTS[section].get("backbone_kwargs") or {})
    model = timm.create_model(DEFAULTS[section]["backbone"], pretrained=True, num_classes=manifest["num_classes"],
                              pretrained_cfg_overlay=dict(file=str(weights), num_classes=manifest["num_classes"]),
                              **kwargs)
    loaded = model.state_dict()
    assert set(loaded) == set(state)
    resampled = {"pos_embed"} if section == "seco" else set()  # the ViT's crop differs from its img_size
    for key, value in state.items():
        if key not in resampled:
            assert torch.equal(loaded[key], value), key
    # The project's own loader, as the stages use it: `pretrained: <file>`, classifier dropped.
    if section == "cam":
        from pipeline.irn.model import CAMNet

        net = CAMNet(10, "resnet18", str(weights), frozen_bn=True, detach_stage=2, output_stride=16)
        assert torch.equal(net.backbone.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])
        assert torch.equal(net.backbone.bn1.running_mean, state["bn1.running_mean"])
    else:
        from pipeline.backbones import create_backbone

        vit = create_backbone(DEFAULTS["seco"]["backbone"], str(weights), num_classes=0, **kwargs)
        assert torch.equal(vit.blocks[-1].mlp.fc2.weight, state["blocks.3.mlp.fc2.weight"])
        return
    # The training skeleton's resume: a run killed after its second-last checkpoint ends with the same weights.
    resumed = tmp_path / "resumed"
    (resumed / "run").mkdir(parents=True)
    shutil.copy(out / "run/prev.pth", resumed / "run/last.pth")
    run(resumed)
    again = load_file(str(resumed / "model.safetensors"))
    assert all(torch.equal(state[k], again[k]) for k in state)


# ---- the DAG ---------------------------------------------------------------------------------
def _dry_run(workdir, *configfiles):
    p = subprocess.run(["snakemake", "-n", "--directory", str(workdir), "--configfile", *map(str, configfiles)],
                       capture_output=True, text=True, cwd=REPO, env=tool_env())
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    counts = {}
    for line in p.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    return counts


def test_dag_pretrains_under_the_preset_only_and_once_per_cache(tmp_path):
    cache_cfg = tmp_path / "cache.yaml"
    cache_cfg.write_text(yaml.safe_dump({"pretrain": {"cache_dir": str(tmp_path / "cache")}}))
    default = _dry_run(tmp_path / "a", REPO / "config.yaml", cache_cfg)
    assert "pretrain" not in default and "make_pretrain_corpus" not in default
    counts = _dry_run(tmp_path / "a", REPO / "configs/pretrained.yaml", cache_cfg)
    assert counts["pretrain"] == 2 and counts["make_pretrain_corpus"] == 1  # ResNet (CAM + DeepLab) and ViT
    # Another run directory (another WSSS seed) finds the cached files and reruns nothing of them.
    cfg = preset_config(REPO / "configs/pretrained.yaml")
    cfg["pretrain"]["cache_dir"] = str(tmp_path / "cache")
    jobs = cache.resolve(cfg, REPO, *(_code(m) for m in ("make_pretrain_corpus", "pretrain")))
    corpus = next(iter(jobs.values()))["corpus"]
    os.makedirs(corpus)
    time.sleep(0.01)
    for job in jobs.values():
        os.makedirs(os.path.dirname(job["weights"]))
        for name in (cache.WEIGHTS, cache.EVAL):
            open(os.path.join(os.path.dirname(job["weights"]), name), "w").close()
    seed = tmp_path / "seed.yaml"
    seed.write_text("seed: 1\n")
    counts = _dry_run(tmp_path / "b", REPO / "configs/pretrained.yaml", cache_cfg, seed)
    assert "pretrain" not in counts and "make_pretrain_corpus" not in counts and counts["train_cam"] == 1


def test_all_methods_in_the_pretrained_regime_start_mctformer_from_the_vit_pretraining(tmp_path):
    cache_cfg = tmp_path / "cache.yaml"
    cache_cfg.write_text(yaml.safe_dump({"pretrain": {"cache_dir": str(tmp_path / "cache")}}))
    p = subprocess.run(["snakemake", "-n", "-p", "--directory", str(tmp_path / "a"), "--configfile",
                        str(REPO / "configs/all_methods.yaml"), str(REPO / "configs/pretrained.yaml"), str(cache_cfg)],
                       capture_output=True, text=True, cwd=REPO, env=tool_env())
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    # train_seco, train_mctformer and train_mctformer_csd all read the one ViT weight file
    files = {}
    for rule in ("train_seco", "train_mctformer", "train_mctformer_csd"):
        inputs = p.stdout.split(f"rule {rule}:", 1)[1].split("input:", 1)[1].split("\n", 1)[0]
        files[rule] = [w.strip(",") for w in inputs.split() if w.strip(",").endswith(cache.WEIGHTS)]
    assert len({tuple(f) for f in files.values()}) == 1 and len(files["train_seco"]) == 1, files
    assert "/vit_tiny_patch16_224-" in files["train_seco"][0]


def _code(module):
    from pipeline.provenance import stage_code_hash

    return stage_code_hash(f"pipeline.stages.{module}", str(REPO / "pipeline"))
