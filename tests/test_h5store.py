"""HDF5 artifact store: schema, compression dtypes, upsample-on-read, atomicity, shards."""

from __future__ import annotations

import json
import multiprocessing as mp
import pickle

import h5py
import numpy as np
import pytest

from pipeline.errors import PipelineError
from pipeline.io.h5store import (
    SCHEMA_VERSION,
    ArtifactReader,
    ArtifactWriter,
    config_hash,
    fit_scores,
    merge_shards,
    round_mantissa,
    upsample_scores,
)

NAMES = ["background", "a", "b", "c"]


def _write(path, ids=("x", "y"), cfg=None):
    rng = np.random.default_rng(0)
    with ArtifactWriter(path, "scores", NAMES, cfg or {"k": 1}) as w:
        for image_id in ids:
            w.write_scores(image_id, rng.random((2, 5, 7)), classes=[1, 3], orig_size=(18, 27), stride=4)
    return rng


def test_scores_roundtrip_and_provenance(tmp_path):
    path = tmp_path / "cams.h5"
    _write(path)
    r = ArtifactReader(path, expect="scores")
    assert r.ids() == ["x", "y"] and r.class_names == NAMES
    attrs = r.root_attrs
    assert attrs["schema_version"] == SCHEMA_VERSION and attrs["artifact"] == "scores"
    assert attrs["config_hash"] == config_hash({"k": 1}) and attrs["code_version"]
    with h5py.File(path) as f:
        assert f["x"].dtype == np.float16 and f["x"].compression == "gzip" and f["x"].chunks == (1, 5, 7)
    full, classes = r.scores("x")
    assert full.shape == (2, 18, 27) and full.dtype == np.float32 and list(classes) == [1, 3]
    small, _ = r.scores("x", full_res=False)
    assert small.shape == (2, 5, 7)
    # Upsampling a constant map keeps it constant; values stay within the stored range.
    assert full.min() >= small.min() - 1e-3 and full.max() <= small.max() + 1e-3
    with pytest.raises(PipelineError, match="no entry for image id 'zzz'"):
        r.scores("zzz")


def test_masks_are_uint8(tmp_path):
    path = tmp_path / "m.h5"
    with ArtifactWriter(path, "mask", NAMES, {}) as w:
        w.write_mask("x", np.full((4, 5), 255, np.uint8))
    r = ArtifactReader(path, expect="mask")
    assert r.mask("x").dtype == np.uint8 and (r.mask("x") == 255).all()
    with pytest.raises(PipelineError, match="expected 'scores'"):
        ArtifactReader(path, expect="scores").ids()


def test_failed_writer_leaves_nothing(tmp_path):
    path = tmp_path / "cams.h5"
    with pytest.raises(RuntimeError):
        with ArtifactWriter(path, "scores", NAMES, {}) as w:
            w.write_scores("x", np.zeros((1, 2, 2)), [1], (2, 2))
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_duplicate_and_bad_ids(tmp_path):
    with pytest.raises(PipelineError, match="duplicate image id"):
        with ArtifactWriter(tmp_path / "a.h5", "mask", NAMES, {}) as w:
            w.write_mask("x", np.zeros((2, 2)))
            w.write_mask("x", np.zeros((2, 2)))
    with pytest.raises(PipelineError, match="cannot be an HDF5 dataset name"):
        with ArtifactWriter(tmp_path / "b.h5", "mask", NAMES, {}) as w:
            w.write_mask("a/b", np.zeros((2, 2)))
    assert not (tmp_path / "a.h5").exists() and not (tmp_path / "b.h5").exists()


def test_merge_shards(tmp_path):
    _write(tmp_path / "s0.h5", ids=("a", "b"))
    _write(tmp_path / "s1.h5", ids=("c",))
    merge_shards([tmp_path / "s0.h5", tmp_path / "s1.h5"], tmp_path / "all.h5")
    r = ArtifactReader(tmp_path / "all.h5")
    assert r.ids() == ["a", "b", "c"] and r.root_attrs["shards"] == 2
    assert np.array_equal(r.raw("c"), ArtifactReader(tmp_path / "s1.h5").raw("c"))
    _write(tmp_path / "s2.h5", ids=("c",))
    with pytest.raises(PipelineError, match="appears in two shards"):
        merge_shards([tmp_path / "s1.h5", tmp_path / "s2.h5"], tmp_path / "bad.h5")
    assert not (tmp_path / "bad.h5").exists()


def _read_in_child(reader, q):
    q.put(float(reader.raw("x").sum()))


def test_reader_reopens_per_process(tmp_path):
    path = tmp_path / "cams.h5"
    _write(path)
    r = ArtifactReader(path)
    parent = float(r.raw("x").sum())  # opened in the parent first
    clone = pickle.loads(pickle.dumps(r))
    assert clone._file is None
    q = mp.get_context("fork").Queue()
    p = mp.get_context("fork").Process(target=_read_in_child, args=(r, q))
    p.start()
    p.join(20)
    assert q.get(timeout=5) == parent


def test_schema_version_mismatch(tmp_path):
    path = tmp_path / "old.h5"
    with h5py.File(path, "w") as f:
        f.attrs["schema_version"] = 0
        f.attrs["class_names"] = json.dumps(NAMES)
    with pytest.raises(PipelineError, match="schema version 0"):
        ArtifactReader(path).ids()


def test_round_mantissa():
    x = np.array([1.0 + 2**-10, 1.03, 1.04, -1.04, 1000.0, np.inf], np.float32)
    out = round_mantissa(x, 4)  # 4 mantissa bits: steps of 1/16 in [1, 2)
    assert out.dtype == np.float16
    assert out[:4].tolist() == [1.0, 1.0, 1.0625, -1.0625]
    assert out[4] == 992.0 and np.isinf(out[5])  # 1000 = 2^9 * 1.95..: nearest 2^9 * (1 + 15/16)
    assert np.array_equal(round_mantissa(x, 10), x.astype(np.float16))


def test_fit_scores_inverts_the_readers_upsampling():
    import torch

    rng = np.random.default_rng(0)
    cells = rng.normal(size=(3, 5, 4)).astype(np.float32)
    full = upsample_scores(cells, 4, (19, 14))  # 5 x 4 cells cover 20 x 16
    fitted = fit_scores(full, 4)
    assert fitted.shape == (3, 5, 4) and fitted.dtype == np.float32
    assert np.allclose(upsample_scores(fitted, 4, (19, 14)), full, atol=1e-4)
    # the torch path (GPU stages fit on their device) gives the same cells as the NumPy one
    as_tensor = fit_scores(torch.from_numpy(full).double(), 4)
    assert isinstance(as_tensor, torch.Tensor) and as_tensor.dtype == torch.float32
    assert np.allclose(as_tensor.numpy(), fitted, atol=1e-5)
    # and for a map that is not an upsampling, it beats plain area averages in squared error
    rough = rng.normal(size=(3, 19, 14)).astype(np.float32)
    err = ((upsample_scores(fit_scores(rough, 4), 4, (19, 14)) - rough) ** 2).sum()
    padded = np.pad(rough, ((0, 0), (0, 1), (0, 2)), mode="edge")
    area = padded.reshape(3, 5, 4, 4, 4).mean((2, 4))
    assert err < ((upsample_scores(area, 4, (19, 14)) - rough) ** 2).sum()
    assert fit_scores(rough, 1) is rough
