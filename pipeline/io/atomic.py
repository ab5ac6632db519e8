"""Write-to-temp-then-rename, so a killed job never leaves a readable partial output.

Temporaries are named `.<name>.tmp-<host>-<pid>-<random>` beside the target. The next write of
the same target removes those whose writer is gone (same host, process no longer alive), so a
stage killed mid-write leaves nothing behind once it has run again. Finished files get the
permissions the umask allows (mkstemp's own 0600 would hide them from collaborators), and a full
disk is reported as such, naming the path.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from pipeline.errors import PipelineError

_HOST = re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname())
# Too little space left to be a coincidence when a write failed.
_FULL_BYTES = 1 << 20


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def pid_alive(pid: int) -> bool:
    """Whether process `pid` on this host can still act: exists, and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A SIGKILLed writer stays a zombie until its new parent reaps it, and a container's PID 1 may
    # take its time: a zombie writes nothing more, so its temporaries are stale.
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def remove_stale_temporaries(final: Path) -> list[Path]:
    """Delete temporaries of `final` left by writers that died (same host, dead PID); temporaries
    without a writer tag (written before tags existed) count as dead. Returns what was removed."""
    removed = []
    tagged = re.compile(rf"^\.{re.escape(final.name)}\.tmp-(?P<host>.+)-(?P<pid>\d+)-[^-]+$")
    for tmp in final.parent.glob(f".{final.name}.tmp-*"):
        m = tagged.match(tmp.name)
        if m and (m["host"] != _HOST or pid_alive(int(m["pid"]))):
            continue
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def _disk_full(exc: BaseException, where: Path) -> bool:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if isinstance(exc, (OSError, RuntimeError)):  # torch.save reports ENOSPC as "unexpected pos"
        with contextlib.suppress(OSError):
            return shutil.disk_usage(where).free < _FULL_BYTES
    return False


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of `path`; rename it onto `path` only if the block succeeds.

    The temporary lives in the same directory so the final `os.replace` is atomic on POSIX.
    On any exception (including KeyboardInterrupt) the temporary is removed and nothing appears
    at `path`.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(final)
    prefix = f".{final.name}.tmp-{_HOST}-{os.getpid()}-"
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=final.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=prefix, dir=final.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, (0o777 if tmp.is_dir() else 0o666) & ~_umask())
        if is_dir and final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException as exc:
        full = _disk_full(exc, final.parent)
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        if full:
            raise PipelineError(f"{final}: no space left on the device holding {final.parent} "
                                f"({type(exc).__name__}: {exc}); free space and rerun") from exc
        raise


T = TypeVar("T")


def replace_dir(path: str | os.PathLike, write: Callable[[Path], T]) -> T:
    """Regenerate a whole folder: `write(tmp)` fills a temporary sibling, which then replaces
    `path` (an earlier folder there is removed first). Returns what `write` returns."""
    out = Path(path)
    if out.exists():
        shutil.rmtree(out)
    with atomic_path(out, is_dir=True) as tmp:
        return write(tmp)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
