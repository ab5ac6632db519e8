"""The synthetic generator: determinism and the co-occurrence it was asked for."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.data import open_dataset
from pipeline.data.shapes import CONTEXT_OF_CLASS, PARTNER_OF_CLASS
from pipeline.data.synthetic import CLASS_NAMES, CONTEXT_TO_CLASS, SyntheticSpec, generate, render
from pipeline.errors import PipelineError


@pytest.fixture(scope="module")
def default_stats(tmp_path_factory):
    """The default-size training split (as config.yaml generates it)."""
    root = tmp_path_factory.mktemp("syn_default")
    spec = SyntheticSpec(num_val=0, num_decoupled=40)
    stats = generate(spec, root)
    return spec, root, stats


def test_render_is_deterministic_and_order_independent():
    spec = SyntheticSpec(seed=3)
    a = render(spec, "train", 57)
    render(spec, "train", 12)  # other images in between must not change image 57
    b = render(spec, "train", 57)
    for x, y in zip(a[:3], b[:3], strict=True):
        assert np.array_equal(x, y)
    c = render(SyntheticSpec(seed=4), "train", 57)
    assert not np.array_equal(a[0], c[0]) if a[0].shape == c[0].shape else True


def test_statistics_file_shows_requested_cooccurrence(default_stats):
    spec, root, stats = default_stats
    on_disk = json.loads((root / "cooccurrence.json").read_text())
    assert on_disk == json.loads(json.dumps(stats))
    train = stats["splits"]["train"]
    # (a) object-context: each context class sits on its context in most of its images.
    for cls in CONTEXT_OF_CLASS:
        assert train["p_context_given_class"][cls] == pytest.approx(spec.p_context, abs=0.15)
        assert train["p_context_given_class"][cls] > 0.6
    # (b) object-object: partners appear with the primary in most of its images.
    for a, b in PARTNER_OF_CLASS.items():
        assert train["p_partner_given_class"][f"{a}+{b}"] > 0.55
    # (c) single-label images exist for every class, a minority for the co-occurring ones.
    for cls in CLASS_NAMES[1:]:
        assert train["single_label_counts"][cls] >= spec.min_single_label
    for cls in list(CONTEXT_OF_CLASS) + list(PARTNER_OF_CLASS):
        assert train["single_label_fraction"][cls] < 0.5
    # The class x context matrix agrees with the per-class rates.
    cx = np.array(train["class_context"])
    assert cx.shape == (len(CLASS_NAMES) - 1, 3)
    assert cx.sum() > 0


def test_context_is_background_in_ground_truth(default_stats):
    _, root, _ = default_stats
    ds = open_dataset({"kind": "synthetic", "root": str(root)})
    seen, bg, total = 0, 0, 0
    for image_id in ds.ids("train")[:80]:
        ctx, gt = ds.context_map(image_id), ds.mask(image_id)
        if ctx.any():
            seen += 1
            # Context pixels carry background or an object standing on it, never a context label.
            assert set(np.unique(gt[ctx > 0])) <= set(range(len(CLASS_NAMES))) | {255}
            bg += int((gt[ctx > 0] == 0).sum())
            total += int((ctx > 0).sum())
    assert seen > 20
    assert bg / total > 0.5  # most context pixels are labelled background


def test_decoupled_split_has_contexts_without_their_objects(default_stats):
    _, root, stats = default_stats
    ds = open_dataset({"kind": "synthetic", "root": str(root)})
    ids = ds.ids("decoupled")
    assert len(ids) == 40
    for image_id in ids:
        ctx = ds.context_map(image_id)
        contexts = [int(x) for x in np.unique(ctx) if x]
        assert contexts, image_id
        present = set(np.flatnonzero(ds.labels(image_id)) + 1)
        for x in contexts:
            assert CONTEXT_TO_CLASS[x] not in present


def test_masks_have_void_boundaries_and_variation(default_stats):
    _, root, _ = default_stats
    ds = open_dataset({"kind": "synthetic", "root": str(root)})
    ids = ds.ids("train")[:30]
    assert all((ds.mask(i) == 255).any() for i in ids if ds.labels(i).any())
    sizes = {ds.image(i).shape[:2] for i in ids}
    assert len(sizes) > 5  # image sizes vary


def test_bad_spec_values_name_the_key():
    with pytest.raises(PipelineError, match=r"synthetic\.num_val"):
        SyntheticSpec.from_config({"num_val": -3})
    with pytest.raises(PipelineError, match=r"synthetic\.bogus"):
        SyntheticSpec.from_config({"bogus": 1})
