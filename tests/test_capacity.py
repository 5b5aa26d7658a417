"""The slot arithmetic, the config scan, the log line and the sub-minute grid, without Hermes."""

from __future__ import annotations

import io
import json

import pytest
from hermes_pacer import board, capacity, passlog, subminute
from hermes_pacer.hermes import StopSignals

pytestmark = pytest.mark.fast

F = frozenset


def test_running_cards_are_counted_once_not_twice():
    # One card running with its worker, cap 2: one slot (the pass then gives --max 1 + 1).
    step = capacity.plan(2, F({"a"}), F({"a"}))
    assert (step.occupied, step.lingering, step.slots) == (1, 0, 1)


def test_a_worker_past_its_card_holds_its_slot():
    # Card "a" is done but its worker is still making the final call.
    step = capacity.plan(2, F(), F({"a"}))
    assert (step.occupied, step.lingering, step.slots) == (1, 1, 1)


def test_a_lingering_worker_beside_a_running_card_fills_the_cap():
    step = capacity.plan(2, F({"a"}), F({"a", "b"}))
    assert (step.occupied, step.lingering, step.slots) == (2, 1, 0)


def test_a_running_card_without_a_worker_still_holds_a_slot():
    step = capacity.plan(2, F({"a", "b"}), F())
    assert step.slots == 0


def test_unattributed_workers_count_against_the_board():
    step = capacity.plan(3, F({"a"}), F({"a"}), unattributed=1)
    assert (step.occupied, step.slots) == (2, 1)


def test_excess_hands_back_the_newest_spawns():
    assert capacity.excess(2, F(), F({"old"}), ["n1", "n2"]) == ["n2"]
    assert capacity.excess(2, F({"n1"}), F({"n1"}), ["n1"]) == []


def test_native_caps_are_found_under_kanban_only(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(
        "# comment\nmodel:\n  max_spawn: 9\nkanban:\n  dispatch_in_gateway: false\n"
        "  max_in_progress: 2   # by hand\n  max_spawn: null\n  # max_spawn: 4\nother: 1\n"
    )
    assert board.native_caps(config) == {"max_in_progress": "2"}
    assert board.native_caps(tmp_path / "missing.yaml") == {}


def test_board_paths_follow_hermes(tmp_path):
    env = {"HOME": str(tmp_path)}
    root = board.hermes_root(env)
    assert root == tmp_path / ".hermes"
    assert board.hermes_root({**env, "HERMES_HOME": "/srv/h/profiles/coder"}).as_posix() == "/srv/h"
    assert board.db_path(root, "default", env) == root / "kanban.db"
    assert board.db_path(root, "ops", env) == root / "kanban" / "boards" / "ops" / "kanban.db"
    assert board.current_board(root, env) == "default"


def test_log_line_kv_and_json():
    out = io.StringIO()
    passlog.emit({"board": "b", "spawned": ["t1", "t2"], "reason": "dispatched"}, "kv", out)
    line = out.getvalue()
    assert line.startswith("time=") and " board=b " in line and " spawned=t1,t2 " in line
    assert " reclaimed=- " in line
    out = io.StringIO()
    passlog.emit({"board": "b", "error": "has spaces"}, "json", out)
    assert json.loads(out.getvalue())["error"] == "has spaces"


class FakeClock:
    def __init__(self, pass_seconds: float):
        self.now = 1000.0
        self.pass_seconds = pass_seconds
        self.starts: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def _grid(monkeypatch, runs: int, pass_seconds: float) -> list[float]:
    fake = FakeClock(pass_seconds)

    def one_pass(settings, env, budget, stop):
        fake.starts.append(fake.now - 1000.0)
        fake.now += fake.pass_seconds
        return 0, subminute.Next()  # its status, and nothing to wait for

    monkeypatch.setattr(subminute, "_one_pass", one_pass)
    settings = type("S", (), {"runs_per_minute": runs})()
    subminute._loop(settings, {}, fake.clock, fake.sleep, StopSignals())
    return fake.starts


def test_subminute_spaces_passes_evenly(monkeypatch):
    assert _grid(monkeypatch, 4, 0.1) == [0.0, 15.0, 30.0, 45.0]


def test_a_slow_pass_does_not_push_the_loop_past_the_minute(monkeypatch):
    starts = _grid(monkeypatch, 4, 20.0)
    assert starts == [0.0, 20.0, 40.0]
    assert starts[-1] + 20.0 <= 60.0
