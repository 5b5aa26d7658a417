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

from . import board as boards
from . import capped_pass, host, locking, passlog
from .hermes import DRAIN, GRACE, StopSignals, end_group
from .settings import Settings

MINUTE = 60.0
# A CAP_SCRIPT pass that is stopped ends its own hermes call (GRACE, DRAIN) and logs first.
CAP_SCRIPT_GRACE = GRACE + DRAIN + 2.0
_CAP_SCRIPT_POLL = 0.2


def _emit(settings: Settings, record: dict, code: int) -> int:
    """Log a record of the loop's own; the pass's status, 1 when the record could not be written."""
    written = passlog.emit({**record, "rc": code}, settings.log_format)
    return code if written else 1


def _one_pass(settings: Settings, env: dict[str, str], budget: float, stop: StopSignals) -> int:
    if settings.cap_script is None:
        code, record = capped_pass.run(settings, env, stop)
        return code if passlog.emit(record, settings.log_format) else 1
    return _cap_script_pass(settings, env, budget, stop)


def _cap_script_pass(settings: Settings, env: dict[str, str], budget: float, stop: StopSignals) -> int:
    """Run CAP_SCRIPT (it logs its own record) in a process group of its own, bounded by `budget`."""
    record = {"board": settings.board}
    try:
        proc = subprocess.Popen(
            [settings.cap_script], env=env, stdin=subprocess.DEVNULL, start_new_session=True
        )
    except OSError as exc:
        error = f"CAP_SCRIPT={settings.cap_script}: {exc.strerror}"
        return _emit(settings, {**record, "reason": "cap_script_unavailable", "error": error}, 1)
    deadline = time.monotonic() + budget
    while proc.poll() is None and stop.received is None and (left := deadline - time.monotonic()) > 0:
        stop.sleep(min(_CAP_SCRIPT_POLL, left))
    if proc.poll() is not None:
        return proc.returncode
    end_group(proc, CAP_SCRIPT_GRACE)
    if stop.received is not None:
        return 1  # a capped pass logs its own `terminated` record
    error = f"CAP_SCRIPT={settings.cap_script} ran over {budget:g}s"
    return _emit(settings, {**record, "reason": "cap_script_timeout", "error": error}, 1)


def _guarded_pass(settings: Settings, env: dict[str, str], budget: float, stop: StopSignals) -> int:
    try:
        return _one_pass(settings, env, budget, stop)
    except Exception as exc:  # the loop goes on to its next slot whatever a pass did
        error = f"{type(exc).__name__}: {exc}"
        return _emit(settings, {"board": settings.board, "reason": "internal_error", "error": error}, 1)


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
        return _emit(settings, {"board": board, "reason": "lock_unavailable", "error": str(exc)}, 1)
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        return _emit(settings, {"board": board, "reason": "internal_error", "error": error}, 1)
    if lock_fd is None:
        return _emit(settings, {"board": board, "reason": "locked"}, 0)
    try:
        return _loop(settings, env, clock, sleep or stop.sleep, stop)
    finally:
        os.close(lock_fd)


def _loop(settings: Settings, env: dict[str, str], clock, sleep, stop: StopSignals) -> int:
    interval = MINUTE / settings.runs_per_minute
    start = clock()
    worst = 0
    for index in range(settings.runs_per_minute):
        slot = start + index * interval
        now = clock()
        if now >= slot + interval or now >= start + MINUTE:
            continue  # the previous pass overran this slot: skip it, never catch up
        if now < slot:
            sleep(slot - now)
        if stop.received is not None:
            break
        budget = max(1.0, start + MINUTE - clock())
        worst = max(worst, _guarded_pass(settings, env, budget, stop))
    return worst
