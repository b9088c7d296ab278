"""One writer per run directory: an advisory lock on RUN_DIR/.lock.

POSIX `flock` is tied to the open file, so the kernel releases it when the holder exits for
any reason (Ctrl-C, SIGKILL, power loss): a stale lock file never blocks a resume. Where
`fcntl` is missing (Windows) the lock is an exclusive-create file holding the owner's pid.
"""
from __future__ import annotations

import errno
import json
import os
import stat
import time
from pathlib import Path

from ..errors import UserError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None


class RunLocked(UserError, RuntimeError):
    """Another process holds the run directory."""


def _owner(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
        return f" (pid {info.get('pid')}, started {info.get('started')})"
    except (OSError, ValueError):
        return ""


class RunLock:
    """Context manager: `with RunLock(run_dir): ...` raises RunLocked if another run holds it."""

    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir)
        self.path = self.dir / ".lock"
        self._fd: int | None = None

    def _message(self) -> str:
        return (f"{self.dir}: another `cdlbench run` is using this run directory{_owner(self.path)}; "
                f"wait for it to finish or pass a different --out")

    def acquire(self) -> "RunLock":
        from .rundir import UnsafeRunFile

        try:
            return self._acquire()
        except (RunLocked, UnsafeRunFile):
            raise
        except OSError as exc:     # read-only, a path component that is a file, a full disk
            from .rundir import RunDirUnwritable
            raise RunDirUnwritable.from_os_error(exc.filename or self.path, exc) from None

    def _acquire(self) -> "RunLock":
        self.dir.mkdir(parents=True, exist_ok=True)
        if fcntl is None:  # pragma: no cover - Windows fallback
            try:
                self._fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                raise RunLocked(self._message()) from None
        else:
            from .rundir import check_regular, UnsafeRunFile

            check_regular(self.path, follow=False)       # a planted link or FIFO: UnsafeRunFile (exit 2)
            try:       # never through a link (its target would be truncated), never waiting on a FIFO
                fd = os.open(self.path, os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENXIO):
                    check_regular(self.path, follow=False)
                raise
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                raise UnsafeRunFile(f"{self.path}: not a regular file; move it away, or pass a different --out")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise RunLocked(self._message()) from None
            self._fd = fd
            os.ftruncate(fd, 0)
        stamp = json.dumps({"pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S")})
        os.write(self._fd, stamp.encode())
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        if fcntl is None:  # pragma: no cover - Windows fallback
            os.close(self._fd)
            self.path.unlink(missing_ok=True)
        else:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> bool:
        self.release()
        return False
