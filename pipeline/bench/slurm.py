"""SLURM against the local executor: the same targets of the same config, run once locally and
once through a real single-node SLURM with the shipped profile (`profiles/slurm`), each in a fresh
run directory; wall times, their ratio and the sbatch jobs. Then the cost of the SLURM plugin's
import-time probing (it runs `sacct`, `squeue` and `scontrol` as its module loads, in every
Snakemake process, job steps included) with a live controller, with a client config whose
controller does not answer, and with no client config.

    python -m pipeline.bench.slurm --out results/bench/slurm.json [--preset configs/tiny.yaml] [--all]

`--all` adds the same comparison on the whole DAG of the preset (`whole_dag` in the JSON).

Needs root: it installs (if missing) and starts slurmctld, slurmd and munged
(`pipeline.bench.slurm_cluster`), and stops them at the end. `tests/test_slurm.py` runs the same
comparison on the CAM targets.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pipeline.bench.slurm_cluster import LocalSlurm
from pipeline.cli import setup_logging
from pipeline.errors import PipelineError, cli_entry
from pipeline.eval.metrics import write_summary
from pipeline.rules import RULES

log = logging.getLogger("pipeline.bench.slurm")

REPO = Path(__file__).resolve().parents[2]
# The CAM part of the DAG: two data jobs, two GPU jobs and two local jobs.
CAM_TARGETS = ("results/cam/baseline/eval_cam.json", "results/tags/baseline/tag_accuracy.json")
# What a test cluster needs beyond the shipped profile: its partition, no account (the profile's
# squeue status works without the accounting database), and faster polling than a real cluster.
TEST_CLUSTER_ARGS = ("--default-resources", "slurm_partition=debug", "mem_mb=2000", "--slurm-no-account",
                     "--slurm-init-seconds-before-status-checks", "2", "--seconds-between-status-checks", "3",
                     "--jobs", "4")


def tool_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This interpreter's bin first on PATH, so `snakemake` and the jobs' `python` match it."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.update(extra or {})
    return env


def _snakemake(args: list[str], work: Path, env: dict[str, str], timeout: float) -> tuple[float, subprocess.CompletedProcess]:
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    p = subprocess.run(["snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(work), *args],
                       capture_output=True, text=True, cwd=work, env=env, timeout=timeout)
    seconds = time.monotonic() - t0
    if p.returncode != 0:
        raise PipelineError(f"snakemake in {work} failed:\n{p.stdout[-3000:]}{p.stderr[-3000:]}")
    return seconds, p


def rule_of(job: dict[str, str]) -> str | None:
    """The workflow rule an sbatch job ran, or `group <name>` for a group job (the plugin writes
    `rule_<rule or group>[_wildcards_...]` in the job's comment)."""
    comment = job.get("Comment", "")
    name = comment.removeprefix("rule_").split("_wildcards_")[0]
    if name in RULES:
        return name
    if name and name != comment:  # a group job: `<group>_<its sorted rule names>`
        rules = []
        while (last := next((r for r in sorted(RULES, key=len, reverse=True) if name.endswith("_" + r)), None)):
            rules.insert(0, last)
            name = name[: -len(last) - 1]
        return f"group {name} ({', '.join(rules)})" if rules else f"group {name}"
    text = comment + " " + job.get("JobName", "")
    # longest first: "crf_masks" before "crf", "gather_crf_masks" before "crf_masks"
    return next((r for r in sorted(RULES, key=len, reverse=True) if r in text), None)


def compare(cluster: LocalSlurm, preset: Path, targets: list[str], root: Path, cores: int = 2,
            timeout: float = 1500) -> dict[str, Any]:
    """Wall seconds of the targets run locally (`--cores`) and through SLURM, fresh directories."""
    # targets first: `--configfile` takes every following word as a config file
    local_s, _ = _snakemake([*targets, "--cores", str(cores), "--configfile", str(preset)], root / "local",
                            tool_env(), timeout)
    before = {j["JobId"] for j in cluster.jobs()}
    slurm_s, _ = _snakemake([*targets, "--profile", str(REPO / "profiles/slurm"), *TEST_CLUSTER_ARGS,
                             "--configfile", str(preset)], root / "slurm", tool_env(cluster.env()), timeout)
    jobs = [j for j in cluster.jobs() if j["JobId"] not in before]
    return {"preset": str(preset.relative_to(REPO) if preset.is_relative_to(REPO) else preset),
            "targets": targets or ["all"], "cores": cores, "local_s": local_s, "slurm_s": slurm_s,
            "ratio": slurm_s / local_s, "sbatch_jobs": len(jobs),
            "sbatch_rules": sorted({rule_of(j) for j in jobs} - {None}),
            "jobs": [{"rule": rule_of(j), "state": j.get("JobState"),
                      "gres": j.get("TresPerJob", "") + " " + j.get("TRES", "")} for j in jobs],
            "cluster_args": list(TEST_CLUSTER_ARGS)}


def _time(cmd: list[str], env: dict[str, str], cwd: Path, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.monotonic()
        subprocess.run(cmd, capture_output=True, env=env, cwd=cwd, timeout=300)
        times.append(time.monotonic() - t0)
    return statistics.median(times)


def probe_cost(finished: Path, preset: Path, slurm_conf: Path | None, repeats: int = 3) -> dict[str, float]:
    """Median seconds of importing the SLURM plugin and of a no-op dry run on a finished run
    directory, with `SLURM_CONF` set as given (None: no client config at all)."""
    env = tool_env({"SLURM_CONF": str(slurm_conf) if slurm_conf else "/dev/null"})
    return {
        "plugin_import_s": _time([sys.executable, "-c", "import snakemake_executor_plugin_slurm"], env, finished, repeats),
        "noop_dry_run_s": _time(["snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(finished),
                                 "--configfile", str(preset), "-n"], env, finished, repeats),
    }


@cli_entry
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default=str(REPO / "configs/tiny.yaml"))
    p.add_argument("--all", action="store_true", help="also the whole DAG (after the CAM targets, as the test)")
    p.add_argument("--workdir", default=None, help="scratch folder (default: a temporary one)")
    p.add_argument("--repeats", type=int, default=3, help="timings per probe case (the median is kept)")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    setup_logging()
    if os.geteuid() != 0:
        raise PipelineError("the SLURM benchmark needs root to install and start slurmctld/slurmd/munged")
    preset = Path(args.preset).resolve()
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        root = Path(tmp)
        cluster = LocalSlurm(root / "cluster")
        try:
            cluster.start()
            figures = compare(cluster, preset, list(CAM_TARGETS), root)
            if args.all:
                figures["whole_dag"] = compare(cluster, preset, [], root / "all")
            for f in (figures, figures.get("whole_dag")):
                if f:
                    log.info("%s: local %.1f s, SLURM %.1f s: ratio %.2f (%d sbatch jobs)", " ".join(f["targets"]),
                             f["local_s"], f["slurm_s"], f["ratio"], f["sbatch_jobs"])
            live = probe_cost(root / "local", preset, cluster.conf, args.repeats)
        finally:
            cluster.stop()
        # The same client config once its controller is gone: the state this machine is in
        # after the SLURM test, or a login node whose controller is down.
        figures["probe"] = {"live controller": live,
                            "controller not answering": probe_cost(root / "local", preset, cluster.conf, args.repeats),
                            "no SLURM client config": probe_cost(root / "local", preset, None, args.repeats)}
    figures["command"] = " ".join(["python -m pipeline.bench.slurm", *(sys.argv[1:] if argv is None else argv)])
    write_summary(args.out, figures)
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
