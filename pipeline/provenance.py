"""Code provenance of a stage: a hash over the `pipeline` modules it (transitively) imports.

Snakemake's code trigger sees only a rule's shell command, not the Python modules behind
`python -m pipeline.<stage>`. Each rule therefore puts `stage_code_hash("pipeline.<stage>")`
into its params: an edit to the stage's module, or to any `pipeline` module it imports,
changes the hash, Snakemake's params trigger reruns the stage, and the new outputs' mtimes
rerun everything downstream. Unrelated modules do not enter the hash.

The hash is over the AST with docstrings removed, so comments, blank lines and docstring
edits never cause a rerun. Standard library only: the Snakefile imports this at DAG build.
Per-file facts (imports, fingerprint) are cached on disk by content hash (see `_facts`).
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import sys
import tempfile
from functools import cache
from pathlib import Path

PACKAGE = "pipeline"
ROOT = Path(__file__).resolve().parent
# Modules left out of stage hashes: this one only computes the hashes and cannot change an
# artifact, and every training stage imports it (checkpoint code check), so an edit here would
# otherwise rerun every training and the shared pretraining.
NOT_HASHED = frozenset({"provenance.py"})


@cache  # ~4,500 lookups per DAG build; the package's files do not change during one
def module_path(name: str, root: Path = ROOT) -> Path | None:
    """File of a `pipeline...` module or package, or None if it is not part of the package."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    base = root.joinpath(*parts[1:])
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def _module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = [PACKAGE, *rel.parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _parents(name: str) -> list[str]:
    """Importing a.b.c executes a/__init__ and a/b/__init__ first."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def direct_imports(path: Path, root: Path = ROOT) -> set[str]:
    """`pipeline` modules a file imports (absolute or relative; `from P import sub` included)."""
    # Filtered here, not in the on-disk cache: whether `from P import x` names a module depends on other files.
    return {m for m in _facts(path, root)[0] if module_path(m, root) is not None}


def source_fingerprint(path: Path, root: Path = ROOT) -> str:
    """Hash of the code in `path`, insensitive to comments, formatting and docstrings."""
    return _facts(path, root)[1]


# Parsing and dumping the ASTs of ~120 modules took ~2.4 s of every DAG build (a no-op run, and
# each SLURM job step that checks its checkpoint's code hash). The per-file facts are therefore
# kept on disk, keyed by the file's content hash, in Python's own (ignored) cache directory; only
# edited files are parsed again. A stale or unreadable cache is rebuilt, never trusted.
_CACHE_FORMAT = 1
_MEMO: dict[tuple[Path, int, int], tuple[frozenset[str], str]] = {}
_STORES: dict[Path, dict] = {}


def _cache_file(root: Path) -> Path:
    return root / "__pycache__" / f"provenance.{sys.implementation.cache_tag}.json"


def _store(root: Path) -> dict:
    if root not in _STORES:
        entries: dict = {}
        try:
            data = json.loads(_cache_file(root).read_text())
            if data.get("format") == _CACHE_FORMAT:
                entries = data["files"]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass
        _STORES[root] = {"files": entries, "dirty": False}
    return _STORES[root]


def _save(root: Path) -> None:
    store = _STORES.get(root)
    if not store or not store["dirty"]:
        return
    target = _cache_file(root)
    try:
        target.parent.mkdir(exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=target.name, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump({"format": _CACHE_FORMAT, "files": store["files"]}, f)
        os.replace(tmp, target)  # concurrent writers: the last complete file wins
        store["dirty"] = False
    except OSError:
        pass  # a read-only checkout still works, only slower


def _facts(path: Path, root: Path) -> tuple[frozenset[str], str]:
    """(every module the file imports, unfiltered; its code fingerprint)."""
    st = path.stat()
    memo_key = (path, st.st_mtime_ns, st.st_size)
    if memo_key in _MEMO:
        return _MEMO[memo_key]
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    store = _store(root)
    key = str(path.relative_to(root))
    entry = store["files"].get(key)
    if isinstance(entry, dict) and entry.get("sha256") == digest:
        facts = frozenset(entry["imports"]), entry["fingerprint"]
    else:
        tree = ast.parse(data, filename=str(path))
        imports = _scan_imports(tree, _module_name(path, root), path.name == "__init__.py")
        fingerprint = hashlib.sha256(ast.dump(_strip_docstrings(tree), include_attributes=False).encode()).hexdigest()
        facts = imports, fingerprint
        store["files"][key] = {"sha256": digest, "imports": sorted(imports), "fingerprint": fingerprint}
        store["dirty"] = True
    _MEMO[memo_key] = facts
    return facts


def _scan_imports(tree: ast.Module, name: str, is_pkg: bool) -> frozenset[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names)  # submodules imported by name
    return frozenset(m for m in found if m.split(".")[0] == PACKAGE)


def dependency_files(module: str, root: Path = ROOT) -> list[Path]:
    """The module's file and every `pipeline` file it imports, transitively, sorted."""
    seen: dict[str, Path] = {}
    todo = [module]
    while todo:
        name = todo.pop()
        for candidate in [*_parents(name), name]:
            if candidate in seen:
                continue
            path = module_path(candidate, root)
            if path is None:
                continue
            seen[candidate] = path
            todo.extend(direct_imports(path, root))
    if module not in seen:
        raise ValueError(f"{module}: not a module of the {PACKAGE} package under {root}")
    return sorted(set(seen.values()))


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


@cache
def stage_code_hash(module: str, root: str | None = None) -> str:
    """Short hash over the fingerprints of `module` and its `pipeline` dependencies."""
    base = Path(root) if root else ROOT
    h = hashlib.sha256()
    for path in dependency_files(module, base):
        if str(path.relative_to(base)) in NOT_HASHED:
            continue
        h.update(str(path.relative_to(base)).encode())
        h.update(source_fingerprint(path, base).encode())
    _save(base)
    return h.hexdigest()[:16]
