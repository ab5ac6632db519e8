"""Fault injection: SIGKILL the DAG at points spread over it, rerun as the README says, and check
that the final artifacts equal those of an uninterrupted run.

    python -m pipeline.bench.faults --reference RUN_DIR --workdir DIR [--preset configs/tiny.yaml]

Each launch of Snakemake arms every fault not injected yet; the first whose stage is running and
whose trigger file appears (a checkpoint, an HDF5 temporary, a CRF shard; or the stage has run
for `--grace` seconds) fires: SIGKILL of that stage's process alone, or of Snakemake's whole
process group (a preempted node). The rerun is the README's: `snakemake --unlock` after a killed
Snakemake, then `snakemake --rerun-incomplete`. At the end every file under results/ (except the
run folders' timings) is compared with the reference run: JSON/TSV/PNG/HTML byte for byte, HDF5
by every dataset and attribute, model files by every tensor and the meta dict.
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from pipeline.bench.measure import Preset, snakemake_command
from pipeline.cli import setup_logging
from pipeline.errors import PipelineError, cli_entry
from pipeline.eval.metrics import write_summary

log = logging.getLogger("pipeline.bench.faults")


@dataclass(frozen=True)
class Fault:
    name: str
    kill: str        # "stage": the stage's process alone | "snakemake": Snakemake's process group
    stage: str       # module under pipeline.stages
    trigger: str     # glob under the run directory


FAULTS = (
    Fault("train_cam after a checkpoint", "stage", "train_cam", "results/runs/train_cam/baseline/last.pth"),
    Fault("make_cam writing its HDF5", "snakemake", "make_cam", "results/cam/*/.cams.h5.tmp-*"),
    Fault("tag_patches writing", "stage", "tag_patches", "results/tags/baseline/.tags.h5.tmp-*"),
    Fault("train_csd after a checkpoint", "snakemake", "train_csd", "results/runs/train_csd/csd/last.pth"),
    Fault("train_seco after a checkpoint", "stage", "train_seco", "results/runs/train_seco/seco/last.pth"),
    Fault("infer_seco writing", "stage", "infer_seco", "results/seco/.seg_logits.h5.tmp-*"),
    Fault("CRF shard of pseudo masks", "stage", "crf", "results/masks/*/crf_shards/.*.tmp-*"),
    Fault("export_masks writing", "snakemake", "export_masks", "results/masks/*/.masks.h5.tmp-*"),
    Fault("train_deeplab after a checkpoint", "stage", "train_deeplab", "results/runs/train_deeplab/*/last.pth"),
    Fault("infer_deeplab writing", "snakemake", "infer_deeplab", "results/deeplab/*/.logits.h5.tmp-*"),
    Fault("CRF shard of predictions", "snakemake", "crf", "results/deeplab/*/crf_shards/.*.tmp-*"),
    Fault("eval_deeplab writing PNGs", "stage", "eval_deeplab", "results/deeplab/*/.pred_png.tmp-*"),
)


def _stage_pids(stage: str, run: Path) -> list[tuple[int, float]]:
    """(pid, seconds running) of the Python processes running `pipeline.stages.<stage>` in the run
    directory `run` (their working directory): another run's stages on the same machine, a
    benchmark's or another user's, are never the target."""
    run = run.resolve()
    found = []
    ticks = os.sysconf("SC_CLK_TCK")
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    want = [b"-m", f"pipeline.stages.{stage}".encode()]
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            argv = (pid_dir / "cmdline").read_bytes().split(b"\0")
            stat = (pid_dir / "stat").read_text()
        except OSError:
            continue
        if len(argv) < 3 or not argv[0].endswith((b"python", b"python3")) or argv[1:3] != want:
            continue
        try:
            if Path(os.readlink(pid_dir / "cwd")) != run:
                continue
        except OSError:
            continue
        started = int(stat.rsplit(")", 1)[1].split()[19]) / ticks  # field 22: start time since boot
        found.append((int(pid_dir.name), uptime - started))
    return found


def _armed(run: Path, pending: list[Fault], grace: float) -> tuple[Fault, int] | None:
    for fault in pending:
        pids = _stage_pids(fault.stage, run)
        if not pids:
            continue
        pid, age = max(pids, key=lambda p: p[1])
        if glob.glob(str(run / fault.trigger)) or age > grace:
            return fault, pid
    return None


def inject(run: Path, preset: Preset, cores: int = 2, grace: float = 4.0, seed: int | None = None,
           max_launches: int = 40) -> dict:
    """Run the DAG in `run` under the fault schedule until it completes; the faults injected."""
    pending, injected = list(FAULTS), []
    for _ in range(max_launches):
        proc = subprocess.Popen(snakemake_command(run, preset, seed, cores, "--rerun-incomplete"), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        fired = None
        while proc.poll() is None:
            hit = _armed(run, pending, grace) if pending else None
            if hit is None:
                time.sleep(0.02)
                continue
            fired, pid = hit
            if fired.kill == "snakemake":
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
            pending.remove(fired)
            injected.append({"fault": fired.name, "kill": fired.kill, "stage": fired.stage,
                             "trigger_seen": bool(glob.glob(str(run / fired.trigger)))})
            log.info("fault %d: SIGKILL %s during %s", len(injected),
                     "Snakemake's process group" if fired.kill == "snakemake" else f"{fired.stage} (pid {pid})",
                     fired.name)
            break
        rc = proc.wait()
        if fired is None:
            if rc != 0:
                raise PipelineError(f"{run}: snakemake failed (exit {rc}) without an injected fault")
            return {"injected": injected, "not_reached": [f.name for f in pending]}
        if fired.kill == "snakemake":  # the README's step after a killed Snakemake
            subprocess.run(snakemake_command(run, preset, seed, cores, "--unlock"), check=True, capture_output=True)
    raise PipelineError(f"{run}: the DAG did not complete within {max_launches} launches")


def _h5_items(path: Path) -> dict[str, object]:
    items: dict[str, object] = {}
    with h5py.File(path, "r") as f:
        # `created` is the write time: provenance, not content.
        items["/"] = {k: np.asarray(v).tolist() for k, v in f.attrs.items() if k != "created"}

        def visit(name: str, obj) -> None:
            attrs = {k: np.asarray(v).tolist() for k, v in obj.attrs.items()}
            items[name] = (obj[()].tobytes(), obj.dtype.str, obj.shape, attrs) if isinstance(obj, h5py.Dataset) \
                else attrs
        f.visititems(visit)
    return items


def _same(a: Path, b: Path) -> bool:
    if a.suffix == ".h5":
        return _h5_items(a) == _h5_items(b)
    if a.suffix == ".pth":
        import torch

        from pipeline.runtime.checkpoint import load_final
        (sa, ma), (sb, mb) = load_final(a), load_final(b)
        return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa) and \
            json.dumps(ma, sort_keys=True, default=str) == json.dumps(mb, sort_keys=True, default=str)
    return a.read_bytes() == b.read_bytes()


def compare(reference: Path, run: Path) -> list[str]:
    """Files under results/ that differ from (or are missing beside) the reference run's."""
    bad = []
    base = reference / "results"
    for path in sorted(p for p in base.rglob("*") if p.is_file()):
        rel = path.relative_to(base)
        if rel.parts[0] in ("runs", "bench"):  # checkpoints and timings: not final artifacts
            continue
        other = run / "results" / rel
        if not other.is_file() or not _same(path, other):
            bad.append(str(rel))
    extra = [str(p.relative_to(run / "results")) for p in (run / "results").rglob(".*.tmp-*")]
    return bad + [f"leftover {e}" for e in extra]


