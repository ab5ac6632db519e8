"""The Snakemake skeleton: DAG builds, lint is clean, the default DAG runs."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from pipeline.io.h5store import ArtifactReader
from tests.conftest import REPO, TINY_CONFIG, TINY_SPEC, tool_env, workdir


def _snakemake(*args, cwd=REPO, check=True):
    p = subprocess.run(["snakemake", *args], capture_output=True, text=True, cwd=cwd, env=tool_env())
    if check and p.returncode != 0:
        raise AssertionError(p.stdout[-3000:] + p.stderr[-3000:])
    return p


def test_dry_run_builds_dag(tmp_path):
    """A scratch run directory needs no config of its own: the defaults, and a preset given alone,
    layer on config.yaml beside the Snakefile."""
    p = _snakemake("-n", "--directory", str(tmp_path))
    assert "index_dataset" in p.stdout and "make_synthetic" in p.stdout
    p = _snakemake("-n", "--directory", str(tmp_path), "--configfile", str(REPO / "configs/voc12.yaml"))
    assert "train_cam" in p.stdout and "make_synthetic" not in p.stdout


def test_lint_is_clean():
    p = _snakemake("--lint", check=False)
    assert p.returncode == 0, p.stdout + p.stderr


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """The default DAG on a tiny synthetic config, run in a scratch working directory."""
    work = workdir(tmp_path_factory.mktemp("wf"))
    cfg = TINY_CONFIG
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


def test_pseudo_masks_as_palette_pngs(tiny_run):
    from pipeline.data.palette import read_index_png

    work, _ = tiny_run
    crf = ArtifactReader(work / "results/masks/csd/crf.h5", expect="mask")
    pngs = sorted((work / "results/masks/csd/crf_png").glob("*.png"))
    assert [p.stem for p in pngs] == sorted(crf.ids())
    assert np.array_equal(read_index_png(pngs[0]), crf.mask(pngs[0].stem))


def test_stage_logs_show_progress_with_eta(tiny_run):
    work, _ = tiny_run
    for log in ("make_cam/baseline.log", "infer_seco/seco.log", "infer_deeplab/gt.log", "eval_masks/csd.log"):
        text = (work / "logs" / log).read_text()
        assert "images/s, eta" in text, log


def test_readme_rerun_commands(tiny_run):
    """The README's "Rerunning stages" commands, as dry runs on a finished run."""
    work, cfg = tiny_run
    base = ["-n", "--configfile", str(cfg), "--directory", str(work)]
    one = _snakemake("results/cam/baseline/cams.h5", *base, "--forcerun", "make_cam").stdout
    assert "make_cam" in one and "train_cam" not in one and "eval_cam" not in one and "total 1" in " ".join(one.split())
    down = _snakemake(*base, "--forcerun", "make_cam").stdout
    assert "make_cam" in down and "eval_cam" in down and "train_cam" not in down
    assert "reason: Forced execution" in down


def test_report_opens_on_the_summary(tiny_run, tmp_path):
    """The README's `snakemake --report report.html` on a finished run: the landing text is the
    front page (headline table, run facts, legend, curves), and every report item is in it."""
    work, cfg = tiny_run
    report = tmp_path / "report.html"
    _snakemake("--report", str(report), "--configfile", str(cfg), "--directory", str(work))
    text = report.read_text()
    front = (work / "results/report/front.html").read_text()
    summary = json.loads((work / "results/summary.json").read_text())
    for needle in ("Headline", "commit", "tiny.yaml", "Class colours", "Training curves", "Resolved config",
                   "horse", "data:image/png;base64"):
        assert needle in front, needle
    assert all(f">{row['method']}" in front for row in summary["rows"])
    assert "wsss-front" in text and "Headline" in text
    for item in ("front.html", "training_curves.png", "summary.html", "qualitative"):
        assert item in text, item


def test_qualitative_rows_cover_val_and_worst_images(tiny_run):
    from PIL import Image

    work, _ = tiny_run
    img = Image.open(work / "results/report/qualitative/baseline.png")
    # three blocks (training rows, val rows, worst val rows) and the legend: taller than the training rows alone
    assert img.height > 3 * 6 * 100
    log = (work / "logs/report_qualitative/baseline.log").read_text()
    assert "val images scored" in log


