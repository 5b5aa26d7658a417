"""The endpoint's budget arithmetic: the share of each board, foreign load, the ramp, the state."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hermes_pacer import budget
from hermes_pacer.board import Snapshot
from hermes_pacer.endpoint import Reading
from hermes_pacer.workers import LiveWorkers

pytestmark = pytest.mark.fast


def _load(board: str, created: tuple[float, ...], running=(), workers=()) -> budget.BoardLoad:
    snap = Snapshot(running=frozenset(running), ready=len(created))
    return budget.BoardLoad(board, Path(f"/{board}.db"), snap, LiveWorkers(frozenset(workers), 0), created)


def _reading(running: int | None, waiting: int | None = 0, up: bool = True) -> Reading:
    return Reading(up=up, kind="vllm", running=running, waiting=waiting, detail="")


@pytest.mark.parametrize(
    ("free", "expected"),
    [
        (0, {"a": 0, "b": 0}),
        (1, {"a": 0, "b": 1}),
        (2, {"a": 1, "b": 1}),
        (3, {"a": 1, "b": 2}),
        (9, {"a": 2, "b": 3}),
    ],
)
def test_the_free_slots_go_to_the_oldest_ready_cards_of_all_boards(free, expected):
    loads = [_load("a", (200.0, 400.0)), _load("b", (100.0, 300.0, 500.0))]
    wants = {"a": 2, "b": 3}
    assert {board: budget.share(board, free, wants, loads) for board in wants} == expected


def test_a_board_gets_no_more_than_it_wants_and_the_rest_goes_on():
    loads = [_load("a", (100.0, 110.0, 120.0)), _load("b", (200.0, 210.0, 220.0)), _load("idle", ())]
    wants = {"a": 1, "b": 3, "idle": 0}  # a is at its own cap but for one slot
    assert [budget.share(board, 3, wants, loads) for board in ("a", "b", "idle")] == [1, 2, 0]


def test_every_board_of_the_endpoint_counts_against_its_cap():
    loads = [_load("a", (10.0,), running={"t1"}, workers={"t1", "t2"}), _load("b", (20.0,), workers={"t3"})]
    held = budget.budget(4, loads, _reading(3), budget.State(), now=1000.0, ramp=False)
    assert (held.ours, held.foreign, held.free) == (3, 0, 1)


def test_foreign_requests_take_slots_and_are_remembered_over_a_tool_call():
    state = budget.State()
    loads = [_load("a", (10.0, 11.0), running={"t1"}, workers={"t1"})]
    first = budget.budget(3, loads, _reading(2), state, now=1000.0, ramp=False)
    assert (first.foreign, first.free) == (1, 1)
    # Our worker is between two requests: the endpoint shows 1, but the foreign request is still there.
    second = budget.budget(3, loads, _reading(1), state, now=1005.0, ramp=False)
    assert (second.foreign, second.free) == (1, 1)
    # Gone for longer than the window: no longer counted.
    later = budget.budget(3, loads, _reading(1), state, now=1005.0 + budget.FOREIGN_WINDOW + 1, ramp=False)
    assert (later.foreign, later.free) == (0, 2)


def test_with_no_worker_of_ours_alive_the_endpoint_s_load_is_all_foreign():
    state = budget.State(foreign=[[1000.0, 2.0]])
    idle = [_load("a", (10.0,))]
    held = budget.budget(3, idle, _reading(0), state, now=1001.0, ramp=False)
    assert (held.foreign, held.free) == (0, 3)  # the foreign requests ended: no need to wait out the window


def test_a_queue_at_the_endpoint_admits_nothing():
    held = budget.budget(
        8, [_load("a", (1.0, 2.0, 3.0, 4.0))], _reading(2, waiting=1), budget.State(), 1000.0, False
    )
    assert (held.waiting, held.free) == (1, 0)


def test_an_endpoint_that_reports_no_load_counts_our_workers_only():
    held = budget.budget(
        2,
        [_load("a", (1.0, 2.0, 3.0, 4.0), workers={"t1"})],
        _reading(None, None),
        budget.State(),
        1.0,
        False,
    )
    assert (held.foreign, held.free) == (0, 1)


def test_after_an_outage_the_ramp_holds_for_its_seconds():
    state = budget.State()
    assert budget.health(state, _reading(0), 100.0, 60) is False  # never down: no ramp
    assert budget.health(state, _reading(None, up=False), 110.0, 60) is True
    assert state.down_since == 110.0
    assert budget.health(state, _reading(0), 120.0, 60) is True  # back: the ramp starts
    assert budget.health(state, _reading(0), 179.0, 60) is True
    assert budget.health(state, _reading(0), 180.0, 60) is False
    assert state.up_since is None and state.down_since is None


def test_the_state_survives_a_round_trip_and_a_damaged_file_is_a_fresh_state(tmp_path):
    path = tmp_path / "endpoint-gpu.json"
    state = budget.State(kind="vllm", down_since=None, up_since=5.0, foreign=[[1.0, 2.0]])
    budget.write_state(path, state)
    assert budget.read_state(path) == state
    assert path.stat().st_mode & 0o777 == 0o600
    for damaged in ("not json", json.dumps({"kind": 3, "foreign": [["x", 1]]}), json.dumps([1, 2])):
        path.write_text(damaged)
        assert budget.read_state(path).kind is None
    link = tmp_path / "link.json"
    link.symlink_to(path)
    assert budget.read_state(link) == budget.State()
    assert budget.read_state(tmp_path / "missing.json") == budget.State()
