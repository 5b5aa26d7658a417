"""One GPU, one budget: real Hermes boards sharing one endpoint, its health and its own load.

The endpoint is tests/fake_llm.py in the vLLM shape (/health, /metrics): it counts every request
in flight, the workers' and the foreign ones (chats for no card), as a real server would.
"""

from __future__ import annotations

import datetime
import json
import os

import pytest
from fake_llm import foreign_stream
from hermes_host import pace_until_done

pytestmark = pytest.mark.slow


def _records(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def _endpoint_env(server, cap: int, boards: str = "default", **extra: str) -> dict[str, str]:
    return {
        "PACER_LOG_FORMAT": "json",
        "PACER_ENDPOINT": "gpu",
        "PACER_ENDPOINT_URL": f"http://127.0.0.1:{server.server_address[1]}/v1",
        "PACER_ENDPOINT_KIND": "vllm",
        "PACER_ENDPOINT_MAX_PARALLEL": str(cap),
        "PACER_ENDPOINT_BOARDS": boards,
        **extra,
    }


@pytest.fixture
def shared(host, llm):
    """A Hermes home with two boards whose workers (profiles worker, other-worker) call one endpoint."""
    server = llm.start(hold=1.0, final_hold=6.0, flavour="vllm")
    port = server.server_address[1]
    host.configure(port, {"worker": port, "other-worker": port})
    host.create_board("other")
    host.endpoint = server
    return host


def test_two_boards_on_one_endpoint_share_its_cap(shared):
    cards = shared.create_cards(4) + shared.create_cards(4, assignee="other-worker", board="other")
    env = _endpoint_env(shared.endpoint, 2, boards="default,other", MAX_PARALLEL="2")

    sampler, logs = pace_until_done(shared, {None: env, "other": env})

    stats = shared.endpoint.recorder.stats()
    assert stats["peak_in_flight"] <= 2, logs
    assert sampler.peak_total <= 2, (sampler.peak, logs)
    assert stats["peak_in_flight"] == 2, "the budget was used, not only respected"
    # Every card's final call reached the endpoint; a card Hermes runs again (its worker lost on
    # a busy host) calls it again, under the same cap.
    assert sorted({r["task"] for r in stats["requests"] if r["kind"] == "final"}) == sorted(cards)
    # Both boards were served while the other had work: neither waited for the other to finish.
    records = [record for log in logs for record in _records(log) if record.get("spawned")]
    assert {record["board"] for record in records} == {"default", "other"}


def test_foreign_requests_at_the_endpoint_take_slots(shared):
    shared.create_cards(4)
    url = f"http://127.0.0.1:{shared.endpoint.server_address[1]}/v1"
    stream = foreign_stream(url, 1, hold=3.0)
    try:
        _, logs = pace_until_done(shared, {None: _endpoint_env(shared.endpoint, 3, MAX_PARALLEL="3")})
    finally:
        stream.stop()

    stats = shared.endpoint.recorder.stats()
    assert stats["peak_foreign_in_flight"] == 1, "the interactive stream ran beside the board"
    assert stats["peak_in_flight"] <= 3, logs
    foreign = [record["foreign"] for record in _records(logs[0]) if record.get("foreign") is not None]
    assert max(foreign) == 1, logs


@pytest.mark.parametrize("outage", ["down", "loading"])
def test_an_endpoint_that_is_down_gets_no_worker_then_a_ramp(shared, outage):
    cards = shared.create_cards(4)
    env = _endpoint_env(shared.endpoint, 2, MAX_PARALLEL="2", PACER_ENDPOINT_RAMP_SECONDS="3600")
    shared.endpoint.set_state(outage)

    down = shared.capped(**env)

    (record,) = _records(down.stdout)
    assert down.returncode == 0, down.stdout + down.stderr
    assert record["reason"] == "endpoint_down" and record["rc"] == 0, record
    assert str(shared.endpoint.server_address[1]) in record["error"]
    assert set(shared.statuses().values()) == {"ready"} and not shared.workers()

    shared.endpoint.set_state("up")
    first, second = (_records(shared.capped(**env).stdout)[0] for _ in range(2))

    # Back up after an outage: one new worker a pass, though the cap has room for two.
    assert first["reason"] == "dispatched" and len(first["spawned"]) == 1, first
    assert "endpoint_ramp" in first["warning"]
    assert second["reason"] == "dispatched" and len(second["spawned"]) == 1, second
    assert shared.statuses().keys() == set(cards)


def test_a_fleet_host_that_cannot_read_the_load_fills_only_its_floor(host, llm):
    """A vLLM endpoint whose /metrics fails: in a fleet the host cannot tell what the other hosts
    run, so it starts its floor (1) and not its static share (2), and says why."""
    server = llm.start(hold=1.0, final_hold=6.0, flavour="vllm", metrics=False)
    port = server.server_address[1]
    host.configure(port, {"worker": port})
    host.create_cards(3)
    fleet = {
        "PACER_FLEET": "gpu_fleet",
        "PACER_FLEET_HOSTS": "2",
        "PACER_FLEET_INDEX": "0",
        "PACER_FLEET_SHARE": "2",
        "PACER_FLEET_MIN_SHARE": "1",
        "PACER_FLEET_RESERVE": "0",
    }
    env = _endpoint_env(server, 3, MAX_PARALLEL="3", **fleet)

    first, second = (_records(host.capped(**env).stdout)[0] for _ in range(2))

    assert first["reason"] == "dispatched" and len(first["spawned"]) == 1, first
    assert "endpoint_load_unknown" in first["warning"] and first["fleet_mode"] == "sliced", first
    assert not second.get("spawned") and "endpoint_load_unknown" in second["warning"], second


def test_an_idle_board_looks_at_its_endpoint_once_a_minute(shared, tmp_path):
    env = _endpoint_env(shared.endpoint, 2, MAX_PARALLEL="2", PACER_LOCK_DIR=str(tmp_path / "locks"))
    state = tmp_path / "locks" / "endpoint-gpu.json"

    first, second = (_records(shared.capped(**env).stdout)[0] for _ in range(2))

    # The first pass probes (nothing known of the endpoint yet), the next one only reads its board.
    assert first["reason"] == second["reason"] == "no_ready", (first, second)
    assert first["endpoint_cap"] == 2 and second["endpoint_cap"] is None, (first, second)
    looked = state.stat().st_mtime
    os.utime(state, (looked - 61, looked - 61))  # as if the last look was a minute ago

    third = _records(shared.capped(**env).stdout)[0]
    assert third["endpoint_cap"] == 2 and state.stat().st_mtime > looked - 61, third


def test_an_estop_pauses_dispatch_until_it_expires(shared):
    shared.create_cards(2)
    estop = shared.root / "ESTOP"
    estop.write_text(json.dumps({"reason": "maintenance"}))

    paused = shared.capped(PACER_LOG_FORMAT="json")

    (record,) = _records(paused.stdout)
    assert paused.returncode == 0 and record["reason"] == "paused", record
    assert set(shared.statuses().values()) == {"ready"} and not shared.workers()

    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=1)
    estop.write_text(json.dumps({"reason": "maintenance", "expires_at": past.isoformat()}))
    (record,) = _records(shared.capped(PACER_LOG_FORMAT="json").stdout)
    assert record["reason"] == "dispatched", record


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("PACER_ENDPOINT_URL", "127.0.0.1:8000/v1", "http:// or https://"),
        ("PACER_ENDPOINT_KIND", "tgi", "auto, vllm, llamacpp, ollama, openai"),
        ("PACER_ENDPOINT_MAX_PARALLEL", "0", "from 1 to 1000"),
        ("PACER_ENDPOINT_BOARDS", "default,Bad Board", "board slugs"),
    ],
)
def test_bad_endpoint_settings_are_bad_input(shared, name, value, expected):
    shared.create_cards(1)
    proc = shared.capped(**{**_endpoint_env(shared.endpoint, 2), name: value})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert name in proc.stderr and expected in proc.stderr, proc.stderr
    assert set(shared.statuses().values()) == {"ready"}


def test_a_timer_pass_refills_a_freed_slot_before_its_next_tick(host, llm):
    """Run by systemd, the pass watches its workers until just before the next tick: a worker that
    ends while a card waits is replaced by a second pass of the same run."""
    server = llm.start(hold=0.5, final_hold=0.5)
    port = server.server_address[1]
    host.configure(port, {"worker": port})
    host.create_cards(2)

    proc = host.capped(
        MAX_PARALLEL="1", RUNS_PER_MINUTE="1", PACER_SCHEDULER="systemd", PACER_LOG_FORMAT="json", timeout=120
    )

    spawns = [record for record in _records(proc.stdout) if record.get("spawned")]
    assert len(spawns) == 2, proc.stdout + proc.stderr
    assert server.recorder.stats()["peak_in_flight"] == 1
