"""Between two ticks, pass again as soon as a slot frees instead of waiting for the next tick.

When a pass leaves ready work waiting because every slot is taken, it names the live workers that
hold the slots (capped_pass.WATCH). A worker's end is the only way a slot of ours frees, so the
loop checks those pids a few times a second (a signal-0 kill each: no /proc scan, no SQLite, no
CLI) and runs the next pass the moment one is gone. Nothing is watched while nothing waits.
"""

from __future__ import annotations

import os

POLL = 0.2


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # a pid of another user: ours ended and the number was taken
    return True


def wait_for_exit(pids: list[int], until: float, clock, sleep, stop) -> bool:
    """Whether one of `pids` ended before `until` (clock time); False at `until` or on a stop."""
    while stop.received is None:
        if not all(alive(pid) for pid in pids):
            return True
        left = until - clock()
        if left <= 0:
            return False
        sleep(min(POLL, left))
    return False
