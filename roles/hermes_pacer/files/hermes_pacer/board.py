"""Where a board lives and what is on it, read straight from its SQLite file.

Reading the database read-only costs a few milliseconds; a `hermes` CLI start costs about 0.2 s of
CPU. The pass runs every few seconds, so it reads here and starts the CLI only to dispatch.
The paths follow Hermes' own resolution (hermes_cli.kanban_db.kanban_db_path).
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import hermes_config, host

DEFAULT_BOARD = host.DEFAULT_BOARD


class BoardUnreadable(RuntimeError):
    """The board's state cannot be known: the pass must dispatch nothing."""


def hermes_root(env: dict[str, str]) -> Path:
    """The shared Hermes root that holds the boards (the root home, never a profile home)."""
    override = env.get("HERMES_KANBAN_HOME", "").strip()
    if override:
        return Path(override).expanduser()
    native = Path(env.get("HOME") or Path.home()) / ".hermes"
    home = env.get("HERMES_HOME", "").strip()
    return root_of(Path(home), native) if home else native


def root_of(home: Path, native: Path) -> Path:
    """Hermes' get_default_hermes_root() for a HERMES_HOME: the native home (`~/.hermes`) for a home
    under it, `<root>` for `<root>/profiles/<name>`, else the home itself."""
    try:
        home.resolve().relative_to(native.resolve())
        return native
    except ValueError:
        pass
    return home.parent.parent if home.parent.name == "profiles" else home


def current_board(root: Path, env: dict[str, str]) -> str:
    """The board Hermes uses when none is named: env, then <root>/kanban/current, then default."""
    candidates = [env.get("HERMES_KANBAN_BOARD", "")]
    with contextlib.suppress(OSError):
        candidates.append(_read_small_file(root / "kanban" / "current", 4096))
    for raw in candidates:
        slug = raw.strip().lower()
        if slug and host.SLUG.match(slug) and db_path(root, slug, {}).exists():
            return slug
    return DEFAULT_BOARD


def _read_small_file(path: Path, limit: int) -> str:
    """A regular file of at most `limit` bytes, as Hermes reads it (through links: the pass runs as
    the Hermes user), but never a FIFO or device that would hang the pass; OSError otherwise."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, f"{path} is not a regular file: not read")
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"{path} is larger than {limit} bytes: not read")
    return data.decode("utf-8", "replace")


def db_path(root: Path, board: str, env: dict[str, str]) -> Path:
    override = env.get("HERMES_KANBAN_DB", "").strip()
    if override:
        return Path(override).expanduser()
    if board == DEFAULT_BOARD:
        return root / "kanban.db"
    return root / "kanban" / "boards" / board / "kanban.db"


@dataclass(frozen=True)
class Snapshot:
    """Cards of one board by the statuses the pacer cares about."""

    running: frozenset[str] = field(default_factory=frozenset)
    ready: int = 0
    todo: int = 0
    blocked: int = 0
    oldest_ready_created: float | None = None  # created_at of the oldest ready card (Unix time)


# One row per running card (its id) and one per other status (its count and oldest card): the
# running ids, the counts and the oldest ready card in one read, however many cards wait.
# `blocked` is a status of every release (0.14: triage todo ready running blocked done archived;
# 0.19 adds scheduled and review).
_SNAPSHOT = (
    "SELECT status, CASE WHEN status = 'running' THEN id END AS card, COUNT(*), MIN(created_at) "
    "FROM tasks WHERE status IN ('running', 'ready', 'todo', 'blocked') GROUP BY status, card"
)


def snapshot(path: Path, busy_timeout_ms: int = 2000) -> Snapshot:
    """Read the board read-only; raise BoardUnreadable when its state cannot be known."""
    if not path.is_file():
        raise BoardUnreadable(f"no board database at {path}")
    try:
        conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=busy_timeout_ms / 1000)
    except sqlite3.Error as exc:
        raise BoardUnreadable(f"cannot open {path}: {exc}") from exc
    try:
        rows = conn.execute(_SNAPSHOT).fetchall()
    except sqlite3.Error as exc:
        raise BoardUnreadable(f"cannot read {path}: {exc}") from exc
    finally:
        conn.close()
    counts = {status: count for status, card, count, _ in rows if card is None}
    oldest = next((created for status, _, _, created in rows if status == "ready"), None)
    return Snapshot(
        running=frozenset(card for status, card, _, _ in rows if status == "running" and card is not None),
        ready=counts.get("ready", 0),
        todo=counts.get("todo", 0),
        blocked=counts.get("blocked", 0),
        oldest_ready_created=float(oldest) if isinstance(oldest, (int, float)) else None,
    )


def ready_created(path: Path, limit: int) -> tuple[float, ...]:
    """Creation times of the `limit` oldest ready cards, oldest first; BoardUnreadable otherwise."""
    try:
        conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=2)
        try:
            rows = conn.execute(
                "SELECT created_at FROM tasks WHERE status = 'ready' ORDER BY created_at LIMIT ?", (limit,)
            ).fetchall()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise BoardUnreadable(f"cannot read {path}: {exc}") from exc
    return tuple(float(created) for (created,) in rows if created is not None)


def oldest_ready_age(path: Path) -> int | None:
    """Seconds the oldest ready card has waited (from its creation), None when none is ready."""
    try:
        oldest = ready_created(path, 1)
    except BoardUnreadable:
        return None
    return max(0, int(time.time() - oldest[0])) if oldest else None


# The config reading lives in hermes_config (typed, bounded, never through the Hermes user's links);
# these names stay for the pass and its tests.
kanban_settings = hermes_config.kanban_settings
native_caps = hermes_config.native_caps
config_path = hermes_config.config_path
NATIVE_CAPS = hermes_config.NATIVE_CAPS
