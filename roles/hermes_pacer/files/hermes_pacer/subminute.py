"""RUNS_PER_MINUTE capped passes spread evenly over one minute, for a once-a-minute cron line.

Each pass has a slot on a fixed grid from the loop's start, so a slow pass never pushes the next
ones past the minute and into the next cron run: a slot already past is skipped, not made up.
The loop holds its own per-board lock: an overlapping cron run exits at once.

One bad pass never ends the loop: whatever goes wrong in a pass (its log line included) becomes
that pass's exit status, and the loop goes on to its next slot. A stop signal ends the running
pass as the capped pass ends (its hermes calls first), then the loop, before its lock is released.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from . import board as boards
from . import capped_pass, host, locking, pass_state, passlog, watch
from .hermes import DRAIN, GRACE, StopSignals, end_group
from .settings import Settings

MINUTE = 60.0
# A CAP_SCRIPT pass that is stopped ends its own hermes call (GRACE, DRAIN) and logs first.
CAP_SCRIPT_GRACE = GRACE + DRAIN + 2.0
_CAP_SCRIPT_POLL = 0.2
# A timer-run pass that watches for a freed slot ends this long before the next tick.
TICK_MARGIN = 0.5


def _home(env: dict[str, str]) -> Path:
    return boards.hermes_root(env)


def _emit(settings: Settings, env: dict[str, str], record: dict, code: int) -> int:
    """Log a record of the loop's own (after leaving it in the board's status); the pass's status,
    1 when the record could not be written."""
    record = {**record, "rc": code}
    try:
        home = _home(env)
        # The status names the board even where the line leaves it to Hermes' current board.
        named = {**record, "board": record.get("board") or boards.current_board(home, env)}
        pass_state.record_pass(settings, named, home)
        if named.get("warning"):
            record["warning"] = named["warning"]
    except Exception as exc:  # the record is still logged: the status is the operator's second view
        passlog.warn(record, f"state_unwritten:{type(exc).__name__}: {exc}")
    written = passlog.emit(record, settings.log_format)
    return code if written else 1


def _one_pass(
    settings: Settings, env: dict[str, str], budget: float, stop: StopSignals
) -> tuple[int, list[int]]:
    """A pass's status, and the workers to watch for a freed slot (none for a CAP_SCRIPT pass)."""
    if settings.cap_script is None:
        return _capped(settings, env, stop)
    return _cap_script_pass(settings, env, budget, stop), []


def _cap_script_pass(settings: Settings, env: dict[str, str], budget: float, stop: StopSignals) -> int:
    """Run CAP_SCRIPT (it logs its own record) in a process group of its own, bounded by `budget`."""
    record = {"board": settings.board}
    try:
        proc = subprocess.Popen(
            [settings.cap_script], env=env, stdin=subprocess.DEVNULL, start_new_session=True
        )
    except OSError as exc:
        error = f"CAP_SCRIPT={settings.cap_script}: {exc.strerror}"
        return _emit(settings, env, {**record, "reason": "cap_script_unavailable", "error": error}, 1)
    deadline = time.monotonic() + budget
    while proc.poll() is None and stop.received is None and (left := deadline - time.monotonic()) > 0:
        stop.sleep(min(_CAP_SCRIPT_POLL, left))
    if proc.poll() is not None:
        return proc.returncode
    end_group(proc, CAP_SCRIPT_GRACE)
    if stop.received is not None:
        return 1  # a capped pass logs its own `terminated` record
    error = f"CAP_SCRIPT={settings.cap_script} ran over {budget:g}s"
    return _emit(settings, env, {**record, "reason": "cap_script_timeout", "error": error}, 1)


def _guarded_pass(
    settings: Settings, env: dict[str, str], budget: float, stop: StopSignals
) -> tuple[int, list[int]]:
    try:
        return _one_pass(settings, env, budget, stop)
    except Exception as exc:  # the loop goes on to its next slot whatever a pass did
        error = f"{type(exc).__name__}: {exc}"
        record = {"board": settings.board, "reason": "internal_error", "error": error}
        return _emit(settings, env, record, 1), []


def refill(pass_again, pids: list[int], until: float, clock, sleep, stop: StopSignals) -> int:
    """Until `until`: each time a watched worker ends, `pass_again()` (its status and the workers to
    watch next); the worst status of those passes."""
    worst = 0
    while pids and watch.wait_for_exit(pids, until, clock, sleep, stop):
        code, pids = pass_again()
        worst = max(worst, code)
    return worst


def _capped(settings: Settings, env: dict[str, str], stop: StopSignals) -> tuple[int, list[int]]:
    code, record = capped_pass.run(settings, env, stop)
    try:
        pass_state.record_pass(settings, record, _home(env))
    except Exception as exc:  # the pass's line is still logged and its rc stays
        passlog.warn(record, f"state_unwritten:{type(exc).__name__}: {exc}")
    return (code if passlog.emit(record, settings.log_format) else 1), record.get(capped_pass.WATCH, [])


def once(settings: Settings, env: dict[str, str], stop: StopSignals, clock=time.monotonic) -> int:
    """One capped pass, as a timer or a crontab line runs it. Run by systemd (PACER_SCHEDULER), it
    then watches until just before the timer's next tick and passes again when a slot frees."""
    start = clock()
    code, pids = _capped(settings, env, stop)
    if env.get("PACER_SCHEDULER") == "systemd":
        until = start + MINUTE / settings.runs_per_minute - TICK_MARGIN
        code = max(code, refill(lambda: _capped(settings, env, stop), pids, until, clock, stop.sleep, stop))
    return code


def run(
    settings: Settings,
    env: dict[str, str],
    clock=time.monotonic,
    sleep=None,
    stop: StopSignals | None = None,
) -> int:
    """The loop's exit status: the worst of its passes'. Never raises."""
    if stop is None:
        with StopSignals() as installed:
            return run(settings, env, clock, sleep, installed)
    board = settings.board
    try:
        board = board or boards.current_board(boards.hermes_root(env), env)
        locking.ensure_dir(settings.lock_dir)
        lock_fd = locking.try_lock(host.loop_lock(settings.lock_dir, board))
    except (locking.LockDirUnsafe, OSError) as exc:
        return _emit(settings, env, {"board": board, "reason": "lock_unavailable", "error": str(exc)}, 1)
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        return _emit(settings, env, {"board": board, "reason": "internal_error", "error": error}, 1)
    if lock_fd is None:
        return _emit(settings, env, {"board": board, "reason": "locked"}, 0)
    try:
        return _loop(settings, env, clock, sleep or stop.sleep, stop)
    finally:
        os.close(lock_fd)


def _loop(settings: Settings, env: dict[str, str], clock, sleep, stop: StopSignals) -> int:
    interval = MINUTE / settings.runs_per_minute
    start = clock()
    end = start + MINUTE - TICK_MARGIN  # before cron starts the next loop

    def again() -> tuple[int, list[int]]:
        return _guarded_pass(settings, env, max(1.0, start + MINUTE - clock()), stop)

    worst = 0
    pids: list[int] = []
    for index in range(settings.runs_per_minute):
        slot = start + index * interval
        worst = max(worst, refill(again, pids, min(slot, end), clock, sleep, stop))
        now = clock()
        if now >= slot + interval or now >= start + MINUTE:
            continue  # the previous pass overran this slot: skip it, never catch up
        if now < slot:
            sleep(slot - now)
        if stop.received is not None:
            break
        code, pids = again()
        worst = max(worst, code)
    return max(worst, refill(again, pids, end, clock, sleep, stop))
