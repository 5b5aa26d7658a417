"""Per-board non-blocking locks in a directory only the pacer's user (or root) can write.

/run/lock is world-writable, so the directory is checked after creation: owned by us or root,
writable by nobody else. A lock file is never followed through a symlink.
"""

from __future__ import annotations

import fcntl
import os
import stat
import time
from pathlib import Path


class LockDirUnsafe(RuntimeError):
    pass


def ensure_dir(path: Path) -> None:
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise LockDirUnsafe(f"cannot create lock directory {path}: {exc.strerror}") from exc
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise LockDirUnsafe(f"lock directory {path} is not a directory")
    if info.st_uid not in (0, os.geteuid()):
        raise LockDirUnsafe(f"lock directory {path} is owned by uid {info.st_uid}, not by us or root")
    if info.st_mode & 0o022:
        raise LockDirUnsafe(f"lock directory {path} is writable by group or others")


def try_lock(path: Path) -> int | None:
    """An fd holding an exclusive lock on `path`, or None when another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def lock_within(path: Path, seconds: float, poll: float = 0.05) -> int | None:
    """Like try_lock, waiting up to `seconds` for another holder to let go."""
    deadline = time.monotonic() + seconds
    while True:
        fd = try_lock(path)
        if fd is not None or time.monotonic() >= deadline:
            return fd
        time.sleep(poll)
