"""Between two ticks, pass again as soon as a slot frees instead of waiting for the next tick.

When a pass leaves ready work waiting because every slot is taken, it names the live workers that
hold the slots (capped_pass.WATCH). A worker's end is the only way a slot of ours frees, so the
loop checks those pids a few times a second (one read of /proc/PID/stat each: no /proc scan, no
SQLite, no CLI) and runs the next pass the moment one is gone. Nothing is watched while nothing waits.
"""

from __future__ import annotations

POLL = 0.1


def alive(pid: int, proc: str = "/proc") -> bool:
    """Whether the process runs. A worker that has exited stays a zombie until whoever inherited
    it reaps it (on some hosts only now and then): a zombie has ended and holds no slot."""
    try:
        with open(f"{proc}/{pid}/stat", "rb") as handle:
            stat = handle.read(512)
    except OSError:
        return False
    # pid (comm) state ...: comm may hold spaces and parentheses, the state follows the last ")".
    return stat.rpartition(b")")[2][1:2] not in (b"Z", b"X", b"")


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
