"""Stage code hashes: what enters them, and the on-disk cache that keeps a no-op DAG build fast."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import provenance

STAGE = "pipeline.stages.train_x"


@pytest.fixture()
def package(tmp_path: Path) -> Path:
    """A tiny `pipeline` package: a stage importing a helper (relative and absolute), and the
    provenance module itself, which stages import but which never enters a hash."""
    root = tmp_path / "pipeline"
    (root / "stages").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "stages/__init__.py").write_text("")
    (root / "helper.py").write_text('"""Doc."""\n\ndef f(x):\n    return x + 1\n')
    (root / "unrelated.py").write_text("Y = 2\n")
    (root / "provenance.py").write_text("Z = 3\n")
    (root / "stages/train_x.py").write_text(
        "from .. import helper\nfrom pipeline.provenance import Z\n\ndef main():\n    return helper.f(Z)\n")
    return root


def _fresh_hash(root: Path) -> str:
    """The hash as a new process computes it (only the on-disk cache carries over)."""
    code = ("import sys; from pipeline.provenance import stage_code_hash; "
            f"print(stage_code_hash({STAGE!r}, sys.argv[1]))")
    repo = Path(provenance.__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code, str(root)], cwd=repo, check=True,
                         capture_output=True, text=True)
    return out.stdout.strip()


def test_hash_follows_code_not_comments_or_unrelated_modules(package: Path) -> None:
    first = _fresh_hash(package)
    cache = package / "__pycache__" / f"provenance.{sys.implementation.cache_tag}.json"
    assert cache.is_file(), "the first build writes the cache"
    assert _fresh_hash(package) == first, "the cached facts give the same hash"

    helper = package / "helper.py"
    helper.write_text(helper.read_text().replace('"""Doc."""', '"""Other doc."""  # a comment'))
    (package / "unrelated.py").write_text("Y = 3\n")
    (package / "provenance.py").write_text("Z = 4\n")
    assert _fresh_hash(package) == first

    helper.write_text(helper.read_text().replace("x + 1", "x + 2"))
    edited = _fresh_hash(package)
    assert edited != first, "an edit to an imported module's code changes the hash"

    cache.write_text("{not json")
    assert _fresh_hash(package) == edited, "a damaged cache is rebuilt, not trusted"
    assert json.loads(cache.read_text())["files"]


def test_stale_cache_entry_is_not_trusted(package: Path) -> None:
    first = _fresh_hash(package)
    cache = package / "__pycache__" / f"provenance.{sys.implementation.cache_tag}.json"
    data = json.loads(cache.read_text())
    data["files"]["helper.py"]["fingerprint"] = "0" * 64  # an entry for other content
    data["files"]["helper.py"]["sha256"] = "f" * 64
    cache.write_text(json.dumps(data))
    assert _fresh_hash(package) == first


def test_dependency_files_lists_the_transitive_imports(package: Path) -> None:
    names = {p.relative_to(package).as_posix() for p in provenance.dependency_files(STAGE, package)}
    assert names == {"__init__.py", "stages/__init__.py", "stages/train_x.py", "helper.py", "provenance.py"}
