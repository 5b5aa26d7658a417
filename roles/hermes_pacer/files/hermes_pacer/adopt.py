"""`adopt-cron`: comment out the hand-made crontab lines that dispatch a managed board of the managed
Hermes home, so each board keeps exactly one dispatcher path (the managed pacer).

Run as root by the role. Crontabs are read through safefile (a user crontab is its user's to
shape: no link, no FIFO, bounded). Which lines dispatch, and which home and board they serve, is
cronrules' one rule, the same verify applies: a line of another home, or one that only mentions a
script or a log, is left alone. Each changed file is backed up first (root-only, 0600), user
crontabs are reinstalled with `crontab -u USER -` so cron reloads them, and system files are
replaced atomically with their owner and mode kept.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import cronrules, host, paths, safefile

SYSTEM_SPOOL = Path("/var/spool/cron/crontabs")
NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
MARK = "# removed by hermes-pacer (backup {backup}): "


class AdoptError(Exception):
    """A crontab could not be adopted; the message names the file and why."""


@dataclass
class Plan:
    """What adoption does to one crontab."""

    path: Path
    user: str | None  # the owner of a user crontab; None for a system one
    text: str
    drop: dict[int, str] = field(default_factory=dict)  # line index -> board


def _managed(dispatch: cronrules.Dispatch, boards: set[str], homes: list[str]) -> bool:
    return (
        not dispatch.refused
        and dispatch.board in boards
        and any(cronrules.same_home(dispatch.home, home) for home in homes)
    )


def plan(
    path: Path, user: str | None, text: str, boards: set[str], homes: list[str]
) -> tuple[Plan, list[dict], list[dict]]:
    """The lines of one crontab to comment out, and the report rows: adopted and left alone."""
    result = Plan(path, user, text)
    adopted, left = [], []
    for line, dispatches in cronrules.crontab_dispatches(text, user):
        for dispatch in dispatches:
            row = {
                "file": str(path),
                "user": line.user or None,
                "home": dispatch.home,
                "board": dispatch.board,
                "line": line.text.strip(),
            }
            if _managed(dispatch, boards, homes):
                result.drop[line.index] = dispatch.board
                adopted.append(row)
            elif dispatch.board in boards:
                left.append({**row, "why": "another Hermes home" if dispatch.home else "its home is unknown"})
    return result, adopted, left


def rewrite(text: str, drop: dict[int, str], backup: str) -> str:
    """The crontab with the dropped lines commented out; line ends and a BOM kept as they were."""
    bom = "\ufeff" if text.startswith("\ufeff") else ""
    lines = text.removeprefix("\ufeff").splitlines(keepends=True)
    for index in drop:
        body = lines[index].rstrip("\r\n")
        ending = lines[index][len(body) :] or "\n"
        lines[index] = MARK.format(backup=backup) + body + ending
    return bom + "".join(lines)


def _backup_dir(folder: Path) -> None:
    """Create the backup directory root-only; refuse one another user could write or lead elsewhere."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = folder.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o077:
        raise AdoptError(
            f"--backup-dir {folder}: must be a directory owned by uid {os.geteuid()} with mode 0700 "
            f"(found uid {info.st_uid}, mode {stat.filemode(info.st_mode)})"
        )


def backup(folder: Path, source: Path, user: str | None, text: str) -> Path:
    """Write `text` (what was read) to a new root-only 0600 file in `folder`; never overwrite."""
    _backup_dir(folder)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    for attempt in range(100):
        suffix = f".{attempt}" if attempt else ""
        target = folder / f"{source.name}.{user or 'system'}.{stamp}{suffix}"
        try:
            handle = os.open(target, NEW_FILE, 0o600)
        except FileExistsError:
            continue
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        return target
    raise AdoptError(f"{folder}: no free backup name for {source}")


def replace_file(path: Path, text: str) -> None:
    """Replace a system crontab atomically, keeping its owner and mode."""
    info = os.lstat(path)
    if not stat.S_ISREG(info.st_mode):
        raise AdoptError(f"{path} is not a regular file: not rewritten")
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".hermes-pacer-")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fchown(out.fileno(), info.st_uid, info.st_gid)
            os.fchmod(out.fileno(), stat.S_IMODE(info.st_mode))
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def install_user_crontab(user: str, text: str, path: Path, spool: Path) -> None:
    """Reinstall a user crontab with crontab(1), so cron reloads it and checks it as it does for the
    user. With a private --spool (tests) the file there is replaced as crontab(1) would."""
    if spool != SYSTEM_SPOOL:
        replace_file(path, text)
        return
    try:
        result = subprocess.run(
            ["crontab", "-u", user, "-"], input=text, text=True, capture_output=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AdoptError(f"crontab -u {user} -: {exc}") from exc
    if result.returncode != 0:
        raise AdoptError(f"crontab -u {user} - exited {result.returncode}: {result.stderr.strip()[:300]}")


def _sources(etc: Path, spool: Path, managed: set[str]) -> list[tuple[Path, str | None]]:
    return [
        (path, user)
        for path, user in paths.crontab_sources(etc, spool)
        if os.path.normpath(path) not in managed
    ]


def run(
    boards: list[str],
    homes: list[Path],
    managed_files: list[Path],
    backup_dir: Path,
    check: bool,
    etc: Path = Path("/etc"),
    spool: Path = SYSTEM_SPOOL,
) -> dict:
    wanted = {host.normalise_slug(board)[0] for board in boards}
    home_names = [os.path.normpath(home) for home in homes]
    managed = {os.path.normpath(path) for path in managed_files}
    report: dict = {"changed": False, "adopted": [], "left": [], "refused": []}
    for path, user in _sources(etc, spool, managed):
        try:
            text = safefile.read_text(path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            report["refused"].append(paths.refusal(path, exc))
            continue
        change, adopted, left = plan(path, user, text, wanted, home_names)
        report["adopted"] += adopted
        report["left"] += left
        if not change.drop:
            continue
        report["changed"] = True
        if check:
            continue
        saved = backup(backup_dir, path, user, text)
        new_text = rewrite(text, change.drop, str(saved))
        if user is None:
            replace_file(path, new_text)
        else:
            install_user_crontab(user, new_text, path, spool)
    return report


def command(args) -> int:
    """The `adopt-cron` subcommand: 0 done, 1 a crontab could not be adopted, 2 bad input."""
    if not args.board or not args.home:
        print("hermes-pacer adopt-cron: --board and --home are required (each repeatable)", file=sys.stderr)
        return 2
    bad = [b for b in args.board if host.normalise_slug(b)[1]]
    if bad:
        why = host.normalise_slug(bad[0])[1]
        print(f"hermes-pacer adopt-cron: --board {bad[0]!r}: {why}", file=sys.stderr)
        return 2
    try:
        report = run(
            args.board, args.home, args.managed_file, args.backup_dir, args.check, args.etc, args.spool
        )
        code = 0
    except (AdoptError, OSError) as exc:
        report, code = {"changed": False, "adopted": [], "error": str(exc)}, 1
        if isinstance(exc, OSError) and exc.errno == errno.EACCES:
            report["error"] += " (adopt-cron must run as root)"
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for row in report.get("adopted", []):
            verb = "would comment out" if args.check else "commented out"
            print(f"{verb} {row['file']} (board {row['board']}, home {row['home']}): {row['line']}")
        for row in report.get("left", []):
            print(f"left {row['file']} (board {row['board']}, {row['why']}): {row['line']}")
        for why in report.get("refused", []):
            print(f"not read: {why}")
        if "error" in report:
            print(f"hermes-pacer adopt-cron: {report['error']}", file=sys.stderr)
    return code
