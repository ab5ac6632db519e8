"""Rerunning after code changes, and resuming a killed training job through Snakemake."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, tiny_config, tool_env

CAM_TARGETS = ["results/cam/baseline/eval_cam.json", "results/tags/baseline/tag_accuracy.json"]


def _copy_workflow(dst: Path) -> Path:
    """A private copy of the workflow and its `pipeline` package, so the test can edit code."""
    for name in ("Snakefile", "config.yaml"):
        shutil.copy(REPO / name, dst / name)
    for name in ("workflow", "pipeline", "envs", "configs"):
        shutil.copytree(REPO / name, dst / name, ignore=shutil.ignore_patterns("__pycache__"))
    return dst


def _snakemake(work: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = tool_env()
    env["PYTHONPATH"] = str(work)  # jobs import the copy's `pipeline`, not the repository's
    p = subprocess.run(["snakemake", *args], capture_output=True, text=True, cwd=work, env=env)
    if check and p.returncode != 0:
        raise AssertionError(p.stdout[-3000:] + p.stderr[-3000:])
    return p


def _scheduled(work: Path, cfg: Path) -> dict[str, int]:
    """Rule -> job count of a dry run."""
    out = _snakemake(work, *CAM_TARGETS, "-n", "--configfile", str(cfg)).stdout
    if "Nothing to be done" in out:
        return {}
    table = out.split("Job stats:")[1].split("\n\n")[0]
    jobs = {}
    for line in table.splitlines()[3:]:
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit() and parts[0] != "total":
            jobs[parts[0]] = int(parts[1])
    return jobs


def _append_code(path: Path, line: str) -> None:
    path.write_text(path.read_text() + f"\n{line}\n")


@pytest.fixture(scope="module")
def finished_copy(tmp_path_factory):
    work = _copy_workflow(tmp_path_factory.mktemp("rerun"))
    cfg = work / "configs/tiny.yaml"
    _snakemake(work, *CAM_TARGETS, "--cores", "2", "--configfile", str(cfg))
    assert _scheduled(work, cfg) == {}
    return work, cfg


def test_comment_and_docstring_edits_schedule_nothing(finished_copy):
    work, cfg = finished_copy
    _append_code(work / "pipeline/seco/tagging.py", "# a comment changes no behaviour")
    assert _scheduled(work, cfg) == {}


def test_unrelated_module_edit_schedules_nothing(finished_copy):
    work, cfg = finished_copy
    _append_code(work / "pipeline/bench/document.py", "_UNUSED_BY_STAGES = 1")
    assert _scheduled(work, cfg) == {}


def test_stage_module_edit_reruns_that_stage_only(finished_copy):
    work, cfg = finished_copy
    _append_code(work / "pipeline/stages/tag_patches.py", "_EDITED = True")
    assert _scheduled(work, cfg) == {"tag_patches": 1}
    _snakemake(work, *CAM_TARGETS, "--cores", "2", "--configfile", str(cfg))
    assert _scheduled(work, cfg) == {}


def test_imported_module_edit_reruns_stage_and_downstream(finished_copy):
    work, cfg = finished_copy
    # pipeline/irn/cams.py is imported by make_cam (and eval_cam); tag_patches runs downstream of
    # make_cam; train_cam, index_dataset and make_synthetic are upstream and must not rerun.
    _append_code(work / "pipeline/irn/cams.py", "_EDITED = True")
    jobs = _scheduled(work, cfg)
    assert jobs == {"make_cam": 1, "eval_cam": 1, "tag_patches": 1}


def test_killed_training_resumes_from_checkpoint(tmp_path):
    """SIGKILL the whole snakemake process group mid-training; --rerun-incomplete resumes."""
    work = _copy_workflow(tmp_path)
    cfg_dict = tiny_config()
    cfg_dict["cam"].update(epochs=6, ckpt_every=3)  # long enough to be killed mid-run
    cfg = work / "tiny.yaml"
    cfg.write_text(json.dumps(cfg_dict))
    target = "results/cam/baseline/model_final.pth"
    env = tool_env()
    env["PYTHONPATH"] = str(work)
    proc = subprocess.Popen(["snakemake", target, "--cores", "2", "--configfile", str(cfg)], cwd=work, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    ckpt = work / "results/runs/train_cam/baseline/last.pth"
    try:
        deadline = time.monotonic() + 240
        while not ckpt.exists():
            assert proc.poll() is None, "snakemake ended before the first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 240 s"
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGKILL)  # like a preempted SLURM job: no clean-up at all
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert not (work / target).exists()
    # A SIGKILLed snakemake leaves its lock behind: a user runs --unlock, then reruns.
    _snakemake(work, target, "--unlock", "--configfile", str(cfg))
    _snakemake(work, target, "--cores", "2", "--rerun-incomplete", "--configfile", str(cfg))
    log = (work / "logs/train_cam/baseline.log").read_text()
    match = re.search(r"resumed from \S+ at iteration (\d+)/(\d+)", log)
    assert match, log[-2000:]
    assert 0 < int(match.group(1)) < int(match.group(2))
    assert (work / target).exists()


def test_every_rule_carries_the_code_hash_of_its_stage():
    """Each rule runs the stage module pipeline/rules.py names for it, and its params carry that
    stage's code hash and config slice (stage_code / stage_cfg of the rule's own name)."""
    from pipeline.rules import RULES

    rules_dir = REPO / "workflow/rules"
    seen = set()
    for smk in rules_dir.glob("*.smk"):
        for block in re.split(r"\n(?=rule )", smk.read_text()):
            module = re.search(r"python -m pipeline\.stages\.(\w+)", block)
            if not block.startswith("rule ") or not module:
                continue
            name = re.match(r"rule (\w+):", block).group(1)
            seen.add(name)
            assert RULES[name].stage == module.group(1), f"{smk.name}: rule {name} runs {module.group(1)}"
            assert f'code=stage_code("{name}")' in block, f"{smk.name}: {block.splitlines()[0]}"
            assert f'cfg=stage_cfg("{name}")' in block, f"{smk.name}: {block.splitlines()[0]}"
            assert "resources:" in block, f"{smk.name}: {block.splitlines()[0]} has no resources"
    assert seen == set(RULES), set(RULES) ^ seen
