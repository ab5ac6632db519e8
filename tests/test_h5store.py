"""HDF5 artifact store: schema, compression dtypes, upsample-on-read, atomicity, shards."""

from __future__ import annotations

import json
import multiprocessing as mp
import pickle

import h5py
import numpy as np
import pytest

from pipeline.errors import PipelineError
from pipeline.io.h5store import SCHEMA_VERSION, ArtifactReader, ArtifactWriter, config_hash, merge_shards

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
