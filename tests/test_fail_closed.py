"""Every way a pass can go wrong dispatches nothing, says why, and leaves the board as it was."""

from __future__ import annotations

import fcntl
import json
import stat
import subprocess
import time
from pathlib import Path

import pytest
from hermes_host import CAPPED

pytestmark = pytest.mark.slow


def _fields(line: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in line.split() if "=" in part)


def _nothing_dispatched(host, cards: list[str]) -> None:
    assert set(host.statuses().values()) == {"ready"}
    assert not host.workers()
    assert host.statuses().keys() == set(cards)


def _fake_hermes(host, name: str, body: str) -> str:
    """A stand-in for a broken `hermes`: the case under test is the CLI misbehaving."""
    path = host.home / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


BAD_INPUT = [
    ("MAX_PARALLEL", "0", "an integer from 1 to 1000"),
    ("MAX_PARALLEL", "1001", "an integer from 1 to 1000"),
    ("MAX_PARALLEL", "two", "an integer from 1 to 1000"),
    ("MAX_PARALLEL", "-1", "an integer from 1 to 1000"),
    ("MAX_PARALLEL", "1.5", "an integer from 1 to 1000"),
    ("BOARD", "Upper", "a board slug"),
    ("BOARD", "-dash", "a board slug"),
    ("BOARD", "a/b", "a board slug"),
    ("BOARD", "x" * 65, "a board slug"),
    ("RUNS_PER_MINUTE", "0", "an integer from 1 to 60"),
    ("RUNS_PER_MINUTE", "61", "an integer from 1 to 60"),
    ("RUNS_PER_MINUTE", "often", "an integer from 1 to 60"),
    ("HERMES_BIN", "/nonexistent/hermes", "the path of an executable hermes"),
    ("HERMES_TIMEOUT", "0", "an integer from 1 to 3600"),
    ("PACER_LOG_FORMAT", "xml", "kv or json"),
    ("PACER_LOCK_DIR", "relative/dir", "an absolute path"),
    ("PACER_INTEGRITY_CHECK_SECONDS", "hourly", "an integer from 0 to 86400"),
]


@pytest.mark.parametrize("script", ["capped", "subminute"])
@pytest.mark.parametrize(("name", "value", "accepted"), BAD_INPUT, ids=lambda v: str(v)[:12])
def test_bad_input_exits_2_naming_the_setting(paced_host, script, name, value, accepted):
    cards = paced_host.create_cards(2)
    env = {name: value}
    if script == "capped":
        proc = paced_host.capped(**env)
    else:
        loop = paced_host.subminute(**env)
        proc = subprocess.CompletedProcess(loop.args, loop.wait(timeout=60), loop.communicate()[0], "")
        proc.stderr = proc.stdout
    assert proc.returncode == 2
    # One line on stderr; the record (reason=settings_invalid) goes where the passes are logged.
    messages = [line for line in proc.stderr.splitlines() if line.startswith("hermes-pacer:")]
    assert len(messages) == 1, proc.stderr
    assert f"{name}=" in messages[0] and accepted in messages[0]
    if script == "capped":
        assert proc.stderr.strip() == messages[0]
        assert _fields(proc.stdout)["reason"] == "settings_invalid" and _fields(proc.stdout)["rc"] == "1"
    _nothing_dispatched(paced_host, cards)


def test_a_non_executable_hermes_is_bad_input(paced_host):
    cards = paced_host.create_cards(1)
    not_executable = paced_host.home / "hermes"
    not_executable.write_text("#!/bin/sh\n")
    proc = paced_host.capped(HERMES_BIN=str(not_executable))
    assert proc.returncode == 2 and "HERMES_BIN=" in proc.stderr
    _nothing_dispatched(paced_host, cards)


