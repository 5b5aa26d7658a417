#!/usr/bin/python
"""Ansible module: find cron lines that dispatch a Hermes board outside the managed pacer, back
them up and remove them, so each board keeps exactly one dispatcher path.

A line counts when it runs one of the manual recipe's scripts (`hermes-kanban-dispatch-*`) or
`hermes kanban … dispatch` / `hermes kanban … daemon`. Its board is `BOARD=x` or `--board x` on
the line; a line naming none dispatches Hermes' current board, taken as `default`.
"""

from __future__ import annotations

DOCUMENTATION = r"""
module: hermes_cron_adopt
short_description: Adopt hand-made cron lines that dispatch Hermes Kanban boards
description:
  - Scans every user crontab, /etc/crontab and /etc/cron.d for lines that dispatch one of the
    given boards, other than the managed files. In C(state=absent) mode it backs each changed file
    up and removes those lines; user crontabs are reinstalled with crontab(1) so cron reloads them.
  - Supports check mode; returns the lines found either way.
options:
  boards: {description: Board slugs managed by the pacer., type: list, elements: str, required: true}
  managed_files: {description: Cron files written by the pacer itself (never touched)., type: list, elements: path, default: []}
  backup_dir: {description: Where the backups go., type: path, required: true}
  remove: {description: Remove the lines (false only reports them)., type: bool, default: true}
"""

RETURN = r"""
adopted: {description: "Lines found: file, user, board, line.", type: list, returned: always}
"""

import glob
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time

from ansible.module_utils.basic import AnsibleModule

DISPATCH = re.compile(r"hermes-kanban-dispatch-|hermes\S*\s+kanban\s+(?:.*\s)?(?:dispatch|daemon)\b")
BOARD = re.compile(r"(?:\bBOARD=|--board[= ])['\"]?([a-z0-9][a-z0-9_-]{0,63})")
USER_CRONTABS = "/var/spool/cron/crontabs"


def board_of(line):
    match = BOARD.search(line)
    return match.group(1) if match else "default"


def dispatch_lines(text, boards):
    """Indexes and boards of the active lines of a crontab that dispatch one of `boards`."""
    found = []
    for index, line in enumerate(text.splitlines()):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", stripped):
            continue
        if DISPATCH.search(stripped) and board_of(stripped) in boards:
            found.append((index, board_of(stripped)))
    return found


def sources(managed):
    """(path, user) of each crontab; user is None for system files (a user field on each line)."""
    out = []
    for path in sorted(glob.glob(os.path.join(USER_CRONTABS, "*"))):
        out.append((path, os.path.basename(path)))
    for path in ["/etc/crontab", *sorted(glob.glob("/etc/cron.d/*"))]:
        if os.path.isfile(path) and os.path.realpath(path) not in managed:
            out.append((path, None))
    return out


def main():
    module = AnsibleModule(
        argument_spec={
            "boards": {"type": "list", "elements": "str", "required": True},
            "managed_files": {"type": "list", "elements": "path", "default": []},
            "backup_dir": {"type": "path", "required": True},
            "remove": {"type": "bool", "default": True},
        },
        supports_check_mode=True,
    )
    boards = set(module.params["boards"])
    managed = {os.path.realpath(p) for p in module.params["managed_files"]}
    adopted, changed = [], False
    stamp = time.strftime("%Y%m%dT%H%M%S")
    for path, user in sources(managed):
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                text = handle.read()
        except OSError:
            continue
        found = dispatch_lines(text, boards)
        if not found:
            continue
        lines = text.splitlines()
        for index, board in found:
            adopted.append({"file": path, "user": user, "board": board, "line": lines[index]})
        if not module.params["remove"] or module.check_mode:
            changed = True
            continue
        os.makedirs(module.params["backup_dir"], mode=0o700, exist_ok=True)
        backup = os.path.join(
            module.params["backup_dir"], f"{os.path.basename(path)}.{user or 'system'}.{stamp}"
        )
        shutil.copy2(path, backup)
        drop = {index for index, _ in found}
        kept = "".join(
            f"# removed by hermes-pacer (backup {backup}): {line}\n" if i in drop else line + "\n"
            for i, line in enumerate(lines)
        )
        if user is not None:
            pwd.getpwnam(user)
            result = subprocess.run(
                ["crontab", "-u", user, "-"], input=kept, text=True, capture_output=True, check=False
            )
            if result.returncode != 0:
                module.fail_json(msg=f"crontab -u {user} failed: {result.stderr.strip()}", adopted=adopted)
        else:
            fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".hermes-pacer-")
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(kept)
            module.atomic_move(tmp, path)
        changed = True
    module.exit_json(changed=changed, adopted=adopted)


if __name__ == "__main__":
    main()
