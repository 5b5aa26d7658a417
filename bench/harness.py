"""One trial: a burst of ready cards on fresh boards, one strategy dispatching, everything recorded.

A lab is one Hermes release in a scratch home, with the fake LLM endpoint on 127.0.0.1 and one
worker profile per board of a trial ("lanes"); every trial makes boards of its own in that home.
The endpoint records each request's start and end and the card it is for; a sampler reads the
live worker processes from /proc every 100 ms; the cards' statuses are read from the boards'
SQLite files (read-only), so the harness itself never starts the `hermes` CLI while a trial runs.
A workload may add a foreign request stream at the endpoint or switch the endpoint off for a while
in the middle of the burst.

A workload of several hosts (a fleet on one endpoint) gives each host a Hermes home of its own in
the lab, with its own settings, lock and state directories, and runs each host's dispatch loop in
a PID namespace of its own (bench/namespace.py), so each host's pacer sees only its own processes.
"""

from __future__ import annotations

import contextlib
import sqlite3
import string
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "tests"), str(REPO / "pacer")]

import hermes_install  # noqa: E402
from hermes_host import HermesHost  # noqa: E402
from hermes_pacer import board as boards  # noqa: E402

from . import endpoint  # noqa: E402
from .drivers import Driver  # noqa: E402
from .namespace import PidNamespace  # noqa: E402
from .strategies import Strategy  # noqa: E402

LANES = ("lane-a", "lane-b")


@dataclass(frozen=True)
class Workload:
    key: str
    label: str
    boards: int  # per host
    cards: int  # per board
    # Each board's cap, and the cap of the endpoint they share (the pacer's endpoint budget).
    cap: int
    endpoint_cap: int
    # Measure the driver's cost while nothing is ready, after the burst.
    idle: bool = True
    # Plain requests kept in flight at the endpoint by someone else (interactive use).
    foreign: int = 0
    # Switch the endpoint off in the middle of the burst (Settings says when and how long).
    outage: bool = False
    # Hermes hosts that share the endpoint, each with `boards` boards of its own.
    hosts: int = 1
    # Each host's dispatch loop in a PID namespace of its own (what a host of its own sees).
    pid_namespaces: bool = False
    # The workload whose makespan this one's is compared with (the same cards on one host).
    yardstick: str | None = None


@dataclass(frozen=True)
class Settings:
    cap: int
    hold: float
    final_hold: float
    # The idle spell; None: one period of the driver (a whole minute of the sub-minute loop, start
    # included), and at least 15 s.
    idle_seconds: float | None
    timeout: float
    # The outage workload: the endpoint is down from `outage_at` s after the burst's first request
    # for `outage_seconds`; a worker still alive `hang_after` s after it came back, without a request
    # since, hung.
    outage_at: float = 12.0
    outage_seconds: float = 60.0
    hang_after: float = 30.0


class Lab:
    def __init__(self, version: str, root: Path, settings: Settings):
        self.version = version
        self.settings = settings
        home = root / f"hermes-{version}"
        home.mkdir(parents=True)
        self.host = HermesHost(home, hermes_install.ensure(version))
        self.server = endpoint.serve(settings.hold, settings.final_hold)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        port = self.server.server_address[1]
        self.host.configure(port, dict.fromkeys(LANES, port))
        self.url = f"http://127.0.0.1:{port}/v1"
        self.trials = 0
        self._root = root
        self.hosts = [self.host]
        # The hosts' PID namespaces of the trial under way: an interrupted trial's end with the lab.
        self.namespaces: list[PidNamespace] = []

    def hosts_for(self, count: int) -> list[HermesHost]:
        """The first `count` hosts, another Hermes home on the same endpoint made for each missing."""
        while len(self.hosts) < count:
            home = self._root / f"hermes-{self.version}-host{len(self.hosts) + 1}"
            home.mkdir(parents=True)
            host = HermesHost(home, self.host.hermes_bin)
            port = self.server.server_address[1]
            host.configure(port, dict.fromkeys(LANES, port))
            self.hosts.append(host)
        return self.hosts[:count]

    def set_native_cap(self, cap: int | None, host: HermesHost | None = None) -> None:
        config = (host or self.host).root / "config.yaml"
        lines = [line for line in config.read_text().splitlines() if "max_in_progress:" not in line]
        if cap is not None:
            lines.insert(lines.index("kanban:") + 1, f"  max_in_progress: {cap}")
        config.write_text("\n".join(lines) + "\n")

    def close_namespaces(self) -> None:
        while self.namespaces:
            self.namespaces.pop().close()

    def statuses(self, board: str, host: HermesHost | None = None) -> dict[str, str]:
        host = host or self.host
        path = boards.db_path(host.root, board, host.env)
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as db:
            return dict(db.execute("SELECT id, status FROM tasks"))

    def outcomes(self, board: str, host: HermesHost | None = None) -> dict[str, list]:
        """Every card's runs, oldest first: their outcome (None while a run is open)."""
        host = host or self.host
        path = boards.db_path(host.root, board, host.env)
        runs: dict[str, list] = {}
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as db:
            for task, outcome in db.execute("SELECT task_id, outcome FROM task_runs ORDER BY id"):
                runs.setdefault(task, []).append(outcome)
        return runs

    def close(self) -> None:
        self.close_namespaces()
        for host in self.hosts:
            host.kill_everything()
        self.server.shutdown()
        self.server.server_close()


