"""The SLURM benchmark's job naming and its section of docs/BENCHMARKS.md (no cluster needed)."""

from __future__ import annotations

from pipeline.bench.document import goals, slurm_section
from pipeline.bench.slurm import rule_of


def test_rule_and_group_jobs_are_named_from_the_plugin_comment():
    assert rule_of({"Comment": "rule_train_cam_wildcards_baseline"}) == "train_cam"
    assert rule_of({"Comment": "rule_cam_model_make_cam_train_cam"}) == "group cam_model (make_cam, train_cam)"
    assert rule_of({"Comment": "rule_crf_crf_masks_gather_crf_masks_wildcards_csd"}) == \
        "group crf (crf_masks, gather_crf_masks)"


def _run(targets, local, slurm, jobs):
    return {"targets": targets, "local_s": local, "slurm_s": slurm, "ratio": slurm / local, "sbatch_jobs": jobs,
            "sbatch_rules": ["group cam_model (make_cam, train_cam)"]}


def test_both_target_sets_get_a_row_and_a_goal():
    slurm = _run(["results/cam/baseline/eval_cam.json"], 40.0, 50.0, 1) | {
        "preset": "configs/tiny.yaml", "cores": 2, "cluster_args": ["--jobs", "4"], "command": "x",
        "whole_dag": _run(["all"], 100.0, 200.0, 9)}
    text = "\n".join(slurm_section({"slurm": slurm}))
    assert "| `results/cam/baseline/eval_cam.json` | 40.0 | 50.0 | 1.25 | 1 |" in text
    assert "| `all` | 100.0 | 200.0 | 2.00 | 9 |" in text
    rows = [r for r in goals({"presets": {}, "preset_order": [], "machine": {"cores": 2}, "slurm": slurm})
            if r[0].startswith("SLURM")]
    assert [r[2] for r in rows] == ["met", "**missed**"]
