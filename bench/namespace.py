"""A bench "host": a PID namespace of its own, so its pacer sees only its own processes in /proc.

Two Hermes homes on one machine stand for two hosts of a fleet. Each host's dispatch loop runs in
a PID namespace with /proc mounted for it (`unshare --pid --fork --mount-proc`, root), as on a
host of its own: the loop, the `hermes` CLI it starts and the workers the dispatcher spawns are
all in there, and nothing of the other host is. The network is shared: both reach the one endpoint
on 127.0.0.1.

The namespace lives as long as its first process, a small init that reaps the workers orphaned
into it (the dispatcher detaches them), so it outlives the loop that cron restarts each minute.
Loops enter it with `nsenter`. The harness itself stays outside: its /proc sees every host.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

# PID 1 of the namespace: reaps every child; a signal from inside cannot end it (PID 1 ignores
# what it has no handler for), SIGKILL from outside ends it and, with it, the whole namespace.
INIT = (
    "import os, signal\n"
    "signal.signal(signal.SIGCHLD, lambda *_: None)\n"
    "while True:\n"
    "    try:\n"
    "        os.wait()\n"
    "    except ChildProcessError:\n"
    "        signal.pause()\n"
)


class PidNamespace:
    def __init__(self, timeout: float = 10.0):
        # This Python itself, not a `python3` found on PATH: a shim there (pyenv) would be PID 1.
        self._unshare = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", INIT],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        # unshare forks the namespace's PID 1; its pid as seen from here is the one to enter.
        children = Path(f"/proc/{self._unshare.pid}/task/{self._unshare.pid}/children")
        deadline = time.monotonic() + timeout
        self.init = 0
        while not self.init:
            with contextlib.suppress(OSError, ValueError, IndexError):
                self.init = int(children.read_text().split()[0])
            if self.init:
                break
            if self._unshare.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(
                    "unshare --pid --fork --mount-proc did not start a PID namespace (the bench's "
                    "fleet workloads need root)"
                )
            time.sleep(0.02)

    def command(self, argv: list[str]) -> list[str]:
        """`argv` run inside the namespace (nsenter waits for it, so its CPU is counted)."""
        return ["nsenter", f"--target={self.init}", "--pid", "--mount", "--", *argv]

    def close(self) -> None:
        """End the namespace and everything left in it."""
        if self.init:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.init, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            self._unshare.kill()
        self._unshare.wait()
