"""RUNS_PER_MINUTE capped passes spread evenly over one minute, for a once-a-minute cron line.

Each pass has a slot on a fixed grid from the loop's start, so a slow pass never pushes the next
ones past the minute and into the next cron run: a slot already past is skipped, not made up.
The loop holds its own per-board lock: an overlapping cron run exits at once.

A fleet host's pass outside its admission window with work waiting says when the window opens
(fleet.OPENS): the loop passes again at that moment, whatever its grid, so a host never misses its
window because its passes are out of phase with the fleet's slices.

One bad pass never ends the loop: whatever goes wrong in a pass (its log line included) becomes
that pass's exit status, and the loop goes on to its next slot. A stop signal ends the running
pass as the capped pass ends (its hermes calls first), then the loop, before its lock is released.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import board as boards
from . import capped_pass, fleet, host, locking, pass_state, passlog, watch
from .hermes import DRAIN, GRACE, StopSignals, end_group
from .settings import Settings

MINUTE = 60.0
# A CAP_SCRIPT pass that is stopped ends its own hermes call (GRACE, DRAIN) and logs first.
CAP_SCRIPT_GRACE = GRACE + DRAIN + 2.0
_CAP_SCRIPT_POLL = 0.2
# A timer-run pass that watches for a freed slot ends this long before the next tick.
TICK_MARGIN = 0.5
# A pass for a fleet window runs this long after it opens: never a hair before, by another clock.
WINDOW_MARGIN = 0.05


@dataclass(frozen=True)
class Next:
    """What a pass leaves the loop to wait for: the workers whose end frees a slot, and the Unix time
    the fleet host's window opens (None: not waiting for one)."""

    pids: list[int] = field(default_factory=list)
    opens_at: float | None = None  # Unix time

    def opens(self, clock) -> float | None:
        """When the window opens on the loop's clock (a pass runs just after it has)."""
        if self.opens_at is None:
            return None
        return clock() + max(0.0, self.opens_at - time.time()) + WINDOW_MARGIN


def _next(record: dict) -> Next:
    return Next(record.get(capped_pass.WATCH, []), record.get(fleet.OPENS))


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


def _one_pass(settings: Settings, env: dict[str, str], budget: float, stop: StopSignals) -> tuple[int, Next]:
    """A pass's status, and what to wait for before the next (nothing for a CAP_SCRIPT pass)."""
    if settings.cap_script is None:
        return _capped(settings, env, stop)
    return _cap_script_pass(settings, env, budget, stop), Next()


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
) -> tuple[int, Next]:
    try:
        return _one_pass(settings, env, budget, stop)
    except Exception as exc:  # the loop goes on to its next slot whatever a pass did
        error = f"{type(exc).__name__}: {exc}"
        record = {"board": settings.board, "reason": "internal_error", "error": error}
        return _emit(settings, env, record, 1), Next()


def refill(pass_again, after: Next, until: float, clock, sleep, stop: StopSignals) -> tuple[int, Next]:
    """Until `until`: each time a watched worker ends, or the fleet window a pass waits for opens,
    `pass_again()` (its status and what to wait for next). The worst status of those passes, and
    what the last of them left to wait for."""
    worst = 0
    while after.pids or after.opens_at is not None:
        opens = after.opens(clock)
        if opens is not None and opens >= until:
            opens = None  # it opens after `until`: a later pass sees to it
            if not after.pids:
                break
        ended = watch.wait_for_exit(after.pids, until if opens is None else opens, clock, sleep, stop)
        if stop.received is not None or not (ended or opens is not None):
            break
        code, after = pass_again()
        worst = max(worst, code)
    return worst, after


def _capped(settings: Settings, env: dict[str, str], stop: StopSignals) -> tuple[int, Next]:
    code, record = capped_pass.run(settings, env, stop)
    try:
        pass_state.record_pass(settings, record, _home(env))
    except Exception as exc:  # the pass's line is still logged and its rc stays
        passlog.warn(record, f"state_unwritten:{type(exc).__name__}: {exc}")
    return (code if passlog.emit(record, settings.log_format) else 1), _next(record)


def once(settings: Settings, env: dict[str, str], stop: StopSignals, clock=time.monotonic) -> int:
    """One capped pass, as a timer or a crontab line runs it. Run by systemd (PACER_SCHEDULER), it
    then watches until just before the timer's next tick and passes again when a slot frees or its
    fleet window opens."""
    start = clock()
    code, after = _capped(settings, env, stop)
    if env.get("PACER_SCHEDULER") == "systemd":
        until = start + MINUTE / settings.runs_per_minute - TICK_MARGIN
        worst, _ = refill(lambda: _capped(settings, env, stop), after, until, clock, stop.sleep, stop)
        code = max(code, worst)
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

    def again() -> tuple[int, Next]:
        return _guarded_pass(settings, env, max(1.0, start + MINUTE - clock()), stop)

    worst = 0
    after = Next()
    for index in range(settings.runs_per_minute):
        slot = start + index * interval
        code, after = refill(again, after, min(slot, end), clock, sleep, stop)
        worst = max(worst, code)
        now = clock()
        if now >= slot + interval or now >= start + MINUTE:
            continue  # the previous pass overran this slot: skip it, never catch up
        if now < slot:
            sleep(slot - now)
        if stop.received is not None:
            break
        code, after = again()
        worst = max(worst, code)
    return max(worst, refill(again, after, end, clock, sleep, stop)[0])
