#!/usr/bin/python
"""Ansible module: set and unset scalar keys of one top-level mapping of a YAML file, keeping
every other byte of the file as it was.

`hermes config set` rewrites config.yaml and drops every comment, so the roles edit it here. The
module runs as root, but config.yaml and its directory belong to the Hermes user, whose workers are
LLM agents with a shell: the file is hostile input. So:
- the path is walked one directory at a time (module_utils/safefile.py, the walk the pacer's
  verify uses) and the file opened with O_NOFOLLOW | O_NONBLOCK relative to its directory's
  descriptor: a symbolic link, a FIFO, a device, a directory or a file over 1 MiB fails the task
  before a byte of it is read or printed;
- the edit is a splice of the text at the positions ruamel.yaml's parser gives (comments, quoting,
  key order, a BOM and CRLF line ends outside the edited keys stay byte for byte), then proved by
  parsing the old and the new text with PyYAML (what Hermes reads config.yaml with) and comparing
  the data with exactly the asked edits;
- the new file is written beside the old one through the directory's descriptor, given the old
  file's owner, group and mode before it is renamed over it: the config is never replaced by a
  file owned otherwise, and a failure leaves the original untouched;
- the backup (it holds API keys) goes to a root-only directory, and --diff hides the values of
  secret-looking keys.
"""

from __future__ import annotations

DOCUMENTATION = r"""
module: hermes_yaml_section
short_description: Edit scalar keys of one top-level mapping of a YAML file, keeping every other byte
description:
  - Sets and unsets scalar keys of one top-level mapping (for example C(kanban)) of a YAML file.
    Every byte outside the keys it sets or removes is kept (comments, quoting, key order,
    indentation, other sections, a UTF-8 BOM and CRLF line ends). A key is the same key however it
    is quoted, so no key is ever written twice. A mapping written in flow style
    (braces) is edited in place and stays in flow style.
  - The result is parsed and compared with the intended data before anything is written; a file
    that is not valid YAML, or whose edit would change more than asked, fails the task and is left
    untouched.
  - The file belongs to another user. It is opened without following a symbolic link (O_NOFOLLOW,
    relative to its directory's descriptor, walked from C(/)); a link, a FIFO, a device, a socket,
    a directory or a file over 1 MiB fails the task, naming the path, without reading it.
  - The new text is written to a temporary file in the same directory, given the original's owner,
    group and mode, synced, and renamed over the original. Check mode and diff mode are supported;
    the diff replaces the values of secret-looking keys (api_key, apikey, token, secret, password,
    passwd, in any case, anywhere in the file) with C(<redacted>).
options:
  path: {description: "The YAML file (absolute; the directory that holds it must exist).", type: path, required: true}
  section: {description: Top-level key of the mapping to edit., type: str, required: true}
  set: {description: "Scalar keys to set in the mapping (strings, numbers, booleans or null).", type: dict, default: {}}
  unset: {description: Keys to remove from the mapping., type: list, elements: str, default: []}
  known: {description: "Keys the installed Hermes reads in this mapping; others are warned about. Empty: no check.", type: list, elements: str, default: []}
  unset_unknown: {description: Remove the keys that are not in C(known)., type: bool, default: false}
  create: {description: Create the file when it is missing., type: bool, default: false}
  backup: {description: Keep a copy of the file before changing it (in C(backup_dir))., type: bool, default: true}
  backup_dir: {description: "Where backups go: a directory only root can write (created 0700 when missing). Each backup is a root-only 0600 file named after the edited path and the time.", type: path, default: /var/backups/hermes-pacer}
  owner: {description: "Owner (name or uid) of the file when the module creates it. An existing file keeps its owner. Default: the user the module runs as.", type: str}
  group: {description: "Group (name or gid) of the file when the module creates it. An existing file keeps its group. Default: the group of that user.", type: str}
  mode: {description: "Octal mode (C('0600')) of the file when the module creates it. An existing file keeps its mode. Default: 0600, the file holds API keys.", type: raw}
"""

RETURN = r"""
removed: {description: "Keys removed, with the values they had (secret-looking values shown as <redacted>).", type: dict, returned: always}
unknown: {description: Keys of the mapping the installed Hermes ignores., type: list, returned: always}
keys: {description: Keys of the mapping after the edit., type: list, returned: always}
path: {description: The edited file., type: str, returned: always}
backup_file: {description: "Path of the backup (root-only, in backup_dir).", type: str, returned: changed and backup and the file existed}
"""

