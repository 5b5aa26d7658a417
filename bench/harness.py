"""One trial: a burst of ready cards on fresh boards, one strategy dispatching, everything recorded.

A lab is one Hermes release in a scratch home, with the fake LLM endpoint on 127.0.0.1 and one
worker profile per board of a trial ("lanes"); every trial makes boards of its own in that home.
The endpoint records each request's start and end and the card it is for; a sampler reads the
live worker processes from /proc every 100 ms; the cards' statuses are read from the boards'
SQLite files (read-only), so the harness itself never starts the `hermes` CLI while a trial runs.
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
from fake_llm import serve  # noqa: E402
from hermes_host import HermesHost  # noqa: E402
from hermes_pacer import board as boards  # noqa: E402

from .drivers import Driver  # noqa: E402
from .strategies import Strategy  # noqa: E402

LANES = ("lane-a", "lane-b")


@dataclass(frozen=True)
class Workload:
    key: str
    label: str
    boards: int
    cards: int  # per board
    # Measure the driver's cost while nothing is ready, after the burst.
    idle: bool = True


@dataclass(frozen=True)
class Settings:
    cap: int
    hold: float
    final_hold: float
    # The idle spell; None: one period of the driver (a whole minute of the sub-minute loop, start
    # included), and at least 15 s.
    idle_seconds: float | None
    timeout: float


class Lab:
    def __init__(self, version: str, root: Path, settings: Settings):
        self.version = version
        self.settings = settings
        home = root / f"hermes-{version}"
        home.mkdir(parents=True)
        self.host = HermesHost(home, hermes_install.ensure(version))
        self.server = serve(settings.hold, settings.final_hold)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        port = self.server.server_address[1]
        self.host.configure(port, dict.fromkeys(LANES, port))
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


def run_trial(lab: Lab, strategy: Strategy, workload: Workload, say) -> dict:
    """Run one trial to the end (all cards done, no worker left) and an idle spell; its raw series."""
    settings = lab.settings
    lab.trials += 1
    slugs = [f"t{lab.trials}{'ab'[index]}" for index in range(workload.boards)]
    owner = {}
    for lane, board in zip(LANES, slugs, strict=False):
        lab.host.create_board(board)
        owner.update(dict.fromkeys(lab.host.create_cards(workload.cards, assignee=lane, board=board), board))
    lab.set_native_cap(settings.cap if strategy.native_cap else None)
    lab.server.recorder.reset()

    t0 = time.time()
    sampler = Sampler(lab.host, t0)
    sampler.start()
    logs = lab.host.home / "logs"
    logs.mkdir(exist_ok=True)
    drivers = []
    for board in slugs:
        argv, env, period, lines_are_passes = strategy.driver(board, settings.cap, lab.host.hermes_bin)
        driver = Driver(argv, lab.host.pacer_env(**env), period, logs / f"{board}.log", lines_are_passes)
        driver.start()
        drivers.append(driver)

    completed, next_say = False, 0.0
    while time.time() - t0 < settings.timeout:
        done = sum(status == "done" for board in slugs for status in lab.statuses(board).values())
        if done == len(owner) and sampler.live == 0:
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
    idle_seconds = 0.0
    if completed and workload.idle:
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
        [entry["start"] - t0, (entry["end"] or time.time()) - t0, owner.get(entry["task"], "?")]
        for entry in lab.server.recorder.stats()["requests"]
    ]
    return {
        "version": lab.version,
        "workload": workload.key,
        "strategy": strategy.key,
        "label": strategy.label,
        "cadence": strategy.cadence,
        "boards": slugs,
        "cards_per_board": workload.cards,
        "cap": settings.cap,
        "completed": completed,
        "elapsed": elapsed,
        "requests": requests,
        "cards": {card: seen for card, seen in sampler.cards.items() if card in owner},
        "driver": {
            "burst_cpu": burst_cpu,
            "burst_passes": burst_passes,
            "idle_cpu": idle_cpu,
            "idle_seconds": idle_seconds,
        },
    }
