"""The fleet's admission (fleet.py): windows at their edges, the reserve, the floor, static shares,
and the loop that passes again when a host's window opens."""

from __future__ import annotations

import pytest
from hermes_pacer import budget, fleet, subminute
from hermes_pacer.endpoint import Reading
from hermes_pacer.hermes import StopSignals
from hermes_pacer.settings import Fleet

pytestmark = pytest.mark.fast

# A cycle starts at every multiple of n * S from the epoch: 3 hosts of 10 s, a 4 s start-up allowance.
CYCLE = 3000.0 * 30


def member(index: int = 1, hosts: int = 3, **fields) -> Fleet:
    values = {
        "name": "gpu_a_fleet",
        "hosts": hosts,
        "index": index,
        "share": 1,
        "min_share": 0,
        "reserve": 0,
        "slice_seconds": 10,
        "startup_seconds": 4,
    }
    return Fleet(**{**values, **fields})


@pytest.mark.parametrize(
    ("offset", "inside", "opens"),
    [
        (0.0, False, 10.0),  # host 0's slice
        (9.99, False, 10.0),
        (10.0, True, 10.0),  # host 1's window opens at i * S
        (15.99, True, 10.0),
        (16.0, False, 40.0),  # the last G seconds of its slice admit nothing: next cycle
        (29.0, False, 40.0),
    ],
)
def test_the_window_of_host_1_at_its_edges(offset, inside, opens):
    found = fleet.window(CYCLE + offset, member())
    assert found == fleet.Window(inside, CYCLE + opens)


def test_every_moment_belongs_to_at_most_one_window():
    hosts = [member(index=i) for i in range(3)]
    for tenth in range(300):
        now = CYCLE + tenth / 10
        assert sum(fleet.window(now, host).inside for host in hosts) <= 1, now


def test_a_fleet_of_one_is_always_inside_its_window():
    alone = member(index=0, hosts=1)
    assert all(fleet.window(CYCLE + t, alone).inside for t in (0.0, 5.9, 6.0, 9.99))


def admit(offset: float, ours: int = 0, foreign: int = 0, waiting: int = 0, reported=True, **fields):
    return fleet.admit(member(**fields), 4, ours, foreign, waiting, CYCLE + offset, reported)


def test_inside_the_window_the_free_slots_keep_the_other_floors_free():
    assert admit(12.0).free == 4
    assert admit(12.0, ours=1, foreign=1).free == 2
    # Two hosts' floors of 1 are reserved: none of them holds its own yet.
    assert admit(12.0, ours=1, reserve=2).free == 1
    # One foreign request may be another host's floor: only what is not held yet stays free.
    assert admit(12.0, foreign=1, reserve=2).free == 2
    assert admit(12.0, foreign=3, reserve=2).free == 1
    assert admit(12.0, ours=3, foreign=3).free == 0


def test_a_queue_at_the_endpoint_admits_nothing_anywhere():
    assert admit(12.0, waiting=1).free == 0
    assert admit(2.0, waiting=1, min_share=2).free == 0


def test_outside_the_window_only_the_own_floor():
    outside = admit(2.0)
    assert (outside.free, outside.inside, outside.opens_at) == (0, False, CYCLE + 10.0)
    assert admit(2.0, min_share=2).free == 2
    assert admit(2.0, ours=1, min_share=2).free == 1
    assert admit(2.0, ours=2, min_share=2).free == 0
    assert admit(2.0, ours=1, foreign=2, min_share=2).free == 1
    assert admit(2.0, ours=1, foreign=3, min_share=2).free == 0


@pytest.mark.parametrize(
    ("kind", "running", "unknown"),
    [
        ("vllm", None, True),
        ("llamacpp", None, True),
        ("vllm", 0, False),
        ("openai", None, False),
        ("ollama", None, False),
    ],
)
def test_a_reporting_kind_without_a_count_is_a_load_unknown(kind, running, unknown):
    assert fleet.load_unknown(kind, running) is unknown


