"""One pacing pass for one board: count what holds a slot, dispatch only the free slots.

Exit status: 0 when the pass did its job (including a skip), 1 when it failed closed (the state
could not be known, Hermes failed, the pass was stopped or hit an error of its own: nothing was
dispatched, or what was is in the log). Whatever happens, the pass ends in exactly one record,
never a traceback, and its `hermes` calls have ended before its lock is released.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from . import board as boards
from . import board_health, capacity, endpoint_pass, host, locking, pass_state, passlog, pause, workers
from .hermes import Hermes, HermesFailed, Stopped, StopSignals
from .settings import Settings

RECLAIM_REASON = "hermes-pacer: cap overrun (a card completed during the dispatch), handed back"
# A lock-file stamp this far in the future means the clock was stepped back since the last
# dispatch; waiting for the clock to catch up could stop housekeeping for hours.
CLOCK_SLACK = 5.0
# The record key (not logged) of the worker pids a loop may watch for a freed slot.
WATCH = "_watch"
# A board with nothing to start still looks at its endpoint this often (a health probe and a load
# read, two small requests), so the endpoint's status, metrics and EndpointDown say how it is
# before work arrives. Any pass of the endpoint's boards that probes counts as a look.
ENDPOINT_LOOK_SECONDS = 60.0


def _count(db: Path, board: str) -> tuple[boards.Snapshot, workers.LiveWorkers]:
    return boards.snapshot(db), workers.scan(board, db)


def _binding_native_caps(caps: dict[str, str], settings: Settings) -> dict[str, str]:
    """The native caps that can cut a pass's slots. On Hermes 0.20+ the role sets max_in_progress
    to the sum of the pacer's caps (unset, it would be derived from memory): a value at least the
    cap this pass works to never binds, on 0.16-0.19 neither while the host's boards stay under it."""
    cap = settings.endpoint.max_parallel if settings.endpoint else settings.max_parallel
    value = caps.get("max_in_progress", "")
    if value.isdigit() and int(value) >= cap:
        caps = {key: text for key, text in caps.items() if key != "max_in_progress"}
    return caps


def _housekeeping_due(lock_fd: int, every: int, now: float) -> bool:
    """Whether Hermes' own bookkeeping (stale and crashed claims, promotion) is due.

    The lock file's mtime records the last CLI dispatch of this board.
    """
    if every <= 0:
        return False
    age = now - os.fstat(lock_fd).st_mtime
    return age >= every or age < -CLOCK_SLACK


def _endpoint_look_due(settings: Settings, now: float) -> bool:
    """Whether no pass of the endpoint's boards has probed it for ENDPOINT_LOOK_SECONDS: the
    endpoint's state file (lock directory) is rewritten by every pass that probes."""
    if settings.endpoint is None:
        return False
    try:
        probed = os.stat(host.endpoint_state(settings.lock_dir, settings.endpoint.name)).st_mtime
    except OSError:
        return True  # never looked at (or its state is gone): look now
    age = now - probed
    return age >= ENDPOINT_LOOK_SECONDS or age < -CLOCK_SLACK


def run(settings: Settings, env: dict[str, str], stop: StopSignals | None = None) -> tuple[int, dict]:
    """One pass; its exit status and its record (with `rc`). Never raises."""
    started = time.monotonic()
    record: dict = {"board": settings.board, "cap": settings.max_parallel}
    try:
        code = _pass(settings, env, stop, record)
    except Stopped as exc:
        code = 1
        record.update(reason="terminated", error=str(exc))
    except Exception as exc:  # a pass never ends in a traceback: the loop must go on
        code = 1
        record.update(reason="internal_error", error=f"{type(exc).__name__}: {exc}")
    record["rc"] = code
    record["ms"] = round((time.monotonic() - started) * 1000)
    return code, record


def _pass(settings: Settings, env: dict[str, str], stop: StopSignals | None, record: dict) -> int:
    root = boards.hermes_root(env)
    board = settings.board or boards.current_board(root, env)
    record["board"] = board
    stopped = pause.paused_env(env)
    if stopped:
        record.update(reason="paused", warning=stopped)
        return 0
    caps = _binding_native_caps(boards.native_caps(boards.config_path(env)), settings)
    if caps:
        passlog.warn(record, "native_cap_set:" + ",".join(f"{k}:{v}" for k, v in sorted(caps.items())))
    try:
        locking.ensure_dir(settings.lock_dir)
        lock_fd = locking.try_lock(host.pass_lock(settings.lock_dir, board))
    except (locking.LockDirUnsafe, OSError) as exc:
        record.update(reason="lock_unavailable", error=str(exc))
        return 1
    if lock_fd is None:
        record["reason"] = "locked"
        return 0
    try:
        hermes = Hermes(settings.hermes_bin, board, settings.hermes_timeout, stop)
        return _locked_pass(settings, env, hermes, root, lock_fd, record)
    finally:
        os.close(lock_fd)  # only now: any hermes call of this pass has ended