import contextlib
import errno
import json
import os
import re
import stat
import time

try:
    import yaml

    HAS_YAML = True
except ImportError:  # reported by the module with the package to install
    HAS_YAML = False

try:
    from ruamel.yaml import YAML
    from ruamel.yaml.nodes import MappingNode, ScalarNode, SequenceNode

    HAS_RUAMEL = True
except ImportError:  # reported by the module with the package to install
    HAS_RUAMEL = False

from ansible.module_utils.basic import AnsibleModule

# The no-follow path walk the pacer's verify uses too: one source, linked into module_utils.
from ansible_collections.hermes_pacer.pacer.plugins.module_utils.safefile import (
    UnsafeFile,
    open_dir,
    open_parent,
)

LIMIT = 1 << 20  # 1 MiB: far more than any Hermes config
# Once aliases are expanded a small file can stand for a huge tree ("billion laughs"); comparing
# such data would run root's converge out of time or memory.
MAX_NODES = 200_000
BOM = "\ufeff"
LINE_BREAK = re.compile(r"\r\n|\r|\n")
SECRET_KEY = re.compile(r"api[_-]?key|token|secret|passw(?:or)?d", re.IGNORECASE)
REDACTED = "<redacted>"


class EditError(ValueError):
    """The file cannot be edited safely; nothing was written."""


# --- Opening and writing without following what the Hermes user controls -----------------------


def _kind(mode):
    for test, name in (
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a directory"),
    ):
        if test(mode):
            return name
    return "not a regular file"


