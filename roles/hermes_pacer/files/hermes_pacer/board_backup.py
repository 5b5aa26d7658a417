"""`backup`: rotated online copies of every board of this user's Hermes home.

Each board is copied with SQLite's backup API from a read-only connection: the copy is one
consistent snapshot even while Hermes writes, and the read-only connection never checkpoints or
deletes the board's WAL. A board that fails `PRAGMA integrity_check` is not copied (the copies of
it while it was sound are what a restore needs), and the run exits 1. Copies take the board's
mode; the command runs as the Hermes user, so they are that user's. Copies older than the
retention are removed after a successful run, the newest copy of a board always stays.

Layout: DIR/<board>/kanban-<UTC time>.db
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import sys
import time
from pathlib import Path

from . import board as boards
from . import board_health

PREFIX = "kanban-"
SUFFIX = ".db"


def boards_of(root: Path) -> dict[str, Path]:
    found = {}
    if (root / "kanban.db").is_file():
        found[boards.DEFAULT_BOARD] = root / "kanban.db"
    for db in sorted((root / "kanban" / "boards").glob("*/kanban.db")):
        if db.is_file() and not db.is_symlink():
            found[db.parent.name] = db
    return found


def copy_board(db: Path, dest_dir: Path, now: float) -> Path:
    """A consistent copy of `db` in `dest_dir`, with the board's mode; OSError or sqlite3.Error."""
    dest_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    final = dest_dir / f"{PREFIX}{stamp}{SUFFIX}"
    partial = dest_dir / f".{final.name}.partial"
    with contextlib.suppress(FileNotFoundError):
        partial.unlink()
    source = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=30)
    try:
        target = sqlite3.connect(partial)
        try:
            source.backup(target)
            target.execute("PRAGMA journal_mode=DELETE")  # a single self-contained file
            (check,) = target.execute("PRAGMA integrity_check(1)").fetchone()
        finally:
            target.close()
    finally:
        source.close()
    if check != "ok":
        partial.unlink()
        raise sqlite3.DatabaseError(f"the copy failed integrity_check: {check}")
    os.chmod(partial, db.stat().st_mode & 0o666)
    fd = os.open(partial, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(partial, final)
    return final


def prune(dest_dir: Path, keep_seconds: float, now: float) -> list[Path]:
    """Remove copies older than `keep_seconds`, never the newest one."""
    copies = sorted(p for p in dest_dir.glob(f"{PREFIX}*{SUFFIX}") if p.is_file() and not p.is_symlink())
    removed = []
    for old in copies[:-1]:
        if now - old.stat().st_mtime > keep_seconds:
            old.unlink()
            removed.append(old)
    return removed


def run(root: Path, dest: Path, keep_days: float, now: float | None = None) -> int:
    now = time.time() if now is None else now
    code = 0
    found = boards_of(root)
    if not found:
        print(f"hermes-pacer backup: no board under {root}", file=sys.stderr)
    for slug, db in found.items():
        damage = board_health.integrity(db)
        if damage:
            print(f"board={slug} db={db} backup=- error={board_health.describe(db, damage)}")
            code = 1
            continue
        try:
            copy = copy_board(db, dest / slug, now)
        except (OSError, sqlite3.Error) as exc:
            print(f"board={slug} db={db} backup=- error={exc}")
            code = 1
            continue
        removed = prune(dest / slug, keep_days * 86400, now)
        print(f"board={slug} db={db} backup={copy} removed={len(removed)}")
    return code