def test_with_the_load_unknown_only_the_own_floor_in_the_window_or_out():
    inside = fleet.floor_only(member(share=3, min_share=2), ours=0, waiting=0, now=CYCLE + 12.0)
    assert (inside.free, inside.mode, inside.inside, inside.opens_at) == (2, fleet.SLICED, True, None)
    outside = fleet.floor_only(member(share=3, min_share=2), ours=1, waiting=0, now=CYCLE + 2.0)
    assert (outside.free, outside.inside, outside.opens_at) == (1, False, CYCLE + 10.0)
    assert fleet.floor_only(member(min_share=2), ours=0, waiting=1, now=CYCLE + 12.0).free == 0
    assert fleet.floor_only(member(share=3), ours=0, waiting=0, now=CYCLE + 12.0).free == 0


def test_without_a_reported_load_the_static_share_is_the_whole_budget():
    static = admit(2.0, reported=False, share=2)
    assert (static.free, static.mode, static.inside, static.opens_at) == (2, fleet.STATIC, True, None)
    assert admit(12.0, ours=1, foreign=3, reported=False, share=2).free == 1
    assert admit(12.0, ours=2, reported=False, share=2).free == 0
    assert fleet.admit(member(), 4, 0, 0, 0, CYCLE, True).mode == fleet.SLICED


@pytest.mark.parametrize(
    ("left", "said"), [(0.01, 0.1), (0.049, 0.1), (0.1, 0.1), (0.11, 0.2), (31.0, 31.0), (67.95, 68.0)]
)
def test_the_log_never_says_a_closed_window_opens_in_no_time(left, said):
    assert fleet.seconds_until(1000.0 + left, 1000.0) == said


@pytest.mark.parametrize(
    ("kind", "running", "reported"),
    [
        ("vllm", 0, True),
        ("llamacpp", 2, True),
        ("vllm", None, False),
        ("ollama", None, False),
        ("openai", 0, False),
    ],
)
def test_what_counts_as_a_reported_load(kind, running, reported):
    assert fleet.reports_load(kind, running) is reported


def test_in_a_fleet_a_reading_without_our_workers_replaces_nothing():
    state = budget.State(foreign=[[100.0, 2.0]])
    reading = Reading(True, "vllm", 1, 0, "")
    # One host alone: what runs while no worker of ours lives is all foreign, and replaces.
    assert budget.foreign_estimate(budget.State(foreign=[[100.0, 2.0]]), reading, 0, 110.0) == 1
    # A fleet: another host's worker may be in its tool call; the largest of the minute holds.
    assert budget.foreign_estimate(state, reading, 0, 110.0, fleet=True) == 2


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_the_loop_passes_again_when_the_window_opens(monkeypatch):
    fake = Clock()
    wall = 5000.0
    monkeypatch.setattr(subminute.time, "time", lambda: wall + fake.now)
    passes: list[float] = []

    def one_pass() -> tuple[int, subminute.Next]:
        passes.append(fake.now)
        fake.now += 0.5
        # The first pass is outside its window, which opens 7 s after it began.
        return 0, subminute.Next([], wall + 7.0) if len(passes) == 1 else subminute.Next()

    code, after = subminute.refill(
        one_pass, subminute.Next([], wall + 0.0), 30.0, fake.clock, fake.sleep, StopSignals()
    )
    assert code == 0 and after == subminute.Next()
    assert passes[0] == pytest.approx(subminute.WINDOW_MARGIN)
    assert passes[1] == pytest.approx(7.0 + subminute.WINDOW_MARGIN)


def test_a_window_after_the_end_of_the_run_is_left_to_the_next_run(monkeypatch):
    fake = Clock()
    monkeypatch.setattr(subminute.time, "time", lambda: 5000.0 + fake.now)
    passes: list[float] = []

    def one_pass():
        passes.append(fake.now)
        return 0, subminute.Next()

    _, after = subminute.refill(
        one_pass, subminute.Next([], 5040.0), 30.0, fake.clock, fake.sleep, StopSignals()
    )
    assert passes == [] and fake.now == 0.0, "it does not sit out its run waiting for it"
    assert after.opens_at == 5040.0


# --- PACER_FLEET_*: read from the settings file, bad input exits 2 naming the key -----------------

