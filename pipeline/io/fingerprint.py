"""A cheap fingerprint of the user's dataset files, so the DAG notices when they change.

VOC/COCO folders are not DAG products, so Snakemake cannot see a changed mask, a new image or an
edited split list. The index_dataset rule carries this fingerprint as a param: any change of the
split lists (by content) or of the file set, sizes or mtimes under the dataset root changes the
param, Snakemake reruns index_dataset (which re-validates everything), and the new index reruns
what depends on it. One `stat` per file through `os.scandir`, no file is read except the split
lists: measured in docs/BENCHMARKS.md. Standard library only (imported when the DAG is built).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def _walk(root: Path, h: hashlib._Hash) -> int:
    """Feed (relative path, size, mtime) of every file under `root` into `h`; return the count."""
    count = 0
    stack = [root]
    while stack:
        top = stack.pop()
        try:
            entries = sorted(os.scandir(top), key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=True):
                stack.append(Path(entry.path))
                continue
            try:
                st = entry.stat(follow_symlinks=True)
            except OSError:
                continue
            rel = os.path.relpath(entry.path, root)
            h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            count += 1
    return count


def dataset_fingerprint(dataset: dict) -> str:
    """Hex digest over the dataset root's files (path, size, mtime) and the split lists' text.

    `dataset` is the config's `dataset` section. A missing root gives a fixed value: index_dataset
    then fails with its own message naming the folder.
    """
    h = hashlib.sha256()
    root = Path(dataset["root"])
    h.update(f"files {_walk(root, h)}\n".encode())
    split_dir = dataset.get("split_dir")
    if split_dir and not Path(split_dir).resolve().is_relative_to(root.resolve()):
        # Lists outside the root (IRN/ToCo ship them separately): by content.
        for path in sorted(Path(split_dir).glob("*.txt")):
            h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]
