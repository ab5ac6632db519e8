"""HDF5 artifact store: one dataset per image id, provenance in root attributes.

Schemas of every artifact kind are documented in docs/ARTIFACTS.md. In short:
  /<image_id>          one dataset per image (no nested groups; ids must not contain '/')
    attrs: classes     int array of class ids (1-based) for score maps, [] otherwise
           orig_size   (H, W) of the source image
           stride      spatial stride of the stored array relative to the image
  root attrs: schema_version, artifact (kind), class_names, config_hash, code_version, created

Score maps are float16 with shuffle + gzip, chunked one class plane per chunk; masks are uint8
with gzip. A score cache at stride s > 1 holds the cells `fit_scores` fits to the full-resolution
maps, so that the reader's bilinear upsampling (`upsample_scores`) reproduces them. A writer writes to a temporary sibling and renames on close, so a killed job never
leaves a readable partial artifact; a job that fails raises and leaves nothing.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import h5py
import numpy as np

from pipeline.errors import PipelineError
from pipeline.io.atomic import atomic_path

SCHEMA_VERSION = 1
ARTIFACT_KINDS = ("scores", "mask", "tags", "logits")


def config_hash(cfg: object) -> str:
    """Stable short hash of a JSON-serialisable config."""
    blob = json.dumps(cfg, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def code_version() -> str:
    """Package version plus git commit (and '+dirty') when run from a checkout."""
    from pipeline import __version__

    root = Path(__file__).resolve().parents[2]
    try:
        rev = subprocess.run(
            ["git", "-C", str(root), "describe", "--always", "--dirty"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
        return f"{__version__}+{rev}"
    except (OSError, subprocess.SubprocessError):
        return __version__


def _check_id(image_id: str) -> None:
    if not image_id or "/" in image_id or image_id.startswith("."):
        raise PipelineError(f"image id {image_id!r} cannot be an HDF5 dataset name")


class ArtifactWriter:
    """Context manager that writes one artifact file atomically.

    >>> with ArtifactWriter(path, "scores", class_names, cfg) as w:
    ...     w.write_scores("2007_000032", cams, classes=[1, 15], orig_size=(281, 500), stride=4)
    """

    def __init__(self, path: str | os.PathLike, artifact: str, class_names: list[str], config: dict,
                 *, compression: str = "gzip", compression_level: int = 4, extra_attrs: dict | None = None) -> None:
        if artifact not in ARTIFACT_KINDS:
            raise ValueError(f"unknown artifact kind {artifact!r}")
        self.path = Path(path)
        self.artifact = artifact
        self.class_names = class_names
        self.config = config
        self.compression = compression
        self.level = compression_level if compression == "gzip" else None
        self.extra_attrs = extra_attrs or {}
        self._ctx = None
        self._file: h5py.File | None = None
        self.bytes_raw = 0

    def __enter__(self) -> ArtifactWriter:
        self._ctx = atomic_path(self.path)
        tmp = self._ctx.__enter__()
        # libver v110: compact per-dataset object headers (~0.5 KB instead of ~3.8 KB per image).
        self._file = h5py.File(tmp, "w", libver=("v110", "latest"))
        attrs = self._file.attrs
        attrs["schema_version"] = SCHEMA_VERSION
        attrs["artifact"] = self.artifact
        attrs["class_names"] = json.dumps(self.class_names)
        attrs["config_hash"] = config_hash(self.config)
        attrs["config"] = json.dumps(self.config, sort_keys=True, default=str)
        attrs["code_version"] = code_version()
        attrs["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        for k, v in self.extra_attrs.items():
            attrs[k] = v
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self._file is not None and self._ctx is not None
        self._file.close()
        self._ctx.__exit__(exc_type, exc, tb)

    def _create(self, image_id: str, data: np.ndarray, chunks, attrs: dict) -> None:
        _check_id(image_id)
        assert self._file is not None, "use ArtifactWriter as a context manager"
        if image_id in self._file:
            raise PipelineError(f"{self.path}: duplicate image id {image_id!r}")
        ds = self._file.create_dataset(
            image_id, data=data, chunks=chunks if data.size else None,
            compression=self.compression if data.size else None,
            compression_opts=self.level if data.size else None, shuffle=bool(data.size),
        )
        for k, v in attrs.items():
            ds.attrs[k] = v
        self.bytes_raw += data.nbytes

    def write_scores(self, image_id: str, scores: np.ndarray, classes: Iterable[int],
                     orig_size: tuple[int, int], stride: int = 1, dtype: str = "float16") -> None:
        """Score maps (K x h x w) for the K listed classes, stored at `stride`."""
        scores = np.asarray(scores)
        classes = np.asarray(list(classes), dtype=np.int64)
        if scores.ndim != 3 or scores.shape[0] != len(classes):
            raise ValueError(f"{image_id}: scores shape {scores.shape} does not match {len(classes)} classes")
        chunks = (1, *scores.shape[1:]) if scores.shape[0] else None
        self._create(image_id, scores.astype(dtype), chunks,
                     {"classes": classes, "orig_size": np.asarray(orig_size, np.int64), "stride": int(stride)})

    def write_mask(self, image_id: str, mask: np.ndarray, orig_size: tuple[int, int] | None = None,
                   stride: int = 1) -> None:
        mask = np.asarray(mask, dtype=np.uint8)
        size = orig_size or mask.shape
        self._create(image_id, mask, mask.shape,
                     {"classes": np.zeros(0, np.int64), "orig_size": np.asarray(size, np.int64), "stride": int(stride)})

    def write_array(self, image_id: str, data: np.ndarray, **attrs) -> None:
        """Any other per-image record (e.g. patch boxes and tags); attrs stored verbatim."""
        data = np.asarray(data)
        self._create(image_id, data, data.shape if data.size else None, attrs)


class ArtifactReader:
    """Lazily opened, read-only view of an artifact file.

    The file is opened on first access and re-opened after a fork (pid check), so a reader
    built in a Dataset's __init__ works in every DataLoader worker without sharing a handle.
    """

    def __init__(self, path: str | os.PathLike, expect: str | None = None) -> None:
        self.path = Path(path)
        self.expect = expect
        self._file: h5py.File | None = None
        self._pid = -1

    @property
    def file(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():
            try:
                self._file = h5py.File(self.path, "r")
            except (OSError, FileNotFoundError) as exc:
                raise PipelineError(f"{self.path}: cannot open artifact ({exc})") from exc
            self._pid = os.getpid()
            version = int(self._file.attrs.get("schema_version", -1))
            if version != SCHEMA_VERSION:
                raise PipelineError(f"{self.path}: artifact schema version {version}, expected {SCHEMA_VERSION}")
            kind = self._file.attrs.get("artifact")
            if self.expect is not None and kind != self.expect:
                raise PipelineError(f"{self.path}: artifact kind {kind!r}, expected {self.expect!r}")
        return self._file

    def __getstate__(self) -> dict:
        return {"path": self.path, "expect": self.expect, "_file": None, "_pid": -1}

    def close(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None

    def __contains__(self, image_id: str) -> bool:
        return image_id in self.file

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids())

    def __len__(self) -> int:
        return len(self.file)

    def ids(self) -> list[str]:
        return list(self.file.keys())

    @property
    def class_names(self) -> list[str]:
        return json.loads(self.file.attrs["class_names"])

    @property
    def root_attrs(self) -> dict:
        return dict(self.file.attrs)

    def _dataset(self, image_id: str) -> h5py.Dataset:
        try:
            return self.file[image_id]
        except KeyError:
            raise PipelineError(f"{self.path}: no entry for image id {image_id!r}") from None

    def attrs(self, image_id: str) -> dict:
        return dict(self._dataset(image_id).attrs)

    def raw(self, image_id: str) -> np.ndarray:
        return self._dataset(image_id)[()]

    def scores(self, image_id: str, full_res: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Return (float32 K x H x W scores, class ids); upsampled to the image size by default."""
        ds = self._dataset(image_id)
        classes = np.asarray(ds.attrs["classes"], dtype=np.int64)
        data = ds[()].astype(np.float32)
        stride = int(ds.attrs["stride"])
        if full_res and stride != 1 and data.shape[0]:
            data = upsample_scores(data, stride, tuple(int(v) for v in ds.attrs["orig_size"]))
        elif full_res and not data.shape[0]:
            h, w = (int(v) for v in ds.attrs["orig_size"])
            data = np.zeros((0, h, w), np.float32)
        return data, classes

    def mask(self, image_id: str) -> np.ndarray:
        return self._dataset(image_id)[()].astype(np.uint8)

    def nbytes_on_disk(self) -> int:
        return self.path.stat().st_size