class Target:
    """The file to edit: its directory's descriptor, its name there, and what it held."""

    def __init__(self, path):
        self.path = path
        self.dir_fd, self.name = open_parent(path)
        self.info = None  # os.stat_result of the file when it exists
        self.data = None  # its bytes when it exists
        try:
            self._read()
        except BaseException:
            os.close(self.dir_fd)
            raise

    def _read(self):
        try:
            seen = os.stat(self.name, dir_fd=self.dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        # Checked before the open too: opening a device can have effects of its own.
        if not stat.S_ISREG(seen.st_mode):
            raise UnsafeFile(
                errno.EINVAL, f"{self.path} is {_kind(seen.st_mode)}, not a regular file: not read"
            )
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
        try:
            fd = os.open(self.name, flags, dir_fd=self.dir_fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafeFile(errno.ELOOP, f"{self.path} is a symbolic link: not followed") from None
            raise OSError(exc.errno, f"{self.path}: {exc.strerror}") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise UnsafeFile(
                    errno.EINVAL, f"{self.path} is {_kind(info.st_mode)}, not a regular file: not read"
                )
            if info.st_nlink > 1:
                # Another name of the same file may be anywhere on this file system: a hard link
                # the Hermes user made to a root file (where fs.protected_hardlinks is off).
                raise UnsafeFile(errno.EMLINK, f"{self.path} has {info.st_nlink} hard links: not read")
            if info.st_size > LIMIT:
                raise UnsafeFile(errno.EFBIG, f"{self.path} is larger than {LIMIT} bytes (1 MiB): not read")
            data = b""
            while len(data) <= LIMIT:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                data += chunk
            if len(data) > LIMIT:
                raise UnsafeFile(errno.EFBIG, f"{self.path} grew past {LIMIT} bytes (1 MiB): not read")
        finally:
            os.close(fd)
        self.info, self.data = info, data

    def close(self):
        os.close(self.dir_fd)

    def _still_the_same(self):
        """Whether the name still holds the file that was read (or still nothing)."""
        try:
            now = os.stat(self.name, dir_fd=self.dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return self.info is None
        return self.info is not None and (now.st_dev, now.st_ino) == (self.info.st_dev, self.info.st_ino)

    def replace(self, content, uid, gid, mode):
        """Write `content` as the file, owned uid:gid with `mode`, atomically; or raise and leave
        the original as it was."""
        temp = f".{self.name}.hermes-pacer-{os.getpid()}-{os.urandom(4).hex()}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(temp, flags, 0o600, dir_fd=self.dir_fd)
        placed = False
        try:
            try:
                view = memoryview(content)
                while view:
                    view = view[os.write(fd, view) :]
                os.fchown(fd, uid, gid)
                os.fchmod(fd, mode)  # after fchown, which clears set-id bits
                os.fsync(fd)
            finally:
                os.close(fd)
            if not self._still_the_same():
                raise OSError(errno.EAGAIN, f"{self.path} was replaced while being edited: not written")
            if self.info is None:
                # link(), unlike rename(), never replaces a file made meanwhile.
                os.link(
                    temp, self.name, src_dir_fd=self.dir_fd, dst_dir_fd=self.dir_fd, follow_symlinks=False
                )
                placed = True
                os.unlink(temp, dir_fd=self.dir_fd)
            else:
                os.rename(temp, self.name, src_dir_fd=self.dir_fd, dst_dir_fd=self.dir_fd)
                placed = True
            os.fsync(self.dir_fd)
        except BaseException:
            if not placed or self.info is None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temp, dir_fd=self.dir_fd)
            raise


def _root_only_dir(path):
    """A descriptor of `path`, created 0700 when missing, refused unless only root can write it."""
    path = os.path.abspath(path)
    try:
        fd = open_dir(path)
    except FileNotFoundError:
        os.makedirs(path, mode=0o700, exist_ok=True)
        fd = open_dir(path)
    info = os.fstat(fd)
    if info.st_uid != os.geteuid() or info.st_mode & 0o022:
        os.close(fd)
        raise UnsafeFile(
            errno.EPERM,
            f"backup_dir {path}: owned by uid {info.st_uid} with mode {stat.S_IMODE(info.st_mode):04o};"
            f" it must be a directory only uid {os.geteuid()} can write",
        )
    return fd


def write_backup(backup_dir, path, data):
    """Copy `data` (the file as it was) to a new 0600 file in backup_dir; return its path."""
    dir_fd = _root_only_dir(backup_dir)
    try:
        stem = path.strip("/").replace("/", "_") + "." + time.strftime("%Y-%m-%d@%H:%M:%S")
        for attempt in range(100):
            name = f"{stem}~" if attempt == 0 else f"{stem}.{attempt}~"
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            try:
                fd = os.open(name, flags, 0o600, dir_fd=dir_fd)
            except FileExistsError:
                continue
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            return os.path.join(backup_dir, name)
        raise OSError(errno.EEXIST, f"backup_dir {backup_dir}: no free name for a backup of {path}")
    finally:
        os.close(dir_fd)


# --- Parsing -------------------------------------------------------------------------------------


def _where(exc):
    """A parse error as its problem and position only: never the excerpt of the file YAML errors
    quote, which may hold an API key."""
    problem = getattr(exc, "problem", None) or getattr(exc, "context", None) or type(exc).__name__
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{str(problem)[:200]}{where}"


def _count_nodes(data):
    """Raise EditError when `data`, aliases expanded, is larger than MAX_NODES (or recursive)."""
    pending, seen = [data], 0
    while pending:
        item = pending.pop()
        seen += 1
        if seen > MAX_NODES:
            raise EditError(f"the data is larger than {MAX_NODES} nodes once YAML aliases are expanded")
        if isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, (list, tuple)):
            pending.extend(item)


def load(text):
    """The data of `text` as Hermes reads it (its fast_safe_load: PyYAML's safe loader, in C when
    libyaml is there)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        data = yaml.load(text, Loader=loader)
    except yaml.YAMLError as exc:
        raise EditError(f"not valid YAML: {_where(exc)}") from None
    except (RecursionError, ValueError, TypeError) as exc:
        raise EditError(f"not valid YAML ({type(exc).__name__})") from None
    _count_nodes(data)
    return data


def compose(text):
    """ruamel.yaml's node tree of `text` (no BOM): structure with exact positions, or None."""
    try:
        return YAML(typ="rt").compose(text)
    except RecursionError:
        raise EditError("not valid YAML (nested too deeply)") from None
    except Exception as exc:  # ruamel raises many types on bad input; each is a refusal here
        raise EditError(f"not valid YAML: {_where(exc)}") from None


def _same(left, right):
    """Equal data, types included (so 0 is not False and "1" is not 1)."""
    if type(left) is not type(right):
        return False
    if isinstance(left, dict):
        return left.keys() == right.keys() and all(_same(left[k], right[k]) for k in left)
    if isinstance(left, list):
        return len(left) == len(right) and all(_same(a, b) for a, b in zip(left, right))
    return left == right


# --- Positions in the text -----------------------------------------------------------------------


def _newline(text):
    return "\r\n" if "\r\n" in text else "\n"


def _line_start(text, index):
    return max(text.rfind("\n", 0, index), text.rfind("\r", 0, index)) + 1


def _next_line(text, index):
    """Index of the first line after the one holding text[index - 1]."""
    before = text[index - 1 : index] if index > 0 else ""
    if before == "\n" or (before == "\r" and text[index : index + 1] != "\n"):
        return index
    found = LINE_BREAK.search(text, index)
    return found.end() if found else len(text)


def _colon_after(text, key):
    """Index just after the ':' that follows `key`, or None (a flow entry `{a}` has none)."""
    index = key.end_mark.index
    while index < len(text) and text[index] in " \t\r\n":
        index += 1
    return index + 1 if text[index : index + 1] == ":" else None


def _is_empty(node):
    return isinstance(node, ScalarNode) and node.start_mark.index == node.end_mark.index


def _content_end(text, node, floor):
    """Index where `node`'s own text ends: after its last scalar or closing bracket, not after the
    comments and blank lines a block collection's end mark takes in."""
    if node.start_mark.index < floor:
        # ruamel composes an alias as the node it names, whose text is elsewhere in the file.
        raise EditError("an alias (*name) stands where the edit must go; edit the file by hand")
    if isinstance(node, ScalarNode) or node.flow_style:
        return node.end_mark.index
    if isinstance(node, MappingNode):
        key, value = node.value[-1]
        return _pair_end(text, key, value)
    return _content_end(text, node.value[-1], floor)


def _pair_end(text, key, value):
    if _is_empty(value):
        colon = _colon_after(text, key)
        return colon if colon is not None else key.end_mark.index
    return _content_end(text, value, key.end_mark.index)


def _pairs_named(mapping, name):
    return [(k, v) for k, v in mapping.value if isinstance(k, ScalarNode) and k.value == name]


def _one_pair(mapping, name, where):
    pairs = _pairs_named(mapping, name)
    if len(pairs) > 1:
        raise EditError(
            f"{where}{name!r} is written {len(pairs)} times (Hermes reads the last); merge them by hand"
        )
    return pairs[0] if pairs else None


# --- Rendering ----------------------------------------------------------------------------------


def _render(value, flow=False):
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return str(value)
    if not isinstance(value, str):
        raise EditError(
            f"only scalars can be set (strings, numbers, booleans, null), not {type(value).__name__}"
        )
    plain = r"[A-Za-z0-9_.@-]+" if flow else r"[A-Za-z0-9_./:@-]+"
    if re.fullmatch(plain, value) and yaml.safe_load(value) == value and ": " not in value:
        return value
    return json.dumps(value)


# --- The edit, one key at a time ----------------------------------------------------------------


def _section(text, section):
    """(top-level mapping node or None, section key node, section value node) of `text`."""
    top = compose(text)
    if top is None:
        return None, None, None
    if not isinstance(top, MappingNode):
        raise EditError("the top level is not a mapping")
    pair = _one_pair(top, section, "the top-level key ")
    return (top, *pair) if pair else (top, None, None)


def _splice(text, start, end, new):
    return text[:start] + new + text[end:]


def _append_section(text, top, section, key, value):
    newline = _newline(text)
    if top is not None and top.flow_style:
        raise EditError(f"the top level is a flow mapping ({{...}}) without {section!r}; edit it by hand")
    column = top.value[0][0].start_mark.column if top is not None and top.value else 0
    lead = "" if not text or text.endswith(("\n", "\r")) else newline
    pad = " " * column
    return f"{text}{lead}{pad}{_render(section)}:{newline}{pad}  {_render(key)}: {_render(value)}{newline}"


def _fill_null_section(text, head, body, key, value):
    """`kanban:` or `kanban: ~` (no mapping yet): drop the null, put the key on the next line."""
    newline = _newline(text)
    anchor = _colon_after(text, head)
    if not _is_empty(body):
        text = _splice(text, anchor, body.end_mark.index, "")
    at = _next_line(text, anchor)
    lead = "" if at == 0 or text[at - 1] in "\r\n" else newline
    line = f"{' ' * (head.start_mark.column + 2)}{_render(key)}: {_render(value)}{newline}"
    return _splice(text, at, at, lead + line)


def _set_value(text, body, key, value):
    """Replace the value of the existing key `key` of mapping `body`."""
    name, old = _pairs_named(body, key)[0]
    rendered = _render(value, flow=body.flow_style)
    if _is_empty(old):
        colon = _colon_after(text, name)
        if colon is None:
            return _splice(text, name.end_mark.index, name.end_mark.index, f": {rendered}")
        return _splice(text, colon, colon, f" {rendered}")
    _content_end(text, old, name.end_mark.index)  # refuses an alias
    if isinstance(old, ScalarNode) and old.style in ("|", ">"):
        # A block scalar's span runs to the start of the line after it: keep that line break.
        return _splice(text, old.start_mark.index, old.end_mark.index, rendered + _newline(text))
    return _splice(text, old.start_mark.index, old.end_mark.index, rendered)


def _add_key(text, body, key, value):
    """Add `key` to the mapping `body`, after its last entry, in its style."""
    if body.flow_style:
        rendered = f"{_render(key, flow=True)}: {_render(value, flow=True)}"
        if not body.value:
            close = body.end_mark.index - 1
            if text[close : close + 1] != "}":
                raise EditError("a flow mapping without its closing brace; edit it by hand")
            return _splice(text, close, close, rendered)
        at = _pair_end(text, *body.value[-1])
        return _splice(text, at, at, f", {rendered}")
    newline = _newline(text)
    at = _next_line(text, _pair_end(text, *body.value[-1]))
    lead = "" if text[at - 1 : at] in ("\n", "\r") else newline
    line = f"{' ' * body.value[0][0].start_mark.column}{_render(key)}: {_render(value)}{newline}"
    return _splice(text, at, at, lead + line)


def _separator(text, start, end):
    """Index of the ',' between two flow entries in text[start:end], skipping comments."""
    index = start
    while index < end:
        if text[index] == ",":
            return index
        if text[index] == "#":
            found = LINE_BREAK.search(text, index, end)
            index = found.end() if found else end
            continue
        index += 1
    raise EditError("a flow mapping whose entries are not separated by commas; edit it by hand")


def _remove_key(text, body, key):
    """Remove `key` (with its value, and in flow style its comma) from the mapping `body`."""
    pairs = body.value
    index = next(i for i, (k, _) in enumerate(pairs) if isinstance(k, ScalarNode) and k.value == key)
    name, old = pairs[index]
    end = _pair_end(text, name, old)
    if body.flow_style:
        if index + 1 < len(pairs):
            return _splice(text, name.start_mark.index, pairs[index + 1][0].start_mark.index, "")
        if index > 0:
            comma = _separator(text, _pair_end(text, *pairs[index - 1]), name.start_mark.index)
            return _splice(text, comma, end, "")
        close = body.end_mark.index - 1
        trailing = text.find(",", end, close)
        return _splice(text, name.start_mark.index, trailing + 1 if trailing >= 0 else end, "")
    start = _line_start(text, name.start_mark.index)
    if text[start : name.start_mark.index].strip():
        raise EditError(f"{key!r} does not start its own line; edit the file by hand")
    return _splice(text, start, _next_line(text, end), "")


def _not_written_here(section, key):
    return EditError(f"'{section}.{key}' comes from a merge key (<<) or an alias; edit the file by hand")


def _edit_once(text, section, key, value, remove):
    """`text` with `key` of `section` set to `value` or removed (the caller knows it is there)."""
    top, head, body = _section(text, section)
    if head is None:
        if remove:
            raise _not_written_here(section, key)
        return _append_section(text, top, section, key, value)
    if body.start_mark.index < head.end_mark.index:  # `kanban: *alias`: its text is elsewhere
        raise EditError(f"'{section}' is an alias (*name); edit the file by hand")
    if isinstance(body, ScalarNode):
        if remove:
            raise _not_written_here(section, key)
        return _fill_null_section(text, head, body, key, value)
    present = _one_pair(body, key, f"{section}: the key ") is not None
    if remove:
        if not present:
            raise _not_written_here(section, key)
        return _remove_key(text, body, key)
    return _set_value(text, body, key, value) if present else _add_key(text, body, key, value)


def edit(text, section, to_set, to_unset):
    """Return (new_text, removed). Raise EditError when the file cannot be edited safely."""
    bom = BOM if text.startswith(BOM) else ""
    body = text[len(bom) :]
    data = load(body) if body.strip() else {}
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise EditError("the top level is not a mapping")
    current = data.get(section)
    if current is not None and not isinstance(current, dict):
        raise EditError(f"'{section}' is not a mapping")
    current = dict(current or {})
    removed = {key: current[key] for key in to_unset if key in current}
    for key, value in to_set.items():
        if isinstance(current.get(key), (dict, list)):
            raise EditError(f"'{section}.{key}' is not a scalar")
        _render(value)  # refuses a value that is no scalar before anything is spliced

    new = body
    for key in to_unset:
        if key in current:
            new = _edit_once(new, section, key, None, remove=True)
    for key, value in to_set.items():
        if key in current and _same(current[key], value):
            continue  # already so: its bytes (quoting, comment) stay as they are
        new = _edit_once(new, section, key, value, remove=False)
    if new == body:
        return text, removed

    _prove(data, new, section, current, to_set, to_unset)
    return bom + new, removed


def _prove(data, new, section, current, to_set, to_unset):
    """Raise EditError unless `new` holds `data` with exactly the asked edits, in both parsers."""
    wanted = {k: v for k, v in current.items() if k not in to_unset}
    wanted.update(to_set)
    try:
        result = load(new)
    except EditError as exc:
        raise EditError(f"the edit would not be valid YAML ({exc}); nothing was written") from None
    # ruamel reads it too, with the section and each edited key written once.
    _, _, body = _section(new, section)
    if isinstance(body, MappingNode):
        for key in (*to_set, *to_unset):
            _one_pair(body, key, f"{section}: the key ")
    result = result if isinstance(result, dict) else {}
    others_same = _same(
        {k: v for k, v in result.items() if k != section}, {k: v for k, v in data.items() if k != section}
    )
    present = section in data or bool(wanted)
    section_same = (section in result) == present and _same(result.get(section) or {}, wanted)
    if not (others_same and section_same):
        raise EditError("the edit would change more than asked; nothing was written")


# --- Hiding secrets ----------------------------------------------------------------------------


def _secret_spans(text, node, floor, spans, depth=0):
    if depth > 200 or node.start_mark.index < floor:
        return  # an alias: its text is where it was defined, and is walked there
    if isinstance(node, MappingNode):
        for key, value in node.value:
            name = key.value if isinstance(key, ScalarNode) else ""
            if isinstance(name, str) and SECRET_KEY.search(name) and not _is_empty(value):
                if value.start_mark.index >= key.end_mark.index:
                    spans.append((value.start_mark.index, _content_end(text, value, key.end_mark.index)))
            else:
                _secret_spans(text, value, key.end_mark.index, spans, depth + 1)
    elif isinstance(node, SequenceNode):
        for item in node.value:
            _secret_spans(text, item, node.start_mark.index, spans, depth + 1)


def redact(text):
    """`text` with the value of every secret-looking key replaced by <redacted>."""
    bom = BOM if text.startswith(BOM) else ""
    body = text[len(bom) :]
    try:
        top = compose(body)
        spans = []
        if top is not None:
            _secret_spans(body, top, 0, spans)
    except EditError:
        return "(not shown: the file could not be parsed to hide its secrets)\n"
    for start, end in sorted(spans, reverse=True):
        body = _splice(body, start, end, REDACTED)
    return bom + body


def _redact_values(mapping):
    return {k: (REDACTED if SECRET_KEY.search(str(k)) else v) for k, v in mapping.items()}


# --- The module ---------------------------------------------------------------------------------


def decode(path, data):
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EditError(
            f"not UTF-8 text (byte {exc.start}); Hermes reads config.yaml as UTF-8: fix the file by hand"
        ) from None


def creation_owner(params):
    """uid, gid and mode for a file the module creates, from the owner/group/mode options."""
    import grp
    import pwd

    def lookup(value, table, option):
        if value is None:
            return None
        if re.fullmatch(r"[0-9]+", str(value)):
            return int(value)
        try:
            return table(str(value))[2]
        except KeyError:
            raise EditError(f"{option}: no such {option} {value!r}") from None

    uid = lookup(params["owner"], pwd.getpwnam, "owner")
    gid = lookup(params["group"], grp.getgrnam, "group")
    uid = os.geteuid() if uid is None else uid
    gid = (pwd.getpwuid(uid).pw_gid if params["group"] is None else gid) if gid is None else gid
    mode = params["mode"]
    if mode is None:
        return uid, gid, 0o600
    if isinstance(mode, int):
        return uid, gid, mode
    if not re.fullmatch(r"0?[0-7]{3,4}", str(mode)):
        raise EditError(
            f"mode: {mode!r} is not an octal mode such as '0600' (symbolic modes are not accepted)"
        )
    return uid, gid, int(str(mode), 8)


def main():
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "section": {"type": "str", "required": True},
            "set": {"type": "dict", "default": {}},
            "unset": {"type": "list", "elements": "str", "default": []},
            "known": {"type": "list", "elements": "str", "default": []},
            "unset_unknown": {"type": "bool", "default": False},
            "create": {"type": "bool", "default": False},
            "backup": {"type": "bool", "default": True},
            "backup_dir": {"type": "path", "default": "/var/backups/hermes-pacer"},
            "owner": {"type": "str"},
            "group": {"type": "str"},
            "mode": {"type": "raw"},
        },
        supports_check_mode=True,
    )
    if (not HAS_YAML or not HAS_RUAMEL) and module.check_mode:
        # Check mode on a fresh host: the role's package task only said it would install them.
        module.exit_json(
            changed=True,
            removed={},
            unknown=[],
            keys=[],
            msg="not checked: PyYAML and ruamel.yaml are not installed yet (check mode)",
        )
    if not HAS_YAML or not HAS_RUAMEL:
        module.fail_json(
            msg="hermes_yaml_section needs PyYAML and ruamel.yaml on the target"
            " (Debian: python3-yaml python3-ruamel.yaml)"
        )
    for key, value in module.params["set"].items():
        if SECRET_KEY.search(str(key)) and value is not None and len(str(value)) >= 4:
            module.no_log_values.add(str(value))  # masked in the invocation Ansible echoes back
    path = os.path.abspath(module.params["path"])
    try:
        result = run(module, path)
    except (EditError, OSError) as exc:
        text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        module.fail_json(msg=text if text.startswith(path) else f"{path}: {text}")
    module.exit_json(**result)