class Sampler(threading.Thread):
    """First and last sighting of each card's worker, from /proc every 100 ms (every host's: the
    harness's /proc sees into each host's PID namespace)."""

    def __init__(self, hosts: list[HermesHost], t0: float):
        super().__init__(daemon=True)
        self.hosts, self.t0 = hosts, t0
        self.cards: dict[str, list] = {}
        self.live = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            now = time.time() - self.t0
            workers = {card: board for host in self.hosts for card, board in host.workers().items()}
            for card, board in workers.items():
                self.cards.setdefault(card, [now, now, board])[1] = now
            self.live = len(workers)
            self._stop_event.wait(0.1)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


# A card in one of these will not be dispatched again without someone's hand.
SETTLED = ("done", "blocked", "failed", "archived")
PACER_RUNNERS = ("subminute", "timer")


class Outage(threading.Thread):
    """The endpoint down for `seconds`, from `at` seconds after the burst's first request reached it
    (workers take a while to start, longer on a loaded machine: a fixed time could fall before any
    call); when it really went down and came back, in seconds after t0."""

    def __init__(self, server, t0: float, at: float, seconds: float):
        super().__init__(daemon=True)
        self.server, self.t0, self.at, self.seconds = server, t0, at, seconds
        self.window: list[float] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self.server.recorder.stats()["requests"]:
            if self._stop_event.wait(0.1):
                return
        if self._stop_event.wait(self.at):
            return
        endpoint.set_state(self.server, "down")
        self.window = [time.time() - self.t0]
        self._stop_event.wait(self.seconds)
        endpoint.set_state(self.server, "up")
        self.window.append(time.time() - self.t0)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


FLEET = "bench-fleet"


def pacer_endpoint_env(
    lab: Lab, workload: Workload, slugs: list[str], metrics: bool = True
) -> dict[str, str]:
    """The endpoint's budget as the role writes it into each board's settings file (`slugs`: the
    host's boards on it)."""
    return {
        "PACER_ENDPOINT": "bench",
        "PACER_ENDPOINT_URL": lab.url,
        # With its metrics switched off the endpoint is a plain OpenAI-compatible server.
        "PACER_ENDPOINT_KIND": "vllm" if metrics else "openai",
        "PACER_ENDPOINT_MAX_PARALLEL": str(workload.endpoint_cap),
        "PACER_ENDPOINT_BOARDS": ",".join(slugs),
    }


