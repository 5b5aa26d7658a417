"""Whether Hermes still opens a board, and which of its cards are stuck.

Hermes refuses a board whose `PRAGMA integrity_check` fails: every `hermes kanban` command then
prints "Refusing to open corrupt kanban DB at <db>: ... backup at <db>.corrupt.<hash>.bak." on
stderr and still exits 0 (0.14 - 0.19), its workers die, and their cards stay `running`. The pass
counts cards by reading the board itself, so without a check here it would go on logging
`no_ready` with rc 0 forever. Two signals name a refused board:

- the refusal in the output of the pass's own `hermes` call (`refusal`);
- a read-only `PRAGMA integrity_check` of the board, at most once every
  PACER_INTEGRITY_CHECK_SECONDS per board (`periodic_check`). Not `quick_check`: it skips the
  comparison of indexes with their table, which is exactly the damage seen ("wrong # of entries
  in index idx_tasks_session_id" passes `quick_check`).

A board that fails stays failed: the stamp that spaces the checks is only renewed by a check that
passed, so every pass re-checks a failed board until it is repaired or restored.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import time
from pathlib import Path

from . import board as boards
from . import workers

REFUSAL = "Refusing to open corrupt kanban DB"
STUCK_AFTER = 900  # seconds a `running` card may go without a live worker before verify reports it


def refusal(text: str) -> str | None:
    """The line of Hermes' output that refuses a corrupt board, if there is one."""
    for line in text.splitlines():
        if REFUSAL in line:
            return line.strip()[:1000]
    return None


def preserved_backups(db: Path) -> list[Path]:
    """Hermes' copies of the board it refused (`<db>.corrupt.<hash>.bak`), newest first."""
    found = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(db.parent):
            name = entry.name
            if name.startswith(f"{db.name}.corrupt.") and name.endswith(".bak"):
                with contextlib.suppress(OSError):
                    info = entry.stat(follow_symlinks=False)
                    if stat.S_ISREG(info.st_mode):
                        found.append((info.st_mtime, Path(entry.path)))
    return [path for _, path in sorted(found, reverse=True)]


def describe(db: Path, problem: str) -> str:
    """The problem and where Hermes preserved the board, for a pass record or a verify line."""
    backups = preserved_backups(db)
    kept = f"Hermes' preserved copy: {backups[0]}" if backups else "no preserved copy by Hermes yet"
    return f"board {db} is corrupt ({problem}); {kept}"


def integrity(db: Path, busy_timeout_ms: int = 2000) -> str | None:
    """The first problem `PRAGMA integrity_check` finds in the board (read-only), None when it is
    sound or cannot be checked now (absent, locked, busy: that is no proof of damage)."""
    try:
        info = db.lstat()
    except OSError:
        return None
    if not stat.S_ISREG(info.st_mode) or info.st_size == 0:
        return None
    try:
        conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=busy_timeout_ms / 1000)
    except sqlite3.Error:
        return None
    try:
        rows = conn.execute("PRAGMA integrity_check(5)").fetchall()
    except sqlite3.OperationalError:
        return None
    except sqlite3.DatabaseError as exc:
        return f"sqlite refused it: {exc}"
    finally:
        conn.close()
    messages = [str(row[0]) for row in rows]
    if messages == ["ok"]:
        return None
    return "integrity_check: " + "; ".join(messages)[:500]


def periodic_check(db: Path, stamp: Path, every: int, now: float | None = None) -> str | None:
    """`integrity` when the last passed check (the mtime of `stamp`) is `every` seconds old or
    more (or in the future); None otherwise. `every` 0 never checks."""
    if every <= 0:
        return None
    now = time.time() if now is None else now
    with contextlib.suppress(OSError):
        age = now - stamp.lstat().st_mtime
        if 0 <= age < every:
            return None
    problem = integrity(db)
    if problem is None:
        _touch(stamp, now)
    return problem


def _touch(stamp: Path, now: float) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(stamp, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o644)
        try:
            os.utime(fd, (now, now))
        finally:
            os.close(fd)


def stuck_running(db: Path, live: frozenset[str], now: float, after: int = STUCK_AFTER) -> list[str]:
    """Cards `running` for more than `after` seconds (since their run started) whose worker is not
    among `live`: Hermes reclaims them once its dispatch runs again, a refused board never does."""
    try:
        conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=2)
    except sqlite3.Error:
        return []
    try:
        rows = conn.execute("SELECT id, started_at FROM tasks WHERE status = 'running'").fetchall()
    except sqlite3.Error:
        return []
    finally:
        conn.close()
    return sorted(
        task_id
        for task_id, started in rows
        if task_id not in live and isinstance(started, (int, float)) and now - started > after
    )


def verify_problems(root: Path, board: str, proc: str = "/proc", now: float | None = None) -> list[str]:
    """What `verify` reports about one board: damage Hermes refuses it for (naming its preserved
    copy), and cards `running` for over STUCK_AFTER seconds with no live worker of the board's
    owner."""
    db = boards.db_path(root, board, {})
    now = time.time() if now is None else now
    problems = []
    damage = integrity(db)
    if damage:
        problems.append(describe(db, damage) + ": Hermes refuses it; restore a backup (docs/reliability.md)")
    try:
        owner = db.lstat().st_uid
    except OSError:
        return problems
    live = workers.scan(board, db, proc, uid=owner)
    stuck = stuck_running(db, live.tasks, now)
    if stuck and not live.unattributed:
        shown = ", ".join(stuck[:10]) + (" ..." if len(stuck) > 10 else "")
        problems.append(
            f"{len(stuck)} card(s) running for over {STUCK_AFTER}s with no live worker on board {board} "
            f"of {root}: {shown} (Hermes reclaims them on its next dispatch unless the board is refused)"
        )
    return problems


@contextlib.contextmanager
def keep_open(db: Path):
    """Hold a read-only connection to the board (and with it SQLite's shared lock on a WAL board)
    for the duration: Hermes 0.19 drops its own processes' lock on their first write
    (tests/corruption), so any Hermes CLI that exits meanwhile could otherwise checkpoint and
    delete the WAL that the dispatcher is still writing to. Never fails the caller."""
    conn = None
    with contextlib.suppress(sqlite3.Error):
        conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=2)
        conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
    try:
        yield
    finally:
        if conn is not None:
            conn.close()