def upsample_scores(data: np.ndarray, stride: int, size: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling of stride-s maps to (H, W): what every reader of a score cache does.

    A stride-s map of ceil(H/s) cells is upsampled to its extent s*ceil(H/s) and cropped to H,
    so cell i stays centred on pixels [s*i, s*i + s). This is not IRN's `high_res`, which
    upsamples each scale's stride-16 output to 16*ceil(H/16) before summing: a cache holds
    `fit_scores(high_res)`, cells fitted so that this upsampling reproduces `high_res`. Same
    sampling as `F.interpolate(mode="bilinear", align_corners=False)`, in NumPy: the CPU-only
    stages that read scores (CRF workers, evaluations) then start without importing torch.
    """
    h, w = size
    rows = _linear_taps(data.shape[1], stride, h)
    cols = _linear_taps(data.shape[2], stride, w)
    x = np.asarray(data, dtype=np.float32)
    x = x[:, rows[0], :] * rows[2][:, None] + x[:, rows[1], :] * rows[3][:, None]
    return x[:, :, cols[0]] * cols[2] + x[:, :, cols[1]] * cols[3]


def _linear_taps(n_in: int, stride: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of the first `n_out` of `n_in * stride` linear samples
    (half-pixel centres, clamped at the border, as torch's align_corners=False)."""
    src = np.maximum((np.arange(n_out, dtype=np.float32) + np.float32(0.5)) / np.float32(stride) - np.float32(0.5),
                     np.float32(0))
    i0 = np.minimum(src.astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w1 = (src - i0).astype(np.float32)
    return i0, i1, np.float32(1) - w1, w1


@functools.lru_cache(maxsize=256)
def _fit_matrix(n: int, stride: int) -> np.ndarray:
    """g x n pseudo-inverse (float64) of the 1-D upsampling in `upsample_scores` from
    g = ceil(n/stride) cells to n pixels, built from the same taps so fit and reader agree."""
    g = (n - 1) // stride + 1
    i0, i1, w0, w1 = _linear_taps(g, stride, n)
    up = np.zeros((n, g))
    rows = np.arange(n)
    np.add.at(up, (rows, i0), w0)
    np.add.at(up, (rows, i1), w1)  # i0 == i1 at the clamped border: the weights add up to 1
    return np.linalg.pinv(up)


def fit_scores(full, stride: int):
    """K x ceil(H/s) x ceil(W/s) cells whose `upsample_scores` (what a reader does) is the
    least-squares closest to the full-resolution K x H x W maps `full`.

    Separable: Py F Px^T with the pseudo-inverses of the row and column upsamplings. Much closer
    after upsampling than area averages or plain resizing (docs/ARTIFACTS.md). `full` is a NumPy
    array or a torch tensor (then the fit runs on its device and returns a float32 tensor; duck-
    typed, so this module needs no torch import). stride 1 returns `full` unchanged.
    """
    if stride == 1:
        return full
    h, w = full.shape[-2:]
    py = _fit_matrix(h, stride).astype(np.float32)
    px = _fit_matrix(w, stride).astype(np.float32)
    if isinstance(full, np.ndarray):
        return py @ full.astype(np.float32, copy=False) @ px.T
    x = full.float()
    return x.new_tensor(py) @ x @ x.new_tensor(np.ascontiguousarray(px.T))


def round_mantissa(values: np.ndarray, bits: int) -> np.ndarray:
    """float16 with the mantissa rounded to `bits` of its 10 bits (round half up on the bit
    pattern; 10 = unchanged). Zeroed low bits make gzip+shuffle effective on score caches."""
    half = values.astype(np.float16)
    if bits >= 10:
        return half
    drop = 10 - bits
    u = half.view(np.uint16).astype(np.uint32)
    finite = np.isfinite(half)
    rounded = (((u + (1 << (drop - 1))) >> drop) << drop).astype(np.uint16).view(np.float16)
    return np.where(finite & np.isfinite(rounded), rounded, half)


def rank_shard_path(out: str | os.PathLike, rank: int, world: int) -> Path:
    """Where DDP rank `rank` of `world` writes its part of `out` (`out` itself when alone)."""
    return Path(out) if world == 1 else Path(out).with_suffix(f".shard{rank}-of-{world}.h5")


def merge_rank_shards(outs: list[str | os.PathLike], rank: int, world: int) -> None:
    """After every rank has written its shards: rank 0 merges each output's shards and removes them.

    Every rank must call it (it holds a barrier); alone (world 1) the ranks wrote `out` directly."""
    if world == 1:
        return
    from pipeline.runtime.distributed import barrier  # the h5 layer needs torch.distributed only here

    barrier()
    if rank != 0:
        return
    for out in outs:
        parts = [rank_shard_path(out, r, world) for r in range(world)]
        merge_shards(parts, out)
        for part in parts:
            part.unlink()


def merge_shards(shards: list[str | os.PathLike], out: str | os.PathLike) -> None:
    """Join shard files (same artifact kind and class list) into one file, atomically."""
    if not shards:
        raise PipelineError(f"{out}: no shards to merge")
    readers = [ArtifactReader(p) for p in shards]
    first = readers[0].root_attrs
    with atomic_path(out) as tmp, h5py.File(tmp, "w", libver=("v110", "latest")) as dst:
        for k, v in first.items():
            dst.attrs[k] = v
        dst.attrs["shards"] = len(shards)
        for r in readers:
            if r.root_attrs["artifact"] != first["artifact"] or r.root_attrs["class_names"] != first["class_names"]:
                raise PipelineError(f"{r.path}: shard does not match {readers[0].path} (kind or classes)")
            for image_id in r.ids():
                if image_id in dst:
                    raise PipelineError(f"{r.path}: image id {image_id!r} appears in two shards")
                r.file.copy(r.file[image_id], dst, name=image_id)
            r.close()
