"""What operators see of real passes (docs/metrics.md): real Hermes boards paced against the fake vLLM
endpoint (tests/fake_llm.py), the status files and Prometheus textfiles the passes leave, read back
as node_exporter and `hermes-pacer status` would read them."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from fake_llm import foreign_stream
from hermes_host import pace_until_done

pytestmark = pytest.mark.slow
COMMAND = Path(__file__).resolve().parents[1] / "roles/hermes_pacer/files/scripts/hermes-pacer"


def _records(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def _samples(path) -> dict[str, float]:
    found = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            found[series] = float(value)
    return found


def _value(path, name: str, **labels: str) -> float | None:
    for series, value in _samples(path).items():
        if series.split("{", 1)[0] == name and all(f'{k}="{v}"' in series for k, v in labels.items()):
            return value
    return None


@pytest.fixture
def watched(host, llm, tmp_path):
    """A Hermes home whose worker calls the fake vLLM endpoint; its passes leave status and metrics."""
    server = llm.start(hold=0.5, final_hold=1.0, flavour="vllm")
    port = server.server_address[1]
    host.configure(port, {"worker": port})
    host.endpoint = server
    host.state = tmp_path / "state"
    host.metrics = tmp_path / "metrics"
    host.state.mkdir()
    host.metrics.mkdir()
    host.out = {
        "PACER_LOG_FORMAT": "json",
        "PACER_STATE_DIR": str(host.state),
        "PACER_METRICS_DIR": str(host.metrics),
    }
    return host


def _endpoint_env(host, cap: int, **extra: str) -> dict[str, str]:
    return {
        **host.out,
        "PACER_ENDPOINT": "gpu",
        "PACER_ENDPOINT_URL": f"http://127.0.0.1:{host.endpoint.server_address[1]}/v1",
        "PACER_ENDPOINT_KIND": "vllm",
        "PACER_ENDPOINT_MAX_PARALLEL": str(cap),
        "PACER_ENDPOINT_RAMP_SECONDS": "0",
        **extra,
    }


def test_spawned_total_is_the_cards_that_got_workers(watched, promtool):
    watched.create_cards(3)
    sampler, logs = pace_until_done(watched, {None: _endpoint_env(watched, 2, MAX_PARALLEL="2")})

    worked = {r["task"] for r in watched.endpoint.recorder.stats()["requests"] if r["task"]}
    board = watched.metrics / "hermes-pacer-board-default.prom"
    assert len(worked) == 3 and sampler.peak_total <= 2
    assert _value(board, "hermes_pacer_spawned_total", board="default", endpoint="gpu") == len(worked), logs
    assert _value(board, "hermes_pacer_cap") == 2
    assert _value(board, "hermes_pacer_cards", state="ready") == 0
    status = json.loads((watched.state / "board-default.json").read_text())
    assert status["counters"]["spawned"] == 3 and status["last_spawn"] is not None
    assert status["home"] == str(watched.root) and status["endpoint"] == "gpu"
    spawns = [r for log in logs for r in _records(log) if r.get("spawned")]
    assert status["counters"]["spawned"] == sum(len(r["spawned"]) for r in spawns)
    assert status["counters"]["passes"] >= len(spawns) and status["failing_since"] is None
    for path in sorted(watched.metrics.glob("*.prom")):
        check = subprocess.run(
            [str(promtool), "check", "metrics"], input=path.read_bytes(), capture_output=True
        )
        assert check.returncode == 0, (path.name, check.stdout, check.stderr)


def _status(host, tmp_path) -> tuple[int, dict]:
    """`hermes-pacer status --json` of a host whose one settings file names the test's state dir."""
    settings = tmp_path / "etc" / "hermes-pacer" / "default.env"
    settings.parent.mkdir(parents=True, exist_ok=True)
    settings.write_text(f"BOARD=default\nMAX_PARALLEL=2\nRUNS_PER_MINUTE=12\nPACER_STATE_DIR={host.state}\n")
    run = subprocess.run(
        [str(COMMAND), "status", "--json", "--etc", str(tmp_path / "etc")], capture_output=True, text=True
    )
    return run.returncode, json.loads(run.stdout)