def test_no_hermes_on_path_is_bad_input(paced_host):
    cards = paced_host.create_cards(1)
    proc = paced_host.capped(HERMES_BIN=None, PATH="/usr/bin:/bin")
    assert proc.returncode == 2 and "HERMES_BIN is not set and no 'hermes' is on PATH" in proc.stderr
    _nothing_dispatched(paced_host, cards)


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("echo 'Error: database is locked' >&2; exit 1", "hermes_failed"),
        ("echo 'not json'", "hermes_bad_json"),
        ("exec sleep 300", "hermes_timeout"),
    ],
    ids=["failing", "bad-json", "hung"],
)
def test_a_broken_hermes_dispatches_nothing_and_releases_the_lock(paced_host, body, reason):
    cards = paced_host.create_cards(3)
    broken = _fake_hermes(paced_host, "broken-hermes", body)

    proc = paced_host.capped(HERMES_BIN=broken, HERMES_TIMEOUT="2", timeout=60)

    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert _fields(proc.stdout)["reason"] == reason
    _nothing_dispatched(paced_host, cards)
    # Another user's `sleep 300` may run beside the test: only this home's processes count.
    hung = [pid for pid in paced_host.home_processes() if b"sleep\x00300" in _cmdline(pid)]
    assert hung == [], "the hung hermes outlived its timeout"
    # The lock was released: the next pass, with the real hermes, dispatches.
    after = paced_host.capped(MAX_PARALLEL="1")
    assert _fields(after.stdout)["reason"] == "dispatched", after.stdout + after.stderr


def test_an_unreadable_board_dispatches_nothing(paced_host):
    cards = paced_host.create_cards(1)
    proc = paced_host.capped(BOARD="missing")
    assert proc.returncode == 1
    fields = _fields(proc.stdout)
    assert fields["reason"] == "count_unknown" and "no board database" in proc.stdout
    _nothing_dispatched(paced_host, cards)


def test_a_held_board_lock_skips_the_pass(paced_host):
    cards = paced_host.create_cards(2)
    lock_dir = paced_host.home / "locks"
    lock_dir.mkdir(mode=0o700)
    with open(lock_dir / "board-default.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        proc = paced_host.capped()
    assert proc.returncode == 0
    assert _fields(proc.stdout)["reason"] == "locked"
    _nothing_dispatched(paced_host, cards)


def test_an_unsafe_lock_directory_is_refused(paced_host):
    cards = paced_host.create_cards(1)
    lock_dir = paced_host.home / "shared-locks"
    lock_dir.mkdir()
    lock_dir.chmod(0o777)
    proc = paced_host.capped(PACER_LOCK_DIR=str(lock_dir))
    assert proc.returncode == 1
    assert "writable by group or others" in proc.stdout
    _nothing_dispatched(paced_host, cards)


def test_two_passes_started_together_stay_under_the_cap(paced_host):
    paced_host.create_cards(6)
    env = paced_host.pacer_env(MAX_PARALLEL="2")
    passes = [subprocess.Popen([str(CAPPED)], env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    logs = [p.communicate(timeout=120)[0] for p in passes]

    spawned = [s for log in logs for s in _fields(log)["spawned"].split(",") if s != "-"]
    assert len(spawned) == 2, logs
    running = [task for task, status in paced_host.statuses().items() if status == "running"]
    assert sorted(running) == sorted(spawned)
    assert len(paced_host.workers()) <= 2


def test_a_native_cap_in_the_config_is_reported(paced_host):
    paced_host.add_root_kanban_setting("max_in_progress: 1  # set by hand")
    paced_host.create_cards(1)
    proc = paced_host.capped(MAX_PARALLEL="2")
    assert "warning=native_cap_set:max_in_progress:1" in proc.stdout
    # At least the cap (as the role sets it on Hermes 0.20+), it cannot cut the pass's slots.
    quiet = paced_host.capped(MAX_PARALLEL="1")
    assert "native_cap_set" not in quiet.stdout, quiet.stdout


def test_json_log_lines(paced_host):
    paced_host.create_cards(1)
    proc = paced_host.capped(PACER_LOG_FORMAT="json")
    record = json.loads(proc.stdout)
    assert record["reason"] == "dispatched" and len(record["spawned"]) == 1 and record["cap"] == 2
    assert time.strptime(record["time"], "%Y-%m-%dT%H:%M:%SZ")
