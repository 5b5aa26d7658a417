#!/usr/bin/python
"""Ansible module: install a set of files into one directory in one run.

The pacing core is some forty Python files; `ansible.builtin.copy` in a loop runs a module on the
host for each of them, every converge, whether or not one changed (about a second each over a
container's or an SSH connection). This module gets every file's text at once and writes only the
ones that differ, each as `copy` would: a temporary file in the same directory, its owner, group
and mode set before it is renamed over the old one (or over a link, which is replaced, never
followed). The directory is made when missing; a directory that is a link fails the task.
"""

from __future__ import annotations

DOCUMENTATION = r"""
module: hermes_files
short_description: Install a set of text files into one directory in one run
description:
  - Writes each file of C(files) into C(dest) whose content, owner, group or mode differs from the
    asked one, and leaves the others untouched. Files of C(dest) not named in C(files) are kept.
  - Each file is written to a temporary file in C(dest), given its owner, group and mode, synced
    and renamed over the old one. A symbolic link in its place is replaced, never followed; a
    directory in its place fails the task.
  - C(dest) is created (with C(directory_mode), C(owner) and C(group)) when missing; when it is a
    symbolic link or not a directory, the task fails and nothing is written.
  - Check mode is supported.
options:
  dest: {description: "The directory the files go into (absolute).", type: path, required: true}
  files: {description: "File name (no directory) to its text.", type: dict, required: true}
  owner: {description: "Owner (name or uid) of the files and of C(dest) when it is created.", type: str, default: root}
  group: {description: "Group (name or gid) of the files and of C(dest) when it is created.", type: str, default: root}
  mode: {description: "Octal mode of the files.", type: str, default: "0644"}
  directory_mode: {description: "Octal mode of C(dest) when it is created.", type: str, default: "0755"}
author: hermes-pacer
"""

EXAMPLES = r"""
- name: Install the pacing core
  hermes_pacer.pacer.hermes_files:
    dest: /opt/hermes/scripts/hermes_pacer
    files:
      __init__.py: ""
      pacer.py: "{{ lookup('ansible.builtin.file', 'pacer.py', rstrip=false) }}"
"""

RETURN = r"""
changed_files: {description: "The names of the files written (or that check mode would write), sorted.", type: list, returned: always}
dest_created: {description: "Whether C(dest) was made (or check mode would make it).", type: bool, returned: success}
"""

import contextlib
import grp
import os
import pwd
import stat
import tempfile

from ansible.module_utils.basic import AnsibleModule


def _id(value, lookup, what):
    """A uid or gid from a name or a number."""
    if str(value).isdigit():
        return int(value)
    try:
        return lookup(value)[2]
    except KeyError:
        raise ValueError(f"{what} {value!r} does not exist") from None


def _mode(value, setting):
    try:
        mode = int(str(value), 8)
    except ValueError:
        raise ValueError(f"{setting} must be an octal mode such as 0644, not {value!r}") from None
    if not 0 <= mode <= 0o7777:
        raise ValueError(f"{setting} must be an octal mode such as 0644, not {value!r}")
    return mode


def _differs(path, data, uid, gid, mode):
    """Whether `path` is not already a regular file with this content, owner, group and mode."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return True
    if stat.S_ISDIR(info.st_mode):
        raise ValueError(f"{path} is a directory: not replaced")
    if not stat.S_ISREG(info.st_mode):
        return True  # a link (never followed) or a special file: replaced
    if (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) != (uid, gid, mode) or info.st_size != len(
        data
    ):
        return True
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as handle:
        return handle.read(len(data) + 1) != data


def _write(dest, name, data, uid, gid, mode):
    fd, temporary = tempfile.mkstemp(prefix=f".{name}.", dir=dest)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            os.fchown(handle.fileno(), uid, gid)
            os.fchmod(handle.fileno(), mode)
            handle.flush()
            os.fsync(handle.fileno())
        os.rename(temporary, os.path.join(dest, name))
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def install(dest, files, owner="root", group="root", mode="0644", directory_mode="0755", check=False):
    """(names written or to write, whether dest is to be made); ValueError on bad input."""
    if not os.path.isabs(dest):
        raise ValueError(f"dest must be an absolute path, not {dest!r}")
    for name in files:
        if not name or "/" in name or name in (".", ".."):
            raise ValueError(f"files: {name!r} is not a file name (no directory in it)")
    uid, gid = _id(owner, pwd.getpwnam, "owner"), _id(group, grp.getgrnam, "group")
    file_mode, dir_mode = _mode(mode, "mode"), _mode(directory_mode, "directory_mode")
    contents = {name: text.encode("utf-8") for name, text in files.items()}
    try:
        info = os.lstat(dest)
    except FileNotFoundError:
        info = None
    if info is not None and not stat.S_ISDIR(info.st_mode):
        raise ValueError(
            f"{dest} is {'a link' if stat.S_ISLNK(info.st_mode) else 'not a directory'}: nothing written"
        )
    if info is None:
        changed = sorted(contents)
        if not check:
            os.mkdir(dest, dir_mode)
            os.chown(dest, uid, gid)
            os.chmod(dest, dir_mode)
    else:
        changed = sorted(
            name
            for name, data in contents.items()
            if _differs(os.path.join(dest, name), data, uid, gid, file_mode)
        )
    if not check:
        for name in changed:
            _write(dest, name, contents[name], uid, gid, file_mode)
    return changed, info is None


def main():
    module = AnsibleModule(
        argument_spec={
            "dest": {"type": "path", "required": True},
            "files": {"type": "dict", "required": True},
            "owner": {"type": "str", "default": "root"},
            "group": {"type": "str", "default": "root"},
            "mode": {"type": "str", "default": "0644"},
            "directory_mode": {"type": "str", "default": "0755"},
        },
        supports_check_mode=True,
    )
    params = module.params
    files = {str(name): "" if text is None else str(text) for name, text in params["files"].items()}
    try:
        changed, made = install(
            params["dest"],
            files,
            params["owner"],
            params["group"],
            params["mode"],
            params["directory_mode"],
            check=module.check_mode,
        )
    except (ValueError, OSError) as exc:
        module.fail_json(msg=f"hermes_files: {exc}", changed_files=[])
    module.exit_json(changed=bool(changed), changed_files=changed, dest_created=made)


if __name__ == "__main__":
    main()
