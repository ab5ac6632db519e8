"""One writer per training run folder.

A job killed together with Snakemake can leave its process running (an orphan after `kill -9`
of Snakemake alone). A second job started with `--rerun-incomplete` would then train into the
same checkpoint folder and log. Each training process therefore holds an exclusive `flock` on
`<run dir>/writer.lock` for its whole life; the kernel releases it when the process dies, however
it dies, so a stale file never blocks anyone. A second writer fails at once, naming the holder.
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path
from types import TracebackType

from pipeline.errors import PipelineError

LOCK_NAME = "writer.lock"


class RunLock:
    """`with RunLock(run_dir): ...` holds the run folder's writer lock (not re-entrant)."""

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            raise PipelineError(f"{self.path}: cannot open the run's writer lock ({exc.strerror})") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise PipelineError(
                f"{self.path.parent}: another training process ({holder}) is writing this run; "
                "wait for it or stop it (an orphan of a killed Snakemake keeps running) before rerunning"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
