"""Code provenance of a stage: a hash over the `pipeline` modules it (transitively) imports.

Snakemake's code trigger sees only a rule's shell command, not the Python modules behind
`python -m pipeline.<stage>`. Each rule therefore puts `stage_code_hash("pipeline.<stage>")`
into its params: an edit to the stage's module, or to any `pipeline` module it imports,
changes the hash, Snakemake's params trigger reruns the stage, and the new outputs' mtimes
rerun everything downstream. Unrelated modules do not enter the hash.

The hash is over the AST with docstrings removed, so comments, blank lines and docstring
edits never cause a rerun. Standard library only: the Snakefile imports this at DAG build.
"""

from __future__ import annotations

import ast
import hashlib
from functools import cache
from pathlib import Path

PACKAGE = "pipeline"
ROOT = Path(__file__).resolve().parent


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


_PARSED: dict[tuple[Path, int, int], ast.Module] = {}


def _parse(path: Path) -> ast.Module:
    """The file's AST, parsed once per process and version of the file: the Snakefile hashes
    every rule's stage, and the stages share most of their modules (without this, a no-op run
    spent ~6 of its 9 seconds re-parsing the same files, and so did every SLURM job step)."""
    st = path.stat()
    key = (path, st.st_mtime_ns, st.st_size)
    if key not in _PARSED:
        _PARSED[key] = ast.parse(path.read_text(), filename=str(path))
    return _PARSED[key]


def direct_imports(path: Path, root: Path = ROOT) -> set[str]:
    """`pipeline` modules a file imports (absolute or relative; `from P import sub` included)."""
    return set(_direct_imports(path, root, *_stamp(path)))


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_mtime_ns, st.st_size


@cache
def _direct_imports(path: Path, root: Path, _mtime_ns: int, _size: int) -> frozenset[str]:
    name = _module_name(path, root)
    is_pkg = path.name == "__init__.py"
    tree = _parse(path)
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
    return frozenset(m for m in found if module_path(m, root) is not None)


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


def source_fingerprint(path: Path) -> str:
    """Hash of the code in `path`, insensitive to comments, formatting and docstrings."""
    return _source_fingerprint(path, *_stamp(path))


@cache
def _source_fingerprint(path: Path, _mtime_ns: int, _size: int) -> str:
    # stripping docstrings edits the shared tree in place: harmless to the import scan
    tree = _strip_docstrings(_parse(path))
    return hashlib.sha256(ast.dump(tree, include_attributes=False).encode()).hexdigest()


@cache
def stage_code_hash(module: str, root: str | None = None) -> str:
    """Short hash over the fingerprints of `module` and its `pipeline` dependencies."""
    base = Path(root) if root else ROOT
    h = hashlib.sha256()
    for path in dependency_files(module, base):
        h.update(str(path.relative_to(base)).encode())
        h.update(source_fingerprint(path).encode())
    return h.hexdigest()[:16]