def _locked_pass(
    settings: Settings, env: dict[str, str], hermes: Hermes, root: Path, lock_fd: int, record: dict
) -> int:
    board = hermes.board
    db = boards.db_path(root, board, env)
    stamp = host.integrity_stamp(settings.lock_dir, board)
    problem = board_health.periodic_check(db, stamp, settings.integrity_check_seconds)
    if problem:
        record.update(reason="board_corrupt", error=board_health.describe(db, problem))
        return 1
    try:
        snap, live = _count(db, board)
    except (boards.BoardUnreadable, OSError) as exc:
        record.update(reason="count_unknown", error=str(exc))
        return 1
    record[pass_state.CARDS] = {
        "running": len(snap.running),
        "ready": snap.ready,
        "todo": snap.todo,
        "blocked": snap.blocked,
    }
    record[pass_state.OLDEST_READY] = snap.oldest_ready_created
    now = time.time()
    housekeeping = (snap.running or snap.todo) and _housekeeping_due(
        lock_fd, settings.housekeeping_seconds, now
    )
    idle = not snap.ready and not housekeeping and not _endpoint_look_due(settings, now)
    if settings.endpoint is None or idle:
        # Nothing to start, no bookkeeping due, the endpoint looked at within the minute: it is
        # neither locked nor probed, so an idle board costs one read of its database a pass.
        if settings.endpoint is not None:
            record["endpoint"] = settings.endpoint.name
        return _dispatch(settings, hermes, db, lock_fd, snap, live, None, record)
    return endpoint_pass.run(
        settings,
        env,
        root,
        db,
        record,
        lambda snap, live, allow: _dispatch(settings, hermes, db, lock_fd, snap, live, allow, record),
    )


def _dispatch(
    settings: Settings,
    hermes: Hermes,
    db: Path,
    lock_fd: int,
    snap: boards.Snapshot,
    live: workers.LiveWorkers,
    allow: endpoint_pass.Allowance | None,
    record: dict,
) -> int:
    """Dispatch the free slots of the board (and of its endpoint, when `allow` is given)."""
    cap = settings.max_parallel
    if live.foreign:
        # Worker look-alikes of other users: not counted, but worth a look (verify names them too).
        passlog.warn(record, "foreign_workers_ignored:" + ",".join(map(str, live.foreign[:10])))
    step = capacity.plan(cap, snap.running, live.tasks, live.unattributed)
    slots = step.slots if allow is None else min(step.slots, allow.slots)
    record.update(
        running=len(snap.running),
        workers=len(live.tasks) + live.unattributed,
        lingering=step.lingering,
        occupied=step.occupied,
        slots=slots,
        ready=snap.ready,
    )
    if snap.ready and not slots:
        # Work waits and every slot is taken: the loop watches these workers and passes again as
        # soon as one ends, instead of waiting for its next tick.
        record[WATCH] = list(live.pids) if allow is None else allow.pids
    housekeeping = (snap.running or snap.ready or snap.todo) and _housekeeping_due(
        lock_fd, settings.housekeeping_seconds, time.time()
    )
    if not housekeeping:
        if snap.ready == 0:
            record["reason"] = "no_ready"
            return 0
        if slots == 0:
            if allow is not None and allow.opens_at is not None and allow.slots == 0:
                # Outside a fleet host's window with no floor to fill: the wait is the fleet's turn.
                record["reason"] = "fleet_slice"
            else:
                record["reason"] = "at_cap"
            return 0
    # `dispatch --max` counts the board's running cards itself; with no slot, 0 spawns nothing
    # whatever Hermes counts, and it still reclaims and promotes.
    max_arg = len(snap.running) + slots if slots else 0
    record["max"] = max_arg
    try:
        with board_health.keep_open(db):
            spawned = hermes.dispatch(max_arg)
    except HermesFailed as exc:
        record.update(reason=exc.reason, error=exc.detail)
        return 1
    finally:
        os.utime(lock_fd)
    record["spawned"] = spawned
    if spawned:
        record["reason"] = "dispatched"
    elif slots and snap.ready:
        record["reason"] = "none_spawnable"  # ready cards Hermes would not start (no assignee, no profile)
    else:
        record["reason"] = "housekeeping"
    if not spawned:
        return 0
    return _hand_back_overrun(hermes, cap, db, spawned, allow, record)


def _hand_back_overrun(
    hermes: Hermes,
    cap: int,
    db: Path,
    spawned: list[str],
    allow: endpoint_pass.Allowance | None,
    record: dict,
) -> int:
    try:
        snap, live = _count(db, hermes.board)
    except (boards.BoardUnreadable, OSError) as exc:
        record["error"] = f"recount after dispatch failed: {exc}"
        return 1
    if snap.ready:
        # Work still waits: the workers now holding the slots are the ones to watch.
        record[WATCH] = sorted(set(live.pids) | set(allow.pids if allow else ()))
    over = capacity.excess(cap, snap.running, live.tasks, spawned, live.unattributed)
    if allow is not None:
        # The endpoint's budget: this pass may have taken at most `allow.slots` of it.
        occupied_now = len(snap.running | live.tasks | frozenset(spawned)) + live.unattributed
        beyond = max(0, occupied_now - allow.board_occupied - allow.slots)
        if beyond > len(over):
            over = spawned[len(spawned) - beyond :]
    reclaimed: list[str] = []
    record["reclaimed"] = reclaimed
    for task_id in reversed(over):
        try:
            hermes.reclaim(task_id, RECLAIM_REASON)
        except HermesFailed as exc:
            record.update(reason=exc.reason, error=exc.detail)
            return 1
        reclaimed.append(task_id)
    return 0
