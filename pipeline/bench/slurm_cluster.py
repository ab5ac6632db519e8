"""A real single-node SLURM (Debian's slurm-wlm + munge) on 127.0.0.1 for integration tests.

Installs the packages if missing, writes slurm.conf/gres.conf (4 fake GPUs whose device files
are symlinks to /dev/null) in a scratch directory, starts munged (unless one runs already),
slurmctld and slurmd, and stops every daemon it started, by PID, in `stop()`.
Clients find the cluster through the SLURM_CONF variable in `env()`. The snakemake job-step
executor strips SLURM_* variables before its nested `srun`, which then reads the default
/etc/slurm/slurm.conf: the config is therefore also installed there for the test's lifetime,
and any existing file is backed up and restored by `stop()`.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from pipeline.io.atomic import pid_alive

PACKAGES = ["slurm-wlm", "slurmctld", "slurmd", "slurm-client", "munge"]


def install_if_missing() -> None:
    if all(shutil.which(t) for t in ("slurmctld", "slurmd", "sbatch", "munged")):
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, capture_output=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", *PACKAGES], check=True, env=env, capture_output=True)


def _meminfo_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise RuntimeError("no MemTotal in /proc/meminfo")


class LocalSlurm:
    def __init__(self, root: Path, gpus: int = 4) -> None:
        self.root = Path(root)
        self.gpus = gpus
        self.conf = self.root / "slurm.conf"
        self.pids: dict[str, int] = {}
        self._installed: list[tuple[Path, Path | None]] = []  # (system path, backup or None)

    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    def _write_config(self) -> None:
        for d in ("state", "spool", "log", "dev"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        host = socket.gethostname()
        devices = []
        for i in range(self.gpus):
            link = self.root / "dev" / f"nvidia{i}"
            if not link.exists():
                link.symlink_to("/dev/null")  # count-only GRES makes the node INVALID; regular files log errors
            devices.append(f"NodeName={host} Name=gpu File={link}")
        (self.root / "gres.conf").write_text("AutoDetect=off\n" + "\n".join(devices) + "\n")
        cpus = os.cpu_count() or 2
        mem = _meminfo_mb() - 1024
        self.conf.write_text(f"""ClusterName=wsss-test
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=2048
GresTypes=gpu
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
MinJobAge=3600
ReturnToService=2
StateSaveLocation={self.root / 'state'}
SlurmdSpoolDir={self.root / 'spool'}
SlurmctldPidFile={self.root / 'slurmctld.pid'}
SlurmdPidFile={self.root / 'slurmd.pid'}
SlurmctldLogFile={self.root / 'log' / 'slurmctld.log'}
SlurmdLogFile={self.root / 'log' / 'slurmd.log'}
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem} Gres=gpu:{self.gpus} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
""")

    def _install_system_config(self) -> None:
        etc = Path("/etc/slurm")
        etc.mkdir(parents=True, exist_ok=True)
        for name in ("slurm.conf", "gres.conf"):
            target = etc / name
            backup = None
            if target.exists() or target.is_symlink():
                backup = self.root / f"{name}.system-backup"
                shutil.move(target, backup)
            self._installed.append((target, backup))
            shutil.copy(self.root / name, target)

    def _restore_system_config(self) -> None:
        while self._installed:
            target, backup = self._installed.pop()
            target.unlink(missing_ok=True)
            if backup is not None:
                shutil.move(backup, target)

    def _start_munge(self) -> None:
        if subprocess.run(["pgrep", "-x", "munged"], capture_output=True).returncode == 0:
            return  # someone else's munged: use it, never stop it
        run_dir = Path("/run/munge")
        run_dir.mkdir(parents=True, exist_ok=True)
        shutil.chown(run_dir, "munge", "munge")
        key = Path("/etc/munge/munge.key")
        if not key.exists():
            subprocess.run(["runuser", "-u", "munge", "--", "mungekey", "--create"], check=True)
        shutil.chown(key, "munge", "munge")
        key.chmod(0o400)
        subprocess.run(["runuser", "-u", "munge", "--", "munged"], check=True)
        pid = self._wait_pidfile(run_dir / "munged.pid")
        self.pids["munged"] = pid

    @staticmethod
    def _wait_pidfile(path: Path, timeout: float = 20) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if path.exists() and path.read_text().strip():
                return int(path.read_text().strip())
            time.sleep(0.1)
        raise RuntimeError(f"{path} did not appear")

    def start(self) -> None:
        install_if_missing()
        self._write_config()
        self._install_system_config()
        self._start_munge()
        check = subprocess.run("munge -n | unmunge", shell=True, capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"munge does not work: {check.stderr}")
        env = dict(os.environ, **self.env())
        subprocess.run(["slurmctld", "-c", "-f", str(self.conf)], check=True, env=env)
        self.pids["slurmctld"] = self._wait_pidfile(self.root / "slurmctld.pid")
        subprocess.run(["slurmd", "-f", str(self.conf)], check=True, env=env)
        self.pids["slurmd"] = self._wait_pidfile(self.root / "slurmd.pid")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, env=env).stdout.strip()
            if state == "idle":
                return
            time.sleep(0.5)
        raise RuntimeError(f"SLURM node not idle after 60 s (state {state!r}); see {self.root / 'log'}")

    def stop(self) -> None:
        for name in ("slurmd", "slurmctld", "munged"):
            pid = self.pids.pop(name, None)
            if pid is None:
                continue
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if not pid_alive(pid):
                    break
                time.sleep(0.1)
            else:
                os.kill(pid, signal.SIGKILL)
        self._restore_system_config()

    def jobs(self) -> list[dict[str, str]]:
        """All jobs the controller still remembers (MinJobAge=3600 keeps finished ones: the whole tiny
        DAG through SLURM takes longer than the default 300 s, which dropped its first jobs)."""
        out = subprocess.run(["scontrol", "show", "job", "-o"], capture_output=True, text=True,
                             env=dict(os.environ, **self.env())).stdout
        jobs = []
        for line in out.splitlines():
            fields = {}
            for token in line.split():
                key, _, value = token.partition("=")
                fields[key] = value
            if "JobId" in fields:
                jobs.append(fields)
        return jobs