def test_cam_stages_write_metrics(tiny_run):
    work, _ = tiny_run
    summary = json.loads((work / "results/cam/baseline/eval_cam.json").read_text())
    for key in ("miou", "chance_miou", "cooccurrence_confusion", "context_false_activation", "best_threshold"):
        assert key in summary
    assert "horse->person" in summary["cooccurrence_confusion"]
    sweep = (work / "results/cam/baseline/eval_cam_sweep.tsv").read_text().splitlines()
    assert sweep[0] == "bg_threshold\tmiou" and len(sweep) == 13
    tags = json.loads((work / "results/tags/baseline/tag_accuracy.json").read_text())
    assert tags["bg_rule"] == "index_sum" and tags["other_rule"]["bg_rule"] == "count"
    assert sum(tags["counts"].values()) == 10 * TINY_SPEC["num_train"]
    cams = ArtifactReader(work / "results/cam/baseline/cams.h5", expect="scores")
    assert len(cams) == TINY_SPEC["num_train"]
    log = (work / "logs/make_cam/baseline.log").read_text()
    assert "images/s" in log and "bytes/pixel" in log
    assert (work / "results/runs/train_cam/baseline/metrics.csv").exists()


def test_killed_and_rerun_dag_equals_an_uninterrupted_run(tiny_run, tmp_path):
    """Fault injection (and determinism): a second run of the whole DAG in another directory,
    SIGKILLed at 12 points (stages alone, and Snakemake's whole process group) and rerun as the
    README says, ends with every final artifact equal to the uninterrupted run's: on CPU with a
    fixed seed, every stage gives the same artifact twice, and resuming changes nothing."""
    from pipeline.bench.faults import FAULTS

    work, cfg = tiny_run
    out = tmp_path / "faults.json"
    p = subprocess.run(["python", "-m", "pipeline.bench.faults", "--reference", str(work), "--workdir",
                        str(tmp_path / "faulted"), "--preset", str(cfg), "--out", str(out)],
                       capture_output=True, text=True, cwd=REPO, env=tool_env())
    assert p.returncode == 0, p.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["mismatches"] == []
    assert result["faults"] >= 10 and result["survived"] == result["faults"], result
    assert len(FAULTS) - len(result["not_reached"]) == result["faults"]
    kinds = {f["kill"] for f in result["injected"]}
    assert kinds == {"stage", "snakemake"}
    # The killed training's log is kept per attempt: Snakemake clears the job's log on the rerun,
    # `<log>.attempts` keeps both (common.smk, TO_LOG).
    attempts = list((tmp_path / "faulted").rglob("logs/train_cam/baseline.log.attempts"))
    assert len(attempts) == 1
    text = attempts[0].read_text()
    assert text.count("=== attempt: train_cam") >= 2, text[-2000:]
    from pipeline.bench.document import faults_section

    text = "\n".join(faults_section({"presets": {"tiny": {"faults": result}}, "preset_order": ["tiny"]}))
    assert f"faults survived: {result['faults']} of {result['faults']}" in text and "all equal" in text


def test_threshold_sweep_on_the_training_split_matches_eval_masks(tiny_run, tmp_path):
    """At the config's own thresholds the sweep scores exactly what eval_masks wrote; other pairs differ."""
    work, cfg = tiny_run
    out = tmp_path / "sweep.json"
    p = subprocess.run(["python", "-m", "pipeline.bench.thresholds", "--run", str(work), "--method", "baseline",
                        "--preset", str(cfg), "--fg", "0.3", "0.9", "--bg", "0.05", "--processes", "1",
                        "--out", str(out)], capture_output=True, text=True, cwd=REPO, env=tool_env())
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    sweep = json.loads(out.read_text())
    ref = json.loads((work / "results/masks/baseline/eval_masks.json").read_text())
    at = {(r["fg_threshold"], r["bg_threshold"]): r for r in sweep["pairs"]}
    assert set(at) == {(0.3, 0.05), (0.9, 0.05)}
    assert at[0.3, 0.05]["mask_miou"] == pytest.approx(ref["raw"]["miou"], abs=1e-12)
    assert at[0.3, 0.05]["mask_crf_miou"] == pytest.approx(ref["crf"]["miou"], abs=1e-12)
    assert at[0.9, 0.05]["mask_miou"] != at[0.3, 0.05]["mask_miou"]
    assert sweep["best"] in sweep["pairs"] and sweep["seed_sweep"]["best_threshold"] is not None
    p = subprocess.run(["python", "-m", "pipeline.bench.thresholds", "--run", str(tmp_path), "--method", "baseline",
                        "--out", str(tmp_path / "x.json")], capture_output=True, text=True, cwd=REPO, env=tool_env())
    assert p.returncode != 0 and "cams.h5" in p.stderr and not (tmp_path / "x.json").exists()