def run(module, path):
    params = module.params
    try:
        target = Target(path)
    except FileNotFoundError:
        if not (module.check_mode and params["create"]):
            raise OSError(
                errno.ENOENT, f"{path}: the directory {os.path.dirname(path)} does not exist"
            ) from None
        target = None  # check mode on a host not provisioned yet: the home comes in an earlier task
    try:
        if target is not None and target.data is None and not params["create"]:
            raise OSError(errno.ENOENT, f"{path} does not exist (and create is false)")
        if target is None or target.data is None:
            creation_owner(params)  # a bad owner, group or mode fails in check mode too
        text = decode(path, target.data) if target is not None and target.data is not None else ""
        return _edit_and_write(module, path, target, text)
    finally:
        if target is not None:
            target.close()


def _edit_and_write(module, path, target, text):
    params = module.params
    section, known = params["section"], set(params["known"])
    unset = list(params["unset"])
    bare = text[len(BOM) :] if text.startswith(BOM) else text
    data = (load(bare) if bare.strip() else None) or {}
    present = data.get(section) if isinstance(data, dict) else None
    unknown = []
    if known and isinstance(present, dict):
        unknown = sorted(str(k) for k in present if k not in known and k not in unset)
        if params["unset_unknown"]:
            unset += unknown
        for key in unknown:
            module.warn(f"{path}: {section}.{key} is not read by the installed Hermes")
    new_text, removed = edit(text, section, params["set"], unset)
    new_bare = new_text[len(BOM) :] if new_text.startswith(BOM) else new_text
    after = (load(new_bare) if new_bare.strip() else None) or {}
    keys = sorted(str(k) for k in (after.get(section) or {}))
    exists = target is not None and target.data is not None
    changed = new_text != text
    result = {
        "changed": changed,
        "removed": _redact_values(removed),
        "keys": keys,
        "path": path,
        "unknown": unknown,
    }
    if module._diff:
        result["diff"] = {
            "before": redact(text) if exists else "",
            "after": redact(new_text),
            "before_header": path,
            "after_header": path,
        }
    if changed and not module.check_mode:
        if exists:
            uid, gid, mode = target.info.st_uid, target.info.st_gid, stat.S_IMODE(target.info.st_mode)
            if params["backup"]:
                result["backup_file"] = write_backup(params["backup_dir"], path, target.data)
        else:
            uid, gid, mode = creation_owner(params)
        target.replace(new_text.encode("utf-8"), uid, gid, mode)
    return result


if __name__ == "__main__":
    main()
