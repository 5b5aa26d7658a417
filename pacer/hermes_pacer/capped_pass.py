"""One pacing pass for one board: count what holds a slot, dispatch only the free slots.

Exit status: 0 when the pass did its job (including a skip), 1 when it failed closed (the state
could not be known or Hermes failed: nothing was dispatched, or what was is in the log).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from . import board as boards
from . import capacity, locking, workers
from .hermes import Hermes, HermesFailed
from .settings import Settings

RECLAIM_REASON = "hermes-pacer: cap overrun (a card completed during the dispatch), handed back"
# A lock-file stamp this far in the future means the clock was stepped back since the last
# dispatch; waiting for the clock to catch up could stop housekeeping for hours.
CLOCK_SLACK = 5.0


def _count(db: Path, board: str) -> tuple[boards.Snapshot, workers.LiveWorkers]:
    return boards.snapshot(db), workers.scan(board, db)


def _housekeeping_due(lock_fd: int, every: int, now: float) -> bool:
    """Whether Hermes' own bookkeeping (stale and crashed claims, promotion) is due.

    The lock file's mtime records the last CLI dispatch of this board.
    """
    if every <= 0:
        return False
    age = now - os.fstat(lock_fd).st_mtime
    return age >= every or age < -CLOCK_SLACK


def run(settings: Settings, env: dict[str, str]) -> tuple[int, dict]:
    started = time.monotonic()
    root = boards.hermes_root(env)
    board = settings.board or boards.current_board(root, env)
    record: dict = {"board": board, "cap": settings.max_parallel}
    caps = boards.native_caps(boards.config_path(env))
    if caps:
        record["warning"] = "native_cap_set:" + ",".join(f"{k}:{v}" for k, v in sorted(caps.items()))
    try:
        locking.ensure_dir(settings.lock_dir)
        lock_fd = locking.try_lock(settings.lock_dir / f"board-{board}.lock")
    except (locking.LockDirUnsafe, OSError) as exc:
        return 1, {**record, "reason": "lock_unavailable", "error": str(exc)}
    if lock_fd is None:
        return 0, {**record, "reason": "locked"}
    try:
        code, result = _locked_pass(settings, env, root, board, lock_fd)
    finally:
        os.close(lock_fd)
    result = {**record, **result}
    result["ms"] = round((time.monotonic() - started) * 1000)
    return code, result


def _locked_pass(
    settings: Settings, env: dict[str, str], root: Path, board: str, lock_fd: int
) -> tuple[int, dict]:
    db = boards.db_path(root, board, env)
    cap = settings.max_parallel
    try:
        snap, live = _count(db, board)
    except (boards.BoardUnreadable, OSError) as exc:
        return 1, {"reason": "count_unknown", "error": str(exc)}
    step = capacity.plan(cap, snap.running, live.tasks, live.unattributed)
    record = {
        "running": len(snap.running),
        "workers": len(live.tasks) + live.unattributed,
        "lingering": step.lingering,
        "occupied": step.occupied,
        "slots": step.slots,
        "ready": snap.ready,
    }
    housekeeping = (snap.running or snap.ready or snap.todo) and _housekeeping_due(
        lock_fd, settings.housekeeping_seconds, time.time()
    )
    if not housekeeping:
        if snap.ready == 0:
            return 0, {**record, "reason": "no_ready"}
        if step.slots == 0:
            return 0, {**record, "reason": "at_cap"}
    hermes = Hermes(settings.hermes_bin, board, settings.hermes_timeout)
    record["max"] = step.max_arg
    try:
        spawned = hermes.dispatch(step.max_arg)
    except HermesFailed as exc:
        return 1, {**record, "reason": exc.reason, "error": exc.detail}
    finally:
        os.utime(lock_fd)
    record["spawned"] = spawned
    if spawned:
        record["reason"] = "dispatched"
    elif step.slots and snap.ready:
        record["reason"] = "none_spawnable"  # ready cards Hermes would not start (no assignee, no profile)
    else:
        record["reason"] = "housekeeping"
    if not spawned:
        return 0, record
    return _hand_back_overrun(hermes, cap, db, board, spawned, record)


def _hand_back_overrun(
    hermes: Hermes, cap: int, db: Path, board: str, spawned: list[str], record: dict
) -> tuple[int, dict]:
    try:
        snap, live = _count(db, board)
    except (boards.BoardUnreadable, OSError) as exc:
        return 1, {**record, "error": f"recount after dispatch failed: {exc}"}
    over = capacity.excess(cap, snap.running, live.tasks, spawned, live.unattributed)
    reclaimed = []
    for task_id in reversed(over):
        try:
            hermes.reclaim(task_id, RECLAIM_REASON)
        except HermesFailed as exc:
            return 1, {**record, "reclaimed": reclaimed, "reason": exc.reason, "error": exc.detail}
        reclaimed.append(task_id)
    return 0, {**record, "reclaimed": reclaimed}
