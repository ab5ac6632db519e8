"""export_masks / crf_stage / eval_masks on CAM scores (baseline, CSD) and on segmentation logits
(SeCo's contract, built here), and the recipe checks that name config keys."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.data import open_dataset
from pipeline.errors import PipelineError
from pipeline.io.h5store import ArtifactReader
from pipeline.irn.cams import dual_threshold_labels, scores_to_label
from pipeline.masks.pseudo import method_recipe, prediction_recipe, raw_mask
from pipeline.stages.crf import main as crf_main
from pipeline.stages.eval_masks import main as eval_main
from pipeline.stages.export_masks import main as export_main
from tests.masks_helpers import default_sections, tiny_cfg, write_fake_cams, write_fake_logits, write_index


@pytest.fixture(scope="module")
def setup(tiny_synthetic, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("masks")
    cfg = tiny_cfg(tiny_synthetic)
    cfg.update(default_sections("masks", "crf"))
    index = write_index(cfg, tmp / "index.json")
    ds = open_dataset(cfg["dataset"])
    ids = index["splits"]["train"]["ids"][:10]
    index["splits"]["train"]["ids"] = index["splits"]["eval"]["ids"] = ids
    (tmp / "index.json").write_text(json.dumps(index))
    write_fake_cams(tmp / "cams.h5", ds, ids, seed=1)
    # SeCo writes logits for train + eval + val
    write_fake_logits(tmp / "seg_logits.h5", ds, ids + index["splits"]["val"]["ids"][:3], seed=2)
    return cfg, tmp, ds, ids


def _run(cfg, tmp, method, source, tag):
    common = ["--cfg", json.dumps(cfg), "--index", str(tmp / "index.json"), "--method", method, "--source", str(source)]
    export_main([*common, "--out", str(tmp / f"{tag}_masks.h5")])
    crf_main([*common, "--target", "masks", "--out", str(tmp / f"{tag}_crf.h5")])
    eval_main(["--cfg", json.dumps(cfg), "--index", str(tmp / "index.json"), "--method", method,
               "--masks", str(tmp / f"{tag}_masks.h5"), "--crf", str(tmp / f"{tag}_crf.h5"),
               "--summary", str(tmp / f"{tag}.json"), "--classes-raw", str(tmp / f"{tag}_raw.tsv"),
               "--classes-crf", str(tmp / f"{tag}_crf.tsv")])
    return (ArtifactReader(tmp / f"{tag}_masks.h5", expect="mask"), ArtifactReader(tmp / f"{tag}_crf.h5", expect="mask"),
            json.loads((tmp / f"{tag}.json").read_text()))


def test_cam_methods_get_irn_dual_threshold_masks(setup):
    cfg, tmp, ds, ids = setup
    raw, crf, summary = _run(cfg, tmp, "baseline", tmp / "cams.h5", "cam")
    cams = ArtifactReader(tmp / "cams.h5")
    for image_id in ids:
        scores, classes = cams.scores(image_id)
        assert np.array_equal(raw.mask(image_id), dual_threshold_labels(scores, list(classes), 0.30, 0.05))
        assert raw.mask(image_id).dtype == np.uint8 and raw.mask(image_id).shape == ds.mask(image_id).shape
        present = set(int(c) for c in classes) | {0, 255}
        assert set(np.unique(crf.mask(image_id))) <= present
    assert raw.root_attrs["artifact"] == crf.root_attrs["artifact"] == "mask"
    assert summary["raw"]["uncertain_fraction"] > 0
    for key in ("miou", "miou_confident", "cooccurrence_confusion", "context_false_activation"):
        assert key in summary["raw"] and key in summary["crf"]
    # the fake CAMs are dilated GT regions: the colour-aware CRF must pull them back onto the objects
    assert summary["crf"]["miou"] > summary["raw"]["miou"]
    assert (tmp / "cam_crf.tsv").read_text().startswith("class\tiou")


def test_single_threshold_variant(setup):
    cfg, tmp, ds, ids = setup
    cfg = json.loads(json.dumps(cfg))
    cfg["masks"]["methods"]["baseline"] = {"source": "cam", "labels": "single", "threshold": 0.2, "crf": "irn_label"}
    recipe = method_recipe(cfg, "baseline")
    scores, classes = ArtifactReader(tmp / "cams.h5").scores(ids[0])
    mask = raw_mask(recipe, scores, classes)
    assert np.array_equal(mask, scores_to_label(scores, list(classes), 0.2)) and 255 not in mask


def test_seco_logits_masks_keep_only_labelled_classes(setup):
    cfg, tmp, ds, ids = setup
    raw, crf, summary = _run(cfg, tmp, "seco", tmp / "seg_logits.h5", "seco")
    assert sorted(raw.ids()) == sorted(crf.ids()) == sorted(ids)  # val ids of the logits file are skipped
    for image_id in ids:
        allowed = {0} | {int(i) + 1 for i in np.flatnonzero(ds.labels(image_id))}
        assert set(np.unique(raw.mask(image_id))) <= allowed
        assert set(np.unique(crf.mask(image_id))) <= allowed
    assert summary["raw"]["uncertain_fraction"] == 0 and summary["raw"]["miou"] > 0.3


def test_recipes_check_the_artifact_kind_and_config(setup, capsys):
    cfg, tmp, ds, ids = setup
    common = ["--cfg", json.dumps(cfg), "--index", str(tmp / "index.json")]
    with pytest.raises(SystemExit) as exc:
        export_main([*common, "--method", "seco", "--source", str(tmp / "cams.h5"), "--out", str(tmp / "x.h5")])
    assert exc.value.code == 2 and not (tmp / "x.h5").exists()
    assert "cams.h5: artifact kind 'scores', but masks.methods.seco.labels='argmax'" in capsys.readouterr().err
    bad = json.loads(json.dumps(cfg))
    with pytest.raises(PipelineError, match="masks.methods.nope: missing"):
        method_recipe(bad, "nope")
    bad["masks"]["methods"]["baseline"]["crf"] = "seco"
    with pytest.raises(PipelineError, match="masks.methods.baseline.crf"):
        method_recipe(bad, "baseline")
    bad["masks"]["methods"]["baseline"].update(labels="argmax")
    with pytest.raises(PipelineError, match="does not apply to source 'cam'"):
        method_recipe(bad, "baseline")
    assert prediction_recipe(cfg).crf.unary == "softmax" and not prediction_recipe(cfg).restrict_to_labels
