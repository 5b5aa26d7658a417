"""Replace a file whole: a temporary file in its directory, then a rename, so a reader (another
pass, node_exporter, `hermes-pacer status`) sees the old file or the new one, never half of one.
Neither the temporary nor the old file is followed if it is a link."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def write(path: Path, data: bytes, mode: int) -> None:
    """Replace `path` with `data`, of `mode` whatever the umask; OSError, with nothing left
    behind, when it cannot be written."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temp)  # left by a process of the same pid that was killed mid-write
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
