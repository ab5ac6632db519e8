"""Give each concurrent GPU job its own physical GPUs.

`snakemake --resources gpu=4` only counts GPUs; it never tells a job *which* ones to use
(snakemake issue #281), so two jobs would both land on GPU 0. A job therefore leases N ids
from a pool: one lock file per id in a shared directory, locked with `flock(LOCK_EX|LOCK_NB)`
on a file descriptor held for the job's lifetime. The kernel drops the lock when the process
exits for any reason (including SIGKILL or an OOM kill), so a crashed job never leaks a GPU.
The lease then narrows `CUDA_VISIBLE_DEVICES` to the leased ids, which only works before CUDA
is initialised in this process: take the lease first thing in a stage's `main`.

Pool resolution (first match wins):
  * `SLURM_JOB_ID` set: SLURM already assigned GPUs; nothing is leased and the allocation's
    `CUDA_VISIBLE_DEVICES` is used as is.
  * `WSSS_GPU_POOL` (comma list, e.g. "0,1,2,3"; set but empty means no GPUs).
  * `CUDA_VISIBLE_DEVICES` (the ids the whole Snakemake run may use).
  * every GPU the NVIDIA driver reports.
An empty pool (CPU machine) makes leasing a no-op.

This module deliberately does not import torch at module level: `torch.cuda` calls would
initialise the driver and freeze the device list before the lease narrows it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from pipeline.errors import PipelineError

log = logging.getLogger(__name__)

LOCK_DIR_ENV = "WSSS_GPU_LOCK_DIR"
POOL_ENV = "WSSS_GPU_POOL"
WAIT_LIMIT_ENV = "WSSS_GPU_WAIT_LIMIT"
DEFAULT_LOCK_DIR = "/tmp/wsss-gpu-locks"


def _split_ids(value: str) -> list[str]:
    ids = [part.strip() for part in value.split(",") if part.strip()]
    # "-1" (or any negative id) is the conventional way to hide all GPUs.
    if ids and ids[0].startswith("-"):
        return []
    return ids


def _count_gpus_nvml() -> int | None:
    """Count GPUs through NVML, which (unlike the CUDA runtime) does not pin the device list."""
    try:
        nvml = ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return None
    if nvml.nvmlInit_v2() != 0:
        return None
    try:
        count = ctypes.c_uint(0)
        if nvml.nvmlDeviceGetCount_v2(ctypes.byref(count)) != 0:
            return None
        return int(count.value)
    finally:
        nvml.nvmlShutdown()


def _count_gpus_subprocess() -> int:
    # Last resort: ask torch in a child process so this process's CUDA state stays untouched.
    code = "import torch; print(torch.cuda.device_count())"
    try:
        out = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        return int(out.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return 0


def _physical_gpu_count() -> int:
    import torch  # local: see module docstring

    if torch.version.cuda is None and getattr(torch.version, "hip", None) is None:
        return 0  # CPU-only torch build: no GPU can be used anyway
    count = _count_gpus_nvml()
    return count if count is not None else _count_gpus_subprocess()


def under_slurm() -> bool:
    return bool(os.environ.get("SLURM_JOB_ID"))


def resolve_pool() -> list[str]:
    """The GPU ids this job may lease from (see module docstring); [] on a CPU machine."""
    if POOL_ENV in os.environ:
        return _split_ids(os.environ[POOL_ENV])
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        return _split_ids(os.environ["CUDA_VISIBLE_DEVICES"])
    return [str(i) for i in range(_physical_gpu_count())]


def default_lock_dir() -> Path:
    return Path(os.environ.get(LOCK_DIR_ENV) or DEFAULT_LOCK_DIR)


def _lock_file(lock_dir: Path, gpu_id: str) -> Path:
    # MIG/UUID ids may contain '/', which is not allowed in a file name.
    return lock_dir / f"gpu-{gpu_id.replace('/', '_')}.lock"


def _prepare_lock_dir(lock_dir: Path) -> None:
    """Create the shared lock folder world-writable with the sticky bit (like /tmp), so every user
    of a shared workstation can add lock files and nobody can delete another's."""
    try:
        if not lock_dir.is_dir():
            lock_dir.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(PermissionError):
                os.chmod(lock_dir, 0o1777)
    except OSError as exc:
        raise PipelineError(f"GPU lock folder {lock_dir} ({LOCK_DIR_ENV}): cannot use it as a folder "
                            f"({exc.strerror}); point {LOCK_DIR_ENV} at a folder every GPU job can write") from exc


