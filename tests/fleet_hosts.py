"""Several Hermes "hosts" on one machine that share one LLM endpoint, as a fleet (docs/fleet.md).

A host is a Hermes home of its own (its profile `worker` sends an API key naming the host, so the
fake endpoint can tell the hosts apart), with its own settings file, lock and state directories,
and its sub-minute loop run in a PID namespace of its own (`unshare --pid --fork --mount-proc`): the
pacer counts workers in /proc, and there each host sees only its own processes, as on separate
machines. Inside the namespace a small init (this file, run as a script) starts the loop again each
time it ends, as cron does every minute, and reaps what the namespace leaves to it.

Run as a script: `python3 fleet_hosts.py SUBMINUTE_SCRIPT` (the init of one host's namespace).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SUBMINUTE = REPO / "scripts" / "hermes-kanban-dispatch-subminute.sh"


class Unavailable(RuntimeError):
    """No PID namespace can be made here: the test cannot run."""


def check_unshare() -> None:
    """Raise Unavailable (with the reason) when `unshare --pid --fork --mount-proc` is refused."""
    tool = shutil.which("unshare")
    if tool is None:
        raise Unavailable("no unshare command (util-linux)")
    proc = subprocess.run(
        [tool, "--pid", "--fork", "--mount-proc", "true"], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise Unavailable(f"unshare --pid --fork --mount-proc refused: {proc.stderr.strip()[-300:]}")


class FleetHost:
    """One host of the fleet: a Hermes home (tests/hermes_host.py) and its paced loop."""

    def __init__(self, hermes_host, name: str, settings: dict[str, str]) -> None:
        self.hermes = hermes_host
        self.name = name
        home = hermes_host.home
        self.settings_file = home / "pacer.env"
        self.log = home / "pacer.log"
        self.settings_file.write_text("".join(f"{key}={value}\n" for key, value in settings.items()))
        self.proc: subprocess.Popen | None = None
        self.first_seen: dict[str, float] = {}  # card -> when its worker was first seen (spawn)

    @property
    def db(self) -> Path:
        return self.hermes.root / "kanban.db"

    def use_api_key(self) -> None:
        """The workers of this host send its name as their API key."""
        for config in self.hermes.root.rglob("config.yaml"):
            config.write_text(config.read_text().replace("api_key: x\n", f"api_key: {self.name}\n"))

    def start(self) -> None:
        env = self.hermes.pacer_env(PACER_SETTINGS_FILE=str(self.settings_file))
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, __file__, str(SUBMINUTE)],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def stop(self) -> None:
        """End the namespace: its init killed, the kernel kills everything in it."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.hermes.kill_everything()

    def statuses(self) -> dict[str, str]:
        """Card -> status, read from the board read-only (no CLI: it is polled)."""
        conn = sqlite3.connect(f"{self.db.as_uri()}?mode=ro", uri=True, timeout=5)
        try:
            return dict(conn.execute("SELECT id, status FROM tasks").fetchall())
        finally:
            conn.close()

    def done(self) -> bool:
        try:
            statuses = self.statuses()
        except sqlite3.Error:
            return False
        return bool(statuses) and set(statuses.values()) == {"done"} and not self.hermes.workers()

    def records(self) -> list[dict]:
        import json

        lines = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
        return [json.loads(line) for line in lines if line.startswith("{")]


class SpawnWatcher(threading.Thread):
    """Notes when each card's worker first appears, every 50 ms, on every host (the test sees every
    namespace from outside)."""

    def __init__(self, hosts: list[FleetHost]) -> None:
        super().__init__(daemon=True)
        self.hosts = hosts
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            now = time.time()
            for host in self.hosts:
                for task in host.hermes.workers():
                    host.first_seen.setdefault(task, now)
            self._stop_event.wait(0.05)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def run_fleet(hosts: list[FleetHost], timeout: float) -> float:
    """Start every host's loop and wait until every card of every host is done; the makespan in
    seconds. Raises AssertionError naming what was left (with the logs) after `timeout`."""
    watcher = SpawnWatcher(hosts)
    watcher.start()
    started = time.monotonic()
    try:
        for host in hosts:
            host.start()
        while not all(host.done() for host in hosts):
            if time.monotonic() - started > timeout:
                left = {host.name: host.statuses() for host in hosts}
                logs = "\n".join(host.log.read_text(errors="replace")[-4000:] for host in hosts)
                raise AssertionError(f"cards not all done after {timeout:g}s: {left}\n{logs}")
            time.sleep(0.5)
        return time.monotonic() - started
    finally:
        watcher.stop()
        for host in hosts:
            host.stop()


def startups(hosts: list[FleetHost], requests: list[dict]) -> list[float]:
    """Seconds from each worker's spawn (first seen) to its first request at the endpoint."""
    first_request: dict[str, float] = {}
    for request in requests:
        if request["task"]:
            first_request[request["task"]] = min(request["start"], first_request.get(request["task"], 1e18))
    return [
        first_request[task] - seen
        for host in hosts
        for task, seen in host.first_seen.items()
        if task in first_request
    ]


# --- the namespace's init ------------------------------------------------------------------------


def _init(subminute: str) -> int:
    """PID 1 of a host's namespace: run the sub-minute loop again each time it ends, reap every
    orphan (the workers' parent, the dispatch CLI, exits before them), until killed."""
    while True:
        loop = subprocess.Popen([subminute], stdin=subprocess.DEVNULL)
        while True:
            try:
                pid, _ = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                raise
            if pid == loop.pid:
                loop.returncode = 0  # reaped here: Popen must not wait for it again
                break


if __name__ == "__main__":
    sys.exit(_init(sys.argv[1]))