FLEET_FILE = {
    "BOARD": "default",
    "MAX_PARALLEL": "2",
    "HERMES_BIN": "/bin/true",
    "PACER_ENDPOINT": "gpu",
    "PACER_ENDPOINT_MAX_PARALLEL": "4",
    "PACER_FLEET": "gpu_a_fleet",
    "PACER_FLEET_HOSTS": "2",
    "PACER_FLEET_INDEX": "1",
}


def test_the_fleet_settings_are_read_with_their_defaults():
    from hermes_pacer import settings

    read = settings.load(FLEET_FILE).endpoint.fleet
    assert read == Fleet(
        "gpu_a_fleet", 2, 1, share=2, min_share=0, reserve=0, slice_seconds=15, startup_seconds=10
    )
    short = settings.load({**FLEET_FILE, "PACER_FLEET_SLICE_SECONDS": "4"}).endpoint.fleet
    assert short.startup_seconds == 3, "the default start-up allowance leaves a window"


@pytest.mark.parametrize(
    ("changes", "said"),
    [
        ({"PACER_FLEET_INDEX": "2"}, "PACER_FLEET_INDEX='2' is invalid: expected an integer from 0 to 1"),
        ({"PACER_FLEET_HOSTS": "0"}, "PACER_FLEET_HOSTS='0' is invalid: expected an integer from 1 to 100"),
        ({"PACER_FLEET_SHARE": "5"}, "PACER_FLEET_SHARE='5' is invalid: expected an integer from 1 to 4"),
        ({"PACER_FLEET_RESERVE": "x"}, "PACER_FLEET_RESERVE='x' is invalid: expected an integer from 0 to 4"),
        ({"PACER_FLEET_SLICE_SECONDS": "1"}, "PACER_FLEET_SLICE_SECONDS='1' is invalid"),
        (
            {"PACER_FLEET_STARTUP_SECONDS": "15"},
            "PACER_FLEET_STARTUP_SECONDS='15' is invalid: expected an integer from 1 to 14",
        ),
        ({"PACER_FLEET": "-gpu"}, "PACER_FLEET='-gpu' is invalid: expected an inventory group name"),
        ({"PACER_FLEET": ""}, "PACER_FLEET_HOSTS is set but PACER_FLEET is not"),
        (
            {"PACER_ENDPOINT": "", "PACER_ENDPOINT_MAX_PARALLEL": ""},
            "PACER_FLEET is set but PACER_ENDPOINT is not",
        ),
    ],
)
def test_bad_fleet_settings_are_bad_input(tmp_path, changes, said):
    import os
    import subprocess

    from hermes_host import CAPPED

    values = {key: value for key, value in {**FLEET_FILE, **changes}.items() if value}
    path = tmp_path / "default.env"
    path.write_text("".join(f"{key}={value}\n" for key, value in values.items()))
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PACER_LOCK_DIR": str(tmp_path / "locks")}
    proc = subprocess.run(
        [str(CAPPED), "--settings", str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert said in proc.stderr, proc.stderr
    assert "reason=settings_invalid" in proc.stdout


def test_the_endpoint_textfile_names_the_fleet_place_and_mode():
    from hermes_pacer import pass_state, textfile

    status = {"endpoint": "gpu", "kind": "vllm", "up": True, "cap": 4, "time": 1.0, "probe_ms": 3}
    alone = textfile.render(pass_state.endpoint_families(status))
    assert "fleet" not in alone
    fleet_fields = {"fleet": "gpu_a_fleet", "fleet_hosts": 2, "fleet_index": 1, "fleet_share": 2}
    text = textfile.render(pass_state.endpoint_families({**status, **fleet_fields, "fleet_static": True}))
    labels = '{endpoint="gpu",kind="vllm",fleet="gpu_a_fleet"}'
    for line in ("fleet_hosts", "fleet_index", "fleet_share", "fleet_static"):
        assert f"hermes_pacer_endpoint_{line}{labels} " in text
    assert f"hermes_pacer_endpoint_fleet_static{labels} 1\n" in text
    assert f"hermes_pacer_endpoint_fleet_index{labels} 1\n" in text
    # Down: the mode is not known, so that gauge is absent.
    down = textfile.render(pass_state.endpoint_families({**status, **fleet_fields, "fleet_static": None}))
    assert "fleet_static" not in down and "fleet_share" in down