def static_shares(cap: int, hosts: int) -> list[int]:
    """Each host's static share as the role splits the endpoint's cap (docs/fleet.md, no floors):
    the cap evenly, the remainder to the first hosts, at least 1 each."""
    return [max(1, cap // hosts + (index < cap % hosts)) for index in range(hosts)]


def pacer_fleet_env(workload: Workload, index: int) -> dict[str, str]:
    """Host `index`'s place in the fleet, as the role renders it (slice and start-up at defaults)."""
    return {
        "PACER_FLEET": FLEET,
        "PACER_FLEET_HOSTS": str(workload.hosts),
        "PACER_FLEET_INDEX": str(index),
        "PACER_FLEET_SHARE": str(static_shares(workload.endpoint_cap, workload.hosts)[index]),
    }


def run_trial(lab: Lab, strategy: Strategy, workload: Workload, say, idle: bool = True) -> dict:
    """Run one trial to the end (every card settled, no worker left) and, if `idle`, an idle spell;
    its raw series."""
    settings = lab.settings
    lab.trials += 1
    hosts = lab.hosts_for(workload.hosts)
    # Board slugs are unique over the trial's hosts, so a board's figures are its host's too.
    letters = iter(string.ascii_lowercase)
    host_boards = [[f"t{lab.trials}{next(letters)}" for _ in range(workload.boards)] for _ in hosts]
    slugs = [board for boards_of_host in host_boards for board in boards_of_host]
    host_of = {
        board: host
        for host, boards_of_host in zip(hosts, host_boards, strict=True)
        for board in boards_of_host
    }
    owner = {}
    for host, boards_of_host in zip(hosts, host_boards, strict=True):
        for lane, board in zip(LANES, boards_of_host, strict=False):
            host.create_board(board)
            owner.update(dict.fromkeys(host.create_cards(workload.cards, assignee=lane, board=board), board))
        lab.set_native_cap(workload.cap if strategy.native_cap else None, host)
    # Lock and state directories per host and trial: no endpoint state (an outage's ramp, the
    # foreign load a fleet host remembers) carries into the next trial or over to another host.
    extras = []
    for index, (host, boards_of_host) in enumerate(zip(hosts, host_boards, strict=True)):
        extra = {"PACER_LOCK_DIR": str(host.home / "locks" / f"trial-{lab.trials}")}
        if workload.pid_namespaces:
            # A host of its own has its own state directory (the other workloads write none).
            state = host.home / "state" / f"trial-{lab.trials}"
            state.mkdir(parents=True)  # the role makes it; the pass only writes in it
            extra["PACER_STATE_DIR"] = str(state)
        if strategy.runner in PACER_RUNNERS:
            extra.update(pacer_endpoint_env(lab, workload, boards_of_host, strategy.endpoint_metrics))
            if strategy.fleet:
                extra.update(pacer_fleet_env(workload, index))
        extras.append(extra)
    endpoint.set_flavour(lab.server, "vllm" if strategy.endpoint_metrics else "openai")
    lab.server.recorder.reset()

    t0 = time.time()
    sampler = Sampler(hosts, t0)
    sampler.start()
    stream = endpoint.foreign(lab.url, workload.foreign, settings.final_hold) if workload.foreign else None
    outage = None
    if workload.outage:
        outage = Outage(lab.server, t0, settings.outage_at, settings.outage_seconds)
        outage.start()
    logs = lab.host.home / "logs"
    logs.mkdir(exist_ok=True)
    drivers = []
    if workload.pid_namespaces:
        lab.namespaces = [PidNamespace() for _ in hosts]
    for index, (host, boards_of_host) in enumerate(zip(hosts, host_boards, strict=True)):
        for board in boards_of_host:
            argv, env, period, lines_are_passes = strategy.driver(board, workload.cap, host.hermes_bin)
            env.update(extras[index])
            if lab.namespaces:
                argv = lab.namespaces[index].command(argv)
            driver = Driver(argv, host.pacer_env(**env), period, logs / f"{board}.log", lines_are_passes)
            driver.start()
            drivers.append(driver)

    completed, next_say = False, 0.0
    while time.time() - t0 < settings.timeout:
        statuses = [status for board in slugs for status in lab.statuses(board, host_of[board]).values()]
        done = sum(status == "done" for status in statuses)
        settled = sum(status in SETTLED for status in statuses)
        outage_over = outage is None or len(outage.window) == 2
        if settled == len(owner) and sampler.live == 0 and outage_over:
            completed = True
            break
        if time.time() - t0 >= next_say:
            in_flight = lab.server.recorder.stats()["in_flight"]
            elapsed = time.time() - t0
            say(f"{elapsed:5.0f} s  done {done}/{len(owner)}  workers {sampler.live}  in flight {in_flight}")
            next_say += 10
        time.sleep(0.5)
    burst_cpu, burst_passes = sum(d.cpu() for d in drivers), sum(d.passes() for d in drivers)
    elapsed = time.time() - t0
    if stream:
        stream.stop()
    if outage:
        outage.stop()
        endpoint.set_state(lab.server, "up")
    idle_seconds = 0.0
    if completed and workload.idle and idle:
        idle_seconds = settings.idle_seconds
        if idle_seconds is None:
            idle_seconds = max(15.0, max(driver.period for driver in drivers))
    if idle_seconds:
        say(f"{elapsed:5.0f} s  all done; {idle_seconds:g} s idle")
        time.sleep(idle_seconds)
    idle_cpu = sum(d.cpu() for d in drivers) - burst_cpu
    for driver in drivers:
        driver.stop()
    sampler.stop()
    lab.close_namespaces()
    endpoint.set_flavour(lab.server, "vllm")
    for host in hosts:
        lab.set_native_cap(None, host)
        if not completed:
            host.kill_everything()

    requests = [
        [
            entry["start"] - t0,
            (entry["end"] or time.time()) - t0,
            owner.get(entry["task"], "foreign"),
            entry["task"],
        ]
        for entry in lab.server.recorder.stats()["requests"]
    ]
    statuses, outcomes = {}, {}
    for board in slugs:
        statuses.update(lab.statuses(board, host_of[board]))
        outcomes.update(lab.outcomes(board, host_of[board]))
    return {
        "version": lab.version,
        "workload": workload.key,
        "strategy": strategy.key,
        "label": strategy.label,
        "cadence": strategy.cadence,
        "boards": slugs,
        # Each host's boards, in the fleet's order (one host: every board).
        "hosts": host_boards,
        "fleet": strategy.fleet,
        "yardstick": workload.yardstick,
        "cards_per_board": workload.cards,
        "cap": workload.cap,
        "endpoint_cap": workload.endpoint_cap,
        "foreign": workload.foreign,
        "outage": outage.window if outage else None,
        "hang_after": settings.hang_after,
        "completed": completed,
        "elapsed": elapsed,
        "requests": requests,
        "cards": {card: seen for card, seen in sampler.cards.items() if card in owner},
        "statuses": {card: status for card, status in statuses.items() if card in owner},
        "runs": {card: runs for card, runs in outcomes.items() if card in owner},
        "driver": {
            "burst_cpu": burst_cpu,
            "burst_passes": burst_passes,
            "idle_cpu": idle_cpu,
            "idle_seconds": idle_seconds,
        },
    }