def test_a_failing_pass_shows_as_failing_until_one_succeeds(watched, tmp_path):
    cards = watched.create_cards(3)
    watched.kanban("block", cards[2], "waiting for input")
    failing = {**watched.out, "HERMES_BIN": "/bin/false", "MAX_PARALLEL": "2"}

    first = watched.capped(**failing)
    second = watched.capped(**failing)

    assert first.returncode == 1 and _records(first.stdout)[0]["reason"] == "hermes_failed", first
    board = watched.metrics / "hermes-pacer-board-default.prom"
    status = json.loads((watched.state / "board-default.json").read_text())
    assert _value(board, "hermes_pacer_last_pass_failed") == 1
    assert _value(board, "hermes_pacer_last_pass_reason", reason="hermes_failed") == 1
    assert _value(board, "hermes_pacer_last_pass_reason", reason="dispatched") == 0
    assert _value(board, "hermes_pacer_failed_passes_total") == 2
    since = _value(board, "hermes_pacer_failing_since_timestamp_seconds")
    assert since == pytest.approx(status["failing_since"]) and since < status["last"]["time"], second
    assert _value(board, "hermes_pacer_cards", state="ready") == 2
    assert _value(board, "hermes_pacer_cards", state="blocked") == 1
    assert _value(board, "hermes_pacer_oldest_ready_age_seconds") >= 0
    assert status["last"]["oldest_ready_created"] <= time.time()
    code, shown = _status(watched, tmp_path)
    assert code == 1 and shown["boards"][0]["flags"] == ["failing"], shown
    assert shown["boards"][0]["reason"] == "hermes_failed" and shown["boards"][0]["ready"] == 2

    repaired = watched.capped(**watched.out, MAX_PARALLEL="2")

    assert _records(repaired.stdout)[0]["reason"] == "dispatched", repaired
    assert _value(board, "hermes_pacer_failing_since_timestamp_seconds") == 0
    assert _value(board, "hermes_pacer_last_pass_failed") == 0
    assert _value(board, "hermes_pacer_spawned_total") == 2
    code, shown = _status(watched, tmp_path)
    assert code == 0 and shown["boards"][0]["flags"] == [] and shown["boards"][0]["reason"] == "dispatched"


def test_the_endpoint_file_shows_what_the_endpoint_reports_and_when_it_is_down(watched):
    watched.create_cards(2)
    url = f"http://127.0.0.1:{watched.endpoint.server_address[1]}/v1"
    stream = foreign_stream(url, 1, hold=120.0)
    try:
        deadline = time.monotonic() + 30
        while watched.endpoint.recorder.stats()["in_flight"] < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        env = _endpoint_env(watched, 3, MAX_PARALLEL="1")

        up = watched.capped(**env)

        assert _records(up.stdout)[0]["reason"] == "dispatched", up.stdout + up.stderr
        endpoint = watched.metrics / "hermes-pacer-endpoint-gpu.prom"
        status = json.loads((watched.state / "endpoint-gpu.json").read_text())
        assert _value(endpoint, "hermes_pacer_endpoint_up", endpoint="gpu", kind="vllm") == 1
        assert _value(endpoint, "hermes_pacer_endpoint_requests", state="running") == 1, "the foreign chat"
        assert _value(endpoint, "hermes_pacer_endpoint_requests", state="waiting") == 0
        assert _value(endpoint, "hermes_pacer_endpoint_cap") == 3
        assert _value(endpoint, "hermes_pacer_endpoint_foreign_requests") == 1
        assert _value(endpoint, "hermes_pacer_endpoint_workers") == 0, "counted before this pass's spawn"
        assert status["up"] is True and status["running"] == 1 and status["url"] == url
        assert status["probe_ms"] >= 0 and status["used"] == 1

        watched.endpoint.set_state("down")
        down = watched.capped(**env)
    finally:
        stream.stop()

    (record,) = _records(down.stdout)
    assert record["reason"] == "endpoint_down" and down.returncode == 0, record
    assert _value(endpoint, "hermes_pacer_endpoint_up") == 0
    assert _value(endpoint, "hermes_pacer_endpoint_requests", state="running") is None
    status = json.loads((watched.state / "endpoint-gpu.json").read_text())
    assert status["up"] is False and status["detail"] and status["running"] is None
    board = watched.metrics / "hermes-pacer-board-default.prom"
    assert _value(board, "hermes_pacer_last_pass_reason", reason="endpoint_down") == 1
    assert _value(board, "hermes_pacer_last_pass_failed") == 0