def campaign(reference: Path, run: Path, preset: Preset, cores: int = 2, grace: float = 4.0,
             faults_seed: int | None = None) -> dict:
    """Inject the faults into a run of `preset` in `run`, then compare it with `reference`."""
    t0 = time.perf_counter()
    result = inject(run, preset, cores, grace, faults_seed)
    result["mismatches"] = compare(reference, run)
    n = len(result["injected"])
    result["survived"] = n if not result["mismatches"] else 0
    result["faults"] = n
    result["seconds"] = round(time.perf_counter() - t0, 1)
    return result


@cli_entry
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reference", required=True, help="a finished, uninterrupted run directory of the same config")
    p.add_argument("--workdir", required=True, help="the faulted run's directory (created)")
    p.add_argument("--preset", default=None, help="the config preset both runs use")
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--seed", type=int, default=None, help="config key `seed`, as the reference run used it")
    p.add_argument("--grace", type=float, default=4.0, help="fire after this many seconds if no trigger file shows")
    p.add_argument("--out", default=None, help="JSON with the faults injected and the comparison")
    args = p.parse_args(argv)
    setup_logging()
    run = Path(args.workdir)
    run.mkdir(parents=True, exist_ok=True)
    result = campaign(Path(args.reference), run, Path(args.preset) if args.preset else None, args.cores, args.grace,
                      args.seed)
    if args.out:
        write_summary(args.out, result)
    log.info("faults survived: %d of %d; mismatches: %s", result["survived"], result["faults"],
             result["mismatches"] or "none")
    if result["mismatches"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