def test_benchmark_document_from_finished_run(tiny_run, tmp_path):
    """The benchmark command on a finished run: no-op rerun, CRF on 1 and 2 processes, CAM cache check, document."""
    work, cfg = tiny_run
    bench = tmp_path / "bench"
    (bench / cfg.stem).mkdir(parents=True)
    (bench / cfg.stem / "seed0").symlink_to(work)
    out = tmp_path / "BENCHMARKS.md"
    p = subprocess.run(["python", "-m", "pipeline.bench.run", "--preset", str(cfg), "--seeds", "0", "--skip-dag",
                        "--workdir", str(bench), "--out", str(out), "--crf-repeats", "1", "--cache-images", "4"],
                       capture_output=True, text=True, cwd=REPO, env=tool_env())
    assert p.returncode == 0, p.stderr[-3000:]
    recorded = tmp_path / "bench.json"  # beside the document
    figures = json.loads(recorded.read_text())["presets"][cfg.stem]
    assert figures["provenance"]["command"].startswith("python -m pipeline.bench.run --preset")
    assert figures["noop"]["jobs"] == 0
    assert set(figures["crf"]["images_per_s"]) == {"1", "2"} and all(v > 0 for v in figures["crf"]["images_per_s"].values())
    assert figures["cam_cache"]["images"] == 4 and abs(figures["cam_cache"]["cache_minus_full"]) < 0.2
    kinds = {r["artifact"] for r in figures["storage"]}
    assert {"scores", "mask", "logits", "tags"} <= kinds and all(r["bytes_per_pixel"] > 0 for r in figures["storage"])
    seed = figures["seeds"]["0"]
    assert {"baseline", "csd", "seco", "gt"} <= set(seed["quality"]["rows"])
    assert seed["stages"]["train_cam"]["wall_s"] > 0 and seed["training"]["train_cam/baseline"]["it_per_s"] > 0
    assert seed["throughput"]["make_cam/baseline"]["images_per_s"] > 0
    text = out.read_text()
    for heading in ("## Goals", "## Quality", "## Speed", "## Storage", "## Fault injection", "## GPU", "not measured"):
        assert heading in text
    # The document is a function of bench.json alone.
    again = tmp_path / "again.md"
    subprocess.run(["python", "-m", "pipeline.bench.run", "--render-only", "--workdir", str(bench), "--out", str(again)],
                   check=True, capture_output=True, cwd=REPO, env=tool_env())
    assert again.read_text() == text
    # --update: an incremental rerun of the finished run, recorded beside the first timed run (nothing is
    # out of date here, so 0 jobs), which keeps its wall time.
    (work / "bench_run.json").write_text(json.dumps({"wall_s": 600.0, "jobs": 50, "command": "snakemake"}))
    try:
        p = subprocess.run(["python", "-m", "pipeline.bench.run", "--preset", str(cfg), "--seeds", "0", "--update",
                            "--no-faults", "--workdir", str(bench), "--out", str(out)],
                           capture_output=True, text=True, cwd=REPO, env=tool_env())
        assert p.returncode == 0, p.stderr[-3000:]
        dag = json.loads((work / "bench_run.json").read_text())
        assert dag["wall_s"] == 600.0 and [u["jobs"] for u in dag["updates"]] == [0]
        assert "Updated in place afterwards" in out.read_text() and "10.0 min (50 jobs)" in out.read_text()
        # A preset recorded by an earlier sitting stays, with its own provenance line, unless --fresh.
        figures = json.loads(recorded.read_text())
        earlier = {**figures["presets"][cfg.stem], "provenance": {**figures["presets"][cfg.stem]["provenance"],
                                                                   "command": "earlier command", "date": "then"}}
        figures["presets"]["earlier"] = earlier
        figures["preset_order"].append("earlier")
        recorded.write_text(json.dumps(figures))
        rerun = ["python", "-m", "pipeline.bench.run", "--preset", str(cfg), "--seeds", "0", "--no-faults",
                 "--workdir", str(bench), "--out", str(out)]
        subprocess.run(rerun, check=True, capture_output=True, cwd=REPO, env=tool_env())
        text = out.read_text()
        assert "### Quality: `earlier`" in text and "Measured by `earlier command` on then" in text
        assert "kept the recorded figures of `earlier`" in text
        subprocess.run([*rerun, "--fresh"], check=True, capture_output=True, cwd=REPO, env=tool_env())
        assert "earlier" not in json.loads(recorded.read_text())["presets"] and "`earlier`" not in out.read_text()
    finally:
        (work / "bench_run.json").unlink()
