"""What starts dispatch passes in a trial: a command run on a fixed cadence, as cron or a timer would.

The CPU a driver costs is what its commands use, with everything they wait for (the `hermes` CLI
calls of a pass), but not the workers Hermes starts: those are detached and belong to the work.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def _live_cpu(pid: int) -> float:
    """User and system CPU of a running process and of the children it has waited for."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # Fields after the command name: utime, stime, cutime, cstime are the 12th to the 15th.
    return sum(int(value) for value in fields[11:15]) / TICKS


def _children(pid: int) -> list[int]:
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        return []


class Driver(threading.Thread):
    """Runs `argv` every `period` seconds (a run that takes longer delays the next one).

    `lines_are_passes`: the command logs one line per pass (the sub-minute loop); otherwise each
    run is one pass.
    """

    def __init__(
        self, argv: list[str], env: dict[str, str], period: float, log: Path, lines_are_passes: bool
    ):
        super().__init__(daemon=True)
        self.argv, self.env, self.period, self.log = argv, env, period, log
        self.lines_are_passes = lines_are_passes
        self._stop_event = threading.Event()
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._done_cpu = 0.0
        self.runs = 0

    def run(self) -> None:
        next_start = time.monotonic()
        with open(self.log, "ab") as log:
            while not self._stop_event.is_set():
                with self._lock:
                    if self._stop_event.is_set():
                        break
                    proc = subprocess.Popen(
                        self.argv,
                        env=self.env,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                    self._pid = proc.pid
                    self.runs += 1
                _, status, usage = os.wait4(proc.pid, 0)
                proc.returncode = os.waitstatus_to_exitcode(status)
                with self._lock:
                    self._done_cpu += usage.ru_utime + usage.ru_stime
                    self._pid = None
                # A run that overran its period is followed at once, and missed starts are not made up.
                next_start = max(next_start + self.period, time.monotonic())
                self._stop_event.wait(next_start - time.monotonic())

    def cpu(self) -> float:
        """CPU seconds so far, the running command included."""
        with self._lock:
            if not self._pid:
                return self._done_cpu
            live = _live_cpu(self._pid)
            # A command run in a host's PID namespace is nsenter's child: nsenter waits for it, so
            # its CPU shows in nsenter's only once it ends; while it runs, it is read itself.
            if Path(self.argv[0]).name == "nsenter":
                live += sum(_live_cpu(child) for child in _children(self._pid))
            return self._done_cpu + live

    def passes(self) -> int:
        if not self.lines_are_passes:
            return self.runs
        with contextlib.suppress(OSError):
            return sum(1 for line in self.log.read_text(errors="replace").splitlines() if "reason=" in line)
        return 0

    def stop(self) -> None:
        with self._lock:
            self._stop_event.set()
            if self._pid:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._pid, signal.SIGTERM)
        self.join(timeout=90)
