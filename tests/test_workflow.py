"""The Snakemake skeleton: DAG builds, lint is clean, the default DAG runs."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from tests.conftest import REPO, TINY_SPEC, tool_env, workdir


def _snakemake(*args, cwd=REPO, check=True):
    p = subprocess.run(["snakemake", *args], capture_output=True, text=True, cwd=cwd, env=tool_env())
    if check and p.returncode != 0:
        raise AssertionError(p.stdout[-3000:] + p.stderr[-3000:])
    return p


def test_dry_run_builds_dag(tmp_path):
    p = _snakemake("-n", "--directory", str(workdir(tmp_path)))
    assert "index_dataset" in p.stdout and "make_synthetic" in p.stdout


def test_lint_is_clean():
    p = _snakemake("--lint", check=False)
    assert p.returncode == 0, p.stdout + p.stderr


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """The default DAG on a tiny synthetic config, run in a scratch working directory."""
    work = workdir(tmp_path_factory.mktemp("wf"))
    cfg = work / "tiny.yaml"
    cfg.write_text(json.dumps({"synthetic": TINY_SPEC}))
    _snakemake("--cores", "2", "--configfile", str(cfg), "--directory", str(work))
    return work, cfg


def test_default_dag_runs(tiny_run):
    work, cfg = tiny_run
    index = json.loads((work / "results/dataset/index.json").read_text())
    assert len(index["splits"]["train"]["ids"]) == TINY_SPEC["num_train"]
    assert (work / "logs/index_dataset/index_dataset.log").exists()
    assert (work / "benchmarks/make_synthetic/make_synthetic.tsv").exists()
    # A no-op rerun schedules nothing.
    p = _snakemake("-n", "--configfile", str(cfg), "--directory", str(work))
    assert "Nothing to be done" in p.stdout + p.stderr


def test_generation_is_deterministic(tiny_run, tmp_path):
    work, cfg = tiny_run
    other = workdir(tmp_path / "again")
    _snakemake("--cores", "1", "--configfile", str(cfg), "--directory", str(other), "results/data/synthetic")
    a, b = work / "results/data/synthetic", other / "results/data/synthetic"
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    shutil.rmtree(other)
