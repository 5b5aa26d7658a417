"""RUNS_PER_MINUTE capped passes spread evenly over one minute, for a once-a-minute cron line.

Each pass has a slot on a fixed grid from the loop's start, so a slow pass never pushes the next
ones past the minute and into the next cron run: a slot already past is skipped, not made up.
The loop holds its own per-board lock: an overlapping cron run exits at once.
"""

from __future__ import annotations

import os
import subprocess
import time

from . import board as boards
from . import capped_pass, locking, passlog
from .settings import Settings

MINUTE = 60.0


def _one_pass(settings: Settings, env: dict[str, str], budget: float) -> int:
    if settings.cap_script is None:
        code, record = capped_pass.run(settings, env)
        passlog.emit(record, settings.log_format)
        return code
    try:
        return subprocess.run(
            [settings.cap_script], env=env, stdin=subprocess.DEVNULL, timeout=budget, check=False
        ).returncode
    except subprocess.TimeoutExpired:
        passlog.emit(
            {
                "board": settings.board,
                "reason": "cap_script_timeout",
                "error": f"{settings.cap_script} ran over {budget:g}s",
            },
            settings.log_format,
        )
        return 1
    except OSError as exc:
        passlog.emit(
            {
                "board": settings.board,
                "reason": "cap_script_unavailable",
                "error": f"{settings.cap_script}: {exc.strerror}",
            },
            settings.log_format,
        )
        return 1


def run(settings: Settings, env: dict[str, str], clock=time.monotonic, sleep=time.sleep) -> int:
    board = settings.board or boards.current_board(boards.hermes_root(env), env)
    try:
        locking.ensure_dir(settings.lock_dir)
        lock_fd = locking.try_lock(settings.lock_dir / f"subminute-{board}.lock")
    except (locking.LockDirUnsafe, OSError) as exc:
        passlog.emit({"board": board, "reason": "lock_unavailable", "error": str(exc)}, settings.log_format)
        return 1
    if lock_fd is None:
        passlog.emit({"board": board, "reason": "locked"}, settings.log_format)
        return 0
    try:
        return _loop(settings, env, clock, sleep)
    finally:
        os.close(lock_fd)


def _loop(settings: Settings, env: dict[str, str], clock, sleep) -> int:
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
        budget = max(1.0, start + MINUTE - clock())
        worst = max(worst, _one_pass(settings, env, budget))
    return worst
