"""The fake LLM endpoint itself: what it records and how its slots and outage switch behave."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from fake_llm import foreign_stream, serve, until

pytestmark = pytest.mark.slow

FAKE = Path(__file__).with_name("fake_llm.py")


def post(url: str, payload: object) -> tuple[int, dict]:
    request = urllib.request.Request(url, json.dumps(payload).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_a_workers_request_is_recorded_with_its_card_and_not_as_foreign(fake_endpoint):
    fake, root = fake_endpoint()
    tools = [{"type": "function", "function": {"name": "kanban_complete"}}]
    prompt = {"role": "user", "content": "work kanban task t_1a2b"}
    status, answer = post(root + "/v1/chat/completions", {"messages": [prompt], "tools": tools})
    assert status == 200 and answer["choices"][0]["finish_reason"] == "tool_calls"
    status, _ = post(root + "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]})
    assert status == 200
    stats = fake.recorder.stats()
    assert [(entry["task"], entry["foreign"]) for entry in stats["requests"]] == [
        ("t_1a2b", False),
        ("", True),
    ]
    assert stats["in_flight"] == 0 and stats["peak_foreign_in_flight"] == 1


def test_slots_hold_the_rest_waiting_and_an_outage_cuts_the_waiting_too(fake_endpoint):
    fake, root = fake_endpoint(flavour="vllm", slots=2)
    stream = foreign_stream(root, concurrency=5, hold=30)
    try:
        until(lambda: fake.gate.load() == (2, 3), "2 processing and 3 waiting")
        assert fake.recorder.stats()["in_flight"] == 5
        fake.set_state("down")
        until(lambda: fake.recorder.stats()["in_flight"] == 0, "all cut")
        assert fake.gate.load() == (0, 0)
        assert fake.recorder.stats()["peak_in_flight"] == 5
    finally:
        stream.stop()


def test_reset_keeps_what_is_in_flight_as_the_new_peak(fake_endpoint):
    fake, root = fake_endpoint()
    stream = foreign_stream(root + "/v1", concurrency=2, hold=30)
    try:
        until(lambda: fake.recorder.stats()["in_flight"] == 2, "2 in flight")
        assert post(root + "/reset", {}) == (200, {"ok": True})
        stats = fake.recorder.stats()
        assert (stats["peak_in_flight"], stats["peak_foreign_in_flight"]) == (2, 2)
    finally:
        stream.stop()


def test_a_request_may_set_its_own_hold(fake_endpoint):
    fake, root = fake_endpoint()
    fake.final_hold = 600  # a chat without fake_hold would outlast the test
    status, _ = post(root + "/v1/chat/completions", {"messages": [], "fake_hold": 0})
    assert status == 200


@pytest.mark.parametrize(
    ("options", "message"),
    [({"flavour": "tgi"}, "vllm, llamacpp, ollama, openai"), ({"slots": 0}, "at least 1")],
)
def test_bad_options_are_refused_with_the_accepted_values(options, message):
    with pytest.raises(ValueError, match=message):
        serve(1, 1, **options)


def test_the_command_line_takes_flavour_and_slots(tmp_path):
    port_file = tmp_path / "port"
    process = subprocess.Popen(
        [sys.executable, str(FAKE), "--flavour", "llamacpp", "--slots", "2", "--port-file", str(port_file)]
    )
    try:
        until(lambda: port_file.exists() and port_file.read_text(), "listening")
        root = f"http://127.0.0.1:{port_file.read_text()}"
        with urllib.request.urlopen(root + "/slots", timeout=10) as response:
            assert [slot["is_processing"] for slot in json.loads(response.read())] == [False, False]
        assert post(root + "/control", {"state": "down"}) == (200, {"state": "down"})
    finally:
        process.terminate()
        process.wait(timeout=10)
    bad = subprocess.run([sys.executable, str(FAKE), "--slots", "0"], capture_output=True, text=True)
    assert bad.returncode == 2 and "at least 1" in bad.stderr
