"""Reading files in places the Hermes user can write, without being led anywhere else.

Workers are LLM agents with a shell running as the Hermes user, so its home, its config and the
log directory are hostile input to whatever reads them as root (`verify`), and a FIFO or a huge
file there must not hang or exhaust the pass itself. A read here:
- walks the path one directory at a time from a directory descriptor, so no component can be
  swapped for a link between a check and the open; a symbolic link is followed only when root
  owns it and the directory that holds it (as /var/run -> /run or a merged /usr), never a link in
  a directory another user can write;
- opens the last component with O_NOFOLLOW and O_NONBLOCK, and reads it only when it is a regular
  file: never a FIFO, a device, a socket or a directory;
- reads at most `limit` bytes, and refuses a larger file rather than reading part of it.
Anything refused raises UnsafeFile (an OSError) whose message names the path and why.

The config editor (plugins/modules/hermes_yaml_section.py) walks its paths with this same code:
plugins/module_utils/safefile.py is a link to this file, so keep it standard library only and
importable on its own (no relative imports).
"""

from __future__ import annotations

import errno
import os
import stat

LIMIT = 1 << 20  # 1 MiB: far more than any config, crontab or jobs file
MAX_LINKS = 16


class UnsafeFile(OSError):
    """The path was not read: a link another user owns, not a regular file, or too large."""


def _open_dir(parent: int, name: str) -> int:
    return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)


def _root_link(parent: int, name: str, path: str) -> str | None:
    """The target of `name` when it is a link root owns; None when it is no link at all."""
    try:
        info = os.lstat(name, dir_fd=parent)
    except FileNotFoundError:
        return None
    if not stat.S_ISLNK(info.st_mode):
        return None
    if info.st_uid != 0:
        raise UnsafeFile(errno.ELOOP, f"{path}: {name} is a symbolic link of uid {info.st_uid}: not followed")
    folder = os.fstat(parent)
    if folder.st_uid != 0 or folder.st_mode & 0o022:
        # A directory another user can write may hold a root-owned link it did not make (a hard
        # link to one, where fs.protected_hardlinks is off).
        raise UnsafeFile(
            errno.ELOOP, f"{path}: {name} is a symbolic link in a directory root does not own alone"
        )
    return os.readlink(name, dir_fd=parent)


def _walk(text: str, last: str) -> tuple[int, str | None]:
    """Walk the absolute path `text` from / as described above.

    `last` says what becomes of its last component: "dir" opens it as a directory too and returns
    (its descriptor, None); "name" leaves it untouched, not even looked at, and returns (the
    descriptor of the directory that holds it, the name); "file" is "name" after following a link
    root owns there, for the caller to open the name it returns with O_NOFOLLOW."""
    if not os.path.isabs(text):
        raise UnsafeFile(errno.EINVAL, f"{text}: not an absolute path")
    parts = [p for p in text.split("/") if p not in ("", ".")]
    links = 0
    fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        while parts:
            name = parts.pop(0)
            if not parts and last == "name":
                return fd, name
            target = _root_link(fd, name, text) if name != ".." else None
            if target is not None:
                links += 1
                if links > MAX_LINKS:
                    raise UnsafeFile(errno.ELOOP, f"{text}: too many symbolic links")
                if target.startswith("/"):
                    os.close(fd)
                    fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                parts[:0] = [p for p in target.split("/") if p not in ("", ".")]
                continue
            if not parts and last == "file":
                return fd, name
            try:
                child = _open_dir(fd, name)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise UnsafeFile(exc.errno, f"{text}: {name} is not a directory: not followed") from None
                raise OSError(exc.errno, f"{text}: {exc.strerror}") from None
            os.close(fd)
            fd = child
        if last == "dir":
            return fd, None
        raise UnsafeFile(errno.EISDIR, f"{text} is a directory: not read")
    except BaseException:
        os.close(fd)
        raise


def open_dir(path: str | os.PathLike) -> int:
    """A descriptor of the directory at `path` (absolute), every component reached as above."""
    return _walk(os.fspath(path), "dir")[0]


def open_parent(path: str | os.PathLike) -> tuple[int, str]:
    """The descriptor of the directory that holds `path` (absolute), reached as above, and the
    last name of `path`, neither followed nor opened: for a caller that opens, creates or
    replaces that name itself relative to the descriptor (the config editor's atomic rename)."""
    fd, name = _walk(os.fspath(path), "name")
    return fd, name


def open_file(path: str | os.PathLike, flags: int = os.O_RDONLY) -> int:
    """A descriptor of the regular file at `path` (absolute), reached as described above."""
    text = os.fspath(path)
    fd, name = _walk(text, "file")
    try:
        mode = flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
        try:
            handle = os.open(name, mode, dir_fd=fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafeFile(errno.ELOOP, f"{text} is a symbolic link: not followed") from None
            raise OSError(exc.errno, f"{text}: {exc.strerror}") from None
    finally:
        os.close(fd)
    info = os.fstat(handle)
    if not stat.S_ISREG(info.st_mode):
        os.close(handle)
        raise UnsafeFile(errno.EINVAL, f"{text} is not a regular file: not read")
    return handle


def read_bytes(path: str | os.PathLike, limit: int = LIMIT) -> bytes:
    """The whole file, when it is a regular file of at most `limit` bytes."""
    handle = open_file(path)
    try:
        if os.fstat(handle).st_size > limit:
            raise UnsafeFile(errno.EFBIG, f"{os.fspath(path)} is larger than {limit} bytes: not read")
        data = b""
        while len(data) <= limit:
            chunk = os.read(handle, 65536)
            if not chunk:
                return data
            data += chunk
        raise UnsafeFile(errno.EFBIG, f"{os.fspath(path)} grew past {limit} bytes: not read")
    finally:
        os.close(handle)


def read_text(path: str | os.PathLike, limit: int = LIMIT) -> str:
    """The file as text: UTF-8, a byte that is not UTF-8 replaced rather than failing the read."""
    return read_bytes(path, limit).decode("utf-8", "replace")


def read_tail(path: str | os.PathLike, size: int = 65536) -> str:
    """The last `size` bytes of a regular file (a log), as text; its first partial line dropped."""
    handle = open_file(path)
    try:
        length = os.fstat(handle).st_size
        start = max(0, length - size)
        os.lseek(handle, start, os.SEEK_SET)
        data = b""
        while len(data) < size:
            chunk = os.read(handle, size - len(data))
            if not chunk:
                break
            data += chunk
    finally:
        os.close(handle)
    text = data.decode("utf-8", "replace")
    return text.split("\n", 1)[1] if start and "\n" in text else text


def exists(path: str | os.PathLike) -> bool:
    """Whether `path` is a regular file reachable as above (a link or FIFO there is not)."""
    try:
        os.close(open_file(path))
    except OSError:
        return False
    return True
