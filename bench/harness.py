"""One trial: a burst of ready cards on fresh boards, one strategy dispatching, everything recorded.

A lab is one Hermes release in a scratch home, with the fake LLM endpoint on 127.0.0.1 and one
worker profile per board of a trial ("lanes"); every trial makes boards of its own in that home.
The endpoint records each request's start and end and the card it is for; a sampler reads the
live worker processes from /proc every 100 ms; the cards' statuses are read from the boards'
SQLite files (read-only), so the harness itself never starts the `hermes` CLI while a trial runs.
A workload may add a foreign request stream at the endpoint or switch the endpoint off for a while
in the middle of the burst.
"""

from __future__ import annotations

import contextlib
import sqlite3
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
from .strategies import Strategy  # noqa: E402

LANES = ("lane-a", "lane-b")


@dataclass(frozen=True)
class Workload:
    key: str
    label: str
    boards: int
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

    def set_native_cap(self, cap: int | None) -> None:
        config = self.host.root / "config.yaml"
        lines = [line for line in config.read_text().splitlines() if "max_in_progress:" not in line]
        if cap is not None:
            lines.insert(lines.index("kanban:") + 1, f"  max_in_progress: {cap}")
        config.write_text("\n".join(lines) + "\n")

    def statuses(self, board: str) -> dict[str, str]:
        path = boards.db_path(self.host.root, board, self.host.env)
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as db:
            return dict(db.execute("SELECT id, status FROM tasks"))

    def outcomes(self, board: str) -> dict[str, list]:
        """Every card's runs, oldest first: their outcome (None while a run is open)."""
        path = boards.db_path(self.host.root, board, self.host.env)
        runs: dict[str, list] = {}
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as db:
            for task, outcome in db.execute("SELECT task_id, outcome FROM task_runs ORDER BY id"):
                runs.setdefault(task, []).append(outcome)
        return runs

    def close(self) -> None:
        self.host.kill_everything()
        self.server.shutdown()
        self.server.server_close()


class Sampler(threading.Thread):
    """First and last sighting of each card's worker, from /proc every 100 ms."""

    def __init__(self, host: HermesHost, t0: float):
        super().__init__(daemon=True)
        self.host, self.t0 = host, t0
        self.cards: dict[str, list] = {}
        self.live = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            now = time.time() - self.t0
            workers = self.host.workers()
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


def pacer_endpoint_env(lab: Lab, workload: Workload, slugs: list[str]) -> dict[str, str]:
    """The endpoint's budget as the role writes it into each board's settings file."""
    return {
        "PACER_ENDPOINT": "bench",
        "PACER_ENDPOINT_URL": lab.url,
        "PACER_ENDPOINT_KIND": "vllm",
        "PACER_ENDPOINT_MAX_PARALLEL": str(workload.endpoint_cap),
        "PACER_ENDPOINT_BOARDS": ",".join(slugs),
    }


def run_trial(lab: Lab, strategy: Strategy, workload: Workload, say, idle: bool = True) -> dict:
    """Run one trial to the end (every card settled, no worker left) and, if `idle`, an idle spell;
    its raw series."""
    settings = lab.settings
    lab.trials += 1
    slugs = [f"t{lab.trials}{'ab'[index]}" for index in range(workload.boards)]
    owner = {}
    for lane, board in zip(LANES, slugs, strict=False):
        lab.host.create_board(board)
        owner.update(dict.fromkeys(lab.host.create_cards(workload.cards, assignee=lane, board=board), board))
    lab.set_native_cap(workload.cap if strategy.native_cap else None)
    # A lock directory per trial: no endpoint state (an outage's ramp) carries into the next one.
    locks = lab.host.home / "locks" / f"trial-{lab.trials}"
    extra = {"PACER_LOCK_DIR": str(locks)}
    if strategy.runner in PACER_RUNNERS:
        extra.update(pacer_endpoint_env(lab, workload, slugs))
    lab.server.recorder.reset()

    t0 = time.time()
    sampler = Sampler(lab.host, t0)
    sampler.start()
    stream = endpoint.foreign(lab.url, workload.foreign, settings.final_hold) if workload.foreign else None
    outage = None
    if workload.outage:
        outage = Outage(lab.server, t0, settings.outage_at, settings.outage_seconds)
        outage.start()
    logs = lab.host.home / "logs"
    logs.mkdir(exist_ok=True)
    drivers = []
    for board in slugs:
        argv, env, period, lines_are_passes = strategy.driver(board, workload.cap, lab.host.hermes_bin)
        env.update(extra)
        driver = Driver(argv, lab.host.pacer_env(**env), period, logs / f"{board}.log", lines_are_passes)
        driver.start()
        drivers.append(driver)

    completed, next_say = False, 0.0
    while time.time() - t0 < settings.timeout:
        statuses = [status for board in slugs for status in lab.statuses(board).values()]
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
    lab.set_native_cap(None)
    if not completed:
        lab.host.kill_everything()

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
        statuses.update(lab.statuses(board))
        outcomes.update(lab.outcomes(board))
    return {
        "version": lab.version,
        "workload": workload.key,
        "strategy": strategy.key,
        "label": strategy.label,
        "cadence": strategy.cadence,
        "boards": slugs,
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
