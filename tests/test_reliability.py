"""Reliability: forced reruns retrain, stale user data is noticed, one writer per run, early and
clear errors, no leftovers, artifacts that honour the umask."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pipeline.errors import PipelineError
from pipeline.io.atomic import atomic_path, write_text_atomic
from pipeline.runtime.lease import GpuLease
from pipeline.runtime.runlock import RunLock
from pipeline.stages.index_dataset import main as index_main
from pipeline.stages.train_cam import main as train_cam_main
from tests.conftest import REPO, tiny_config, tool_env, workdir


def _voc_config(root: Path) -> dict:
    cfg = tiny_config()
    cfg["dataset"] = {"kind": "voc", "root": str(root), "split_dir": None,
                      "splits": {"train": "train", "eval": "train", "val": "val", "decoupled": None}}
    return cfg


def _index(cfg: dict, out: Path) -> None:
    slice_ = {"dataset": cfg["dataset"], "cam": {"batch_size": cfg["cam"]["batch_size"]}}
    index_main(["--cfg", json.dumps(slice_), "--out", str(out)])


def _train_cam(cfg: dict, index: Path, run: Path, *extra: str) -> None:
    train_cam_main(["--cfg", json.dumps(cfg), "--index", str(index), "--threads", "1", *extra,
                    "--out", str(run / "model_final.pth"), "--ckpt-dir", str(run / "ckpt"),
                    "--metrics", str(run / "metrics.csv")])


@pytest.fixture(scope="module")
def voc_copy(tiny_synthetic, tmp_path_factory):
    root = tmp_path_factory.mktemp("voc") / "VOC2012"
    shutil.copytree(tiny_synthetic, root)
    return root


# 1. A forced rerun retrains from scratch; only an interrupted run resumes.
def test_rerun_of_a_finished_run_trains_from_scratch(voc_copy, tmp_path, capsys):
    cfg = _voc_config(voc_copy)
    cfg["cam"].update(epochs=1, ckpt_every=2)
    _index(cfg, tmp_path / "index.json")
    run = tmp_path / "run"
    _train_cam(cfg, tmp_path / "index.json", run)
    first = (run / "metrics.csv").read_text()
    capsys.readouterr()
    _train_cam(cfg, tmp_path / "index.json", run)
    text = capsys.readouterr().err
    assert "resumed" not in text and "training from scratch" in text
    assert (run / "metrics.csv").read_text().splitlines()[1].startswith("0,")  # iterations redone
    assert (run / "ckpt" / "complete").exists()
    # An interrupted run (no completion mark) still resumes.
    (run / "ckpt" / "complete").unlink()
    _train_cam(cfg, tmp_path / "index.json", run)
    assert "resumed" in capsys.readouterr().err
    assert len(first.splitlines()) == len((run / "metrics.csv").read_text().splitlines())


# 2. A change of the user's data files or split lists reruns index_dataset.
def test_changed_user_data_reruns_the_index(voc_copy, tmp_path):
    root = tmp_path / "VOC2012"
    shutil.copytree(voc_copy, root)
    work = workdir(tmp_path / "work")
    preset = work / "voc.yaml"
    preset.write_text(json.dumps({"dataset": _voc_config(root)["dataset"]}))
    env = tool_env()

    def smk(*args):
        return subprocess.run(["snakemake", "results/dataset/index.json", "--configfile", str(preset),
                               "--directory", str(work), *args], capture_output=True, text=True, cwd=REPO, env=env)

    assert smk("--cores", "1").returncode == 0
    assert "Nothing to be done" in smk("-n").stdout
    masks = root / "SegmentationClassAug"
    victim = sorted(masks.glob("*.png"))[0]
    time.sleep(0.01)
    shutil.copy(sorted(masks.glob("*.png"))[1], victim)  # a mask replaced in place
    assert "index_dataset" in smk("-n").stdout
    assert smk("--cores", "1").returncode == 0
    with open(root / "ImageSets/Segmentation/train.txt", "a") as fh:
        fh.write("no_such_image\n")  # an id appended to a split list
    dry = smk("-n")
    assert "index_dataset" in dry.stdout
    failed = smk("--cores", "1")
    assert failed.returncode != 0 and "no_such_image" in (work / "logs/index_dataset/index_dataset.log").read_text()


# 3. Empty split lists and splits smaller than a batch fail at index_dataset, naming the list.
def test_empty_and_too_small_split_lists_name_the_file(voc_copy, tmp_path, capsys):
    root = tmp_path / "VOC2012"
    shutil.copytree(voc_copy, root)
    lists = root / "ImageSets/Segmentation"
    cfg = _voc_config(root)
    (lists / "val.txt").write_text("")
    with pytest.raises(SystemExit):
        _index(cfg, tmp_path / "index.json")
    err = capsys.readouterr().err
    assert f"{lists / 'val.txt'}" in err and "empty" in err
    shutil.copy(voc_copy / "ImageSets/Segmentation/val.txt", lists / "val.txt")
    (lists / "train.txt").write_text("".join(f"{i}\n" for i in (lists / "val.txt").read_text().split()[:3]))
    with pytest.raises(SystemExit):
        _index(cfg, tmp_path / "index.json")
    err = capsys.readouterr().err
    assert f"{lists / 'train.txt'}" in err and "cam.batch_size" in err
    assert not (tmp_path / "index.json").exists()


# 4. One writer per run folder.
def test_second_writer_of_a_run_folder_fails_naming_the_holder(voc_copy, tmp_path, capsys):
    cfg = _voc_config(voc_copy)
    _index(cfg, tmp_path / "index.json")
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pipeline.runtime.runlock import RunLock\n"
        f"l = RunLock({str(run / 'ckpt')!r}); l.acquire(); print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True, env=tool_env())
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(SystemExit) as exc:
            _train_cam(cfg, tmp_path / "index.json", run)
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert f"pid {holder.pid}" in err and "another training process" in err
        assert not (run / "model_final.pth").exists()
    finally:
        holder.kill()
        holder.wait()
    with RunLock(run / "ckpt"):  # the kernel dropped the dead holder's lock
        pass


# 5. A killed writer's temporaries are removed by the next write of the same artifact.
def test_next_write_removes_a_killed_writers_temporaries(tmp_path):
    target = tmp_path / "cams.h5"
    legacy = tmp_path / ".cams.h5.tmp-abc123"  # the pre-tag format
    legacy.write_text("partial")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    import socket
    host = socket.gethostname()
    orphan = tmp_path / f".cams.h5.tmp-{host}-{pid}-zz9"
    orphan.write_text("partial")
    alive = tmp_path / f".cams.h5.tmp-{host}-{os.getpid()}-live"
    alive.write_text("being written")
    other = tmp_path / ".other.h5.tmp-x"
    other.write_text("not ours")
    write_text_atomic(target, "done")
    assert target.read_text() == "done"
    assert not legacy.exists() and not orphan.exists() and alive.exists() and other.exists()


def test_killed_stage_leaves_a_temporary_that_the_rerun_removes(tmp_path):
    script = ("import time; from pipeline.io.atomic import atomic_path\n"
              f"with atomic_path({str(tmp_path / 'x.h5')!r}) as t:\n"
              "    open(t, 'w').write('part'); print('writing', flush=True); time.sleep(60)\n")
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=tool_env())
    assert p.stdout.readline().strip() == "writing"
    p.kill()
    p.wait()
    assert len(list(tmp_path.glob(".x.h5.tmp-*"))) == 1
    write_text_atomic(tmp_path / "x.h5", "whole")
    assert list(tmp_path.glob(".x.h5.tmp-*")) == []


# 6. Late or unclear errors: full disk, lock folder that is a file, lease waiting with a limit.
@pytest.fixture
def tiny_disk(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=True)  # lazy: a traceback may hold a handle


def test_full_disk_is_named(tiny_disk):
    from pipeline.runtime.checkpoint import save_final

    with pytest.raises(PipelineError, match="no space left") as exc:
        save_final(tiny_disk / "model_final.pth", {"w": torch.zeros(256, 256)})
    assert str(tiny_disk / "model_final.pth") in str(exc.value)
    with pytest.raises(PipelineError, match="no space left"):
        write_text_atomic(tiny_disk / "index.json", "x" * (1 << 20))
    assert list(tiny_disk.iterdir()) == []


def test_lock_dir_that_is_a_file_is_named(tmp_path, monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    bad = tmp_path / "locks"
    bad.write_text("")
    with pytest.raises(PipelineError, match=f"{bad}.*WSSS_GPU_LOCK_DIR"):
        GpuLease(1, pool=["0"], lock_dir=bad).acquire()


def test_lease_wait_names_the_holder_and_honours_the_limit(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.setenv("WSSS_GPU_WAIT_LIMIT", "0.3")
    from pipeline.runtime.lease import wait_limit

    with GpuLease(1, pool=["0"], lock_dir=tmp_path):
        with caplog.at_level("INFO"), pytest.raises(PipelineError, match="timed out after 0.3s") as exc:
            GpuLease(1, pool=["0"], lock_dir=tmp_path, timeout=wait_limit(), poll=0.05).acquire()
        assert f"pid={os.getpid()}" in str(exc.value)
        assert f"pid={os.getpid()}" in caplog.text and "WSSS_GPU_WAIT_LIMIT" in caplog.text
    monkeypatch.setenv("WSSS_GPU_WAIT_LIMIT", "soon")
    with pytest.raises(PipelineError, match="WSSS_GPU_WAIT_LIMIT"):
        wait_limit()


# 7. Artifacts honour the umask.
def test_artifacts_honour_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "index.json", "{}")
        with atomic_path(tmp_path / "pred_png", is_dir=True) as d:
            (d / "a.png").write_bytes(b"")
    finally:
        os.umask(old)
    assert (tmp_path / "index.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "pred_png").stat().st_mode & 0o777 == 0o755


def test_a_killed_writer_not_yet_reaped_leaves_stale_temporaries(tmp_path):
    """A SIGKILLed writer stays a zombie until reaped (a killed Snakemake's orphans wait for PID 1):
    it writes nothing more, so the next write removes its temporary."""
    import signal

    from pipeline.io.atomic import _HOST

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        child.send_signal(signal.SIGKILL)
        stat = Path(f"/proc/{child.pid}/stat")
        for _ in range(500):  # not waited for: a zombie until reaped
            if stat.read_text().rsplit(")", 1)[1].split()[0] == "Z":
                break
            time.sleep(0.01)
        tmp = tmp_path / f".cams.h5.tmp-{_HOST}-{child.pid}-zz9"
        tmp.write_text("partial")
        write_text_atomic(tmp_path / "cams.h5", "done")
        assert not tmp.exists()
    finally:
        child.wait()