def _open_lock(path: Path) -> int:
    """A descriptor to flock `path`: read-write, created 0666 whatever the umask (other users must
    open it too); read-only where another user's file is not writable (flock works either way)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except PermissionError:
        try:
            return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise PipelineError(f"GPU lock file {path}: cannot open it ({exc.strerror})") from exc
    except OSError as exc:
        raise PipelineError(f"GPU lock file {path}: cannot open it ({exc.strerror})") from exc
    with contextlib.suppress(PermissionError):
        if os.fstat(fd).st_uid == os.getuid():
            os.fchmod(fd, 0o666)
    return fd


def wait_limit() -> float | None:
    """Seconds a job waits for a free GPU before failing: $WAIT_LIMIT_ENV, unset = no limit."""
    value = os.environ.get(WAIT_LIMIT_ENV, "").strip()
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        raise PipelineError(f"{WAIT_LIMIT_ENV}={value!r}: not a number of seconds") from None


def lock_holders(lock_dir: str | os.PathLike | None = None) -> dict[str, str]:
    """Diagnostic view: {lock file name: holder info} for every currently held lock."""
    lock_dir = Path(lock_dir) if lock_dir is not None else default_lock_dir()
    held: dict[str, str] = {}
    for path in sorted(lock_dir.glob("gpu-*.lock")):
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                fcntl.flock(fd, fcntl.LOCK_UN)  # free: the content is stale
                continue
            except OSError:
                pass
            held[path.name] = path.read_text().strip() or "held (no holder recorded)"
        finally:
            os.close(fd)
    return held


class GpuLease:
    """Hold `n` distinct GPUs of the pool for the lifetime of this object (or process).

    Usage (first thing in a stage, before anything touches CUDA)::

        with GpuLease(cfg_gpus):
            device = select_device(cfg["runtime"]["device"])
            ...

    `ids` lists the leased (physical) ids; under SLURM it lists the allocation's ids and with
    an empty pool it is []. An explicit `pool` argument is always leased from, even under
    SLURM (only the environment-derived pool defers to SLURM). While held, `CUDA_VISIBLE_DEVICES` is set to the leased ids; release
    restores the previous value.
    """

    def __init__(
        self,
        n: int = 1,
        pool: list[str] | list[int] | None = None,
        lock_dir: str | os.PathLike | None = None,
        timeout: float | None = None,
        poll: float = 0.5,
    ) -> None:
        if n < 0:
            raise PipelineError(f"resources.gpu: cannot lease a negative number of GPUs ({n})")
        self.n = n
        self._pool_arg = None if pool is None else [str(p) for p in pool]
        self.lock_dir = Path(lock_dir) if lock_dir is not None else default_lock_dir()
        self.timeout = timeout
        self.poll = poll
        self.ids: list[str] = []
        self._fds: list[int] = []
        self._saved_env: str | None = None
        self._env_set = False

    # -- public ---------------------------------------------------------------------------------
    @property
    def held(self) -> bool:
        return bool(self._fds)

    def acquire(self) -> list[str]:
        if self._fds or self._env_set:
            raise RuntimeError("GpuLease.acquire() called twice")
        if self._pool_arg is None and under_slurm():
            self.ids = _split_ids(os.environ.get("CUDA_VISIBLE_DEVICES", ""))
            log.info(
                "SLURM job %s: using allocated GPUs %s without leasing",
                os.environ["SLURM_JOB_ID"],
                ",".join(self.ids) or "(none)",
            )
            return self.ids
        pool = self._pool_arg if self._pool_arg is not None else resolve_pool()
        if self.n == 0 or not pool:
            if self.n and not pool:
                log.info("no GPU pool (CPU machine): GPU lease of %d is a no-op", self.n)
            return []
        if self.n > len(pool):
            raise PipelineError(
                f"resources.gpu: job asks for {self.n} GPUs but the pool has only {len(pool)} "
                f"({','.join(pool)}; set {POOL_ENV} or CUDA_VISIBLE_DEVICES)"
            )
        _prepare_lock_dir(self.lock_dir)
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        next_report = 0.0
        while True:
            got = self._try_acquire(pool)
            if got:
                break
            if deadline is not None and time.monotonic() >= deadline:
                holders = lock_holders(self.lock_dir)
                raise PipelineError(
                    f"timed out after {self.timeout}s waiting for {self.n} free GPU(s) from pool "
                    f"{','.join(pool)} in lock dir {self.lock_dir} ({LOCK_DIR_ENV}); "
                    f"holders: {holders or 'none'}"
                )
            if time.monotonic() >= next_report:  # at once, then every minute, naming the holders
                log.info(
                    "waiting for %d free GPU(s) from pool %s (lock dir %s; limit %s, %s); held by: %s",
                    self.n,
                    ",".join(pool),
                    self.lock_dir,
                    "none" if self.timeout is None else f"{self.timeout:g}s",
                    WAIT_LIMIT_ENV,
                    lock_holders(self.lock_dir) or "nobody (retrying)",
                )
                next_report = time.monotonic() + 60
            time.sleep(self.poll)
        self._saved_env = os.environ.get("CUDA_VISIBLE_DEVICES")
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(self.ids)
        self._env_set = True
        _warn_if_cuda_initialised()
        log.info("leased GPU(s) %s (pid %d, lock dir %s)", ",".join(self.ids), os.getpid(), self.lock_dir)
        return self.ids

    def release(self) -> None:
        for fd in self._fds:
            try:
                os.ftruncate(fd, 0)  # so a stale file never names a dead holder
            except OSError:
                pass
            os.close(fd)  # closing the last fd of the open file description drops the flock
        if self._fds:
            log.info("released GPU(s) %s", ",".join(self.ids))
        self._fds = []
        if self._env_set:
            if self._saved_env is None:
                os.environ.pop("CUDA_VISIBLE_DEVICES", None)
            else:
                os.environ["CUDA_VISIBLE_DEVICES"] = self._saved_env
            self._env_set = False
        self.ids = []

    def __enter__(self) -> GpuLease:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    # -- internals ------------------------------------------------------------------------------
    def _try_acquire(self, pool: list[str]) -> bool:
        """One pass over the pool. All-or-nothing: a partial grab is returned at once so that
        two multi-GPU jobs can never deadlock each holding half of what the other needs."""
        fds: list[int] = []
        ids: list[str] = []
        for gpu_id in pool:
            fd = _open_lock(_lock_file(self.lock_dir, gpu_id))
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    continue
                raise
            fds.append(fd)
            ids.append(gpu_id)
            if len(fds) == self.n:
                break
        if len(fds) < self.n:
            for fd in fds:
                os.close(fd)
            return False
        info = f"pid={os.getpid()} host={socket.gethostname()} since={time.strftime('%Y-%m-%dT%H:%M:%S')}\n"
        for fd in fds:
            with contextlib.suppress(OSError):  # a read-only fd (another user's file) still locks
                os.ftruncate(fd, 0)
                os.pwrite(fd, info.encode(), 0)
        self._fds, self.ids = fds, ids
        return True


def _warn_if_cuda_initialised() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        log.warning(
            "CUDA was initialised before the GPU lease: CUDA_VISIBLE_DEVICES=%s has no effect in "
            "this process (take the lease before touching torch.cuda)",
            os.environ.get("CUDA_VISIBLE_DEVICES"),
        )
