"""What a pass leaves for operators (docs/metrics.md): the status file with its counters and failing
streak, the Prometheus textfile, and what happens when either cannot be written or the previous
status file is not what the pass wrote. Real files, real processes, Debian's promtool."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from hermes_host import CAPPED, REPO
from hermes_pacer import host, pass_state, passlog, settings, textfile

pytestmark = pytest.mark.slow

HOSTILE_HOME = '/home/a"b\\c\nd} x="y'


def _settings(tmp_path: Path, metrics: bool = True, **extra: str) -> settings.Settings:
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    env = {"HERMES_BIN": "/bin/true", "BOARD": "b1", "PACER_STATE_DIR": str(state), **extra}
    if metrics:
        (tmp_path / "metrics").mkdir(exist_ok=True)
        env["PACER_METRICS_DIR"] = str(tmp_path / "metrics")
    return settings.load(env)


def _record(reason: str = "no_ready", rc: int = 0, **fields) -> dict:
    cards = {"running": 0, "ready": 0, "todo": 0, "blocked": 0}
    return {"board": "b1", "cap": 2, "reason": reason, "rc": rc, "ms": 12, pass_state.CARDS: cards, **fields}


def _status(config: settings.Settings) -> dict:
    return json.loads(host.status_file(config.state_dir, "b1").read_text())


def _samples(path: Path) -> dict[str, float]:
    """`name{labels}` -> value of a textfile."""
    found = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            found[series] = float(value)
    return found


def _value(path: Path, name: str, **labels: str) -> float | None:
    for series, value in _samples(path).items():
        if series.split("{", 1)[0] == name and all(f'{k}="{v}"' in series for k, v in labels.items()):
            return value
    return None


def test_counters_carry_across_passes(tmp_path):
    config = _settings(tmp_path)
    for record in (
        _record("dispatched", spawned=["t1", "t2"], reclaimed=[]),
        _record("no_ready"),
        _record("dispatched", spawned=["t3"], reclaimed=["t3"]),
        _record("hermes_failed", 1, error="exit 1"),
    ):
        pass_state.record_pass(config, record, "/home/h/.hermes")

    status = _status(config)
    assert status["counters"] == {"passes": 4, "failed_passes": 1, "spawned": 3, "reclaimed": 1}
    assert status["last"]["reason"] == "hermes_failed" and status["last"]["rc"] == 1
    assert status["last"]["spawned"] is None, "a count the last pass did not make is null"
    assert status["last_spawn"] is not None and status["failing_since"] == status["last"]["time"]
    assert status["home"] == "/home/h/.hermes" and status["cap"] == 2 and status["interval"] == 15.0
    prom = host.metrics_file(config.metrics_dir, "b1")
    assert _value(prom, "hermes_pacer_spawned_total") == 3
    assert _value(prom, "hermes_pacer_passes_total") == 4
    assert _value(prom, "hermes_pacer_last_pass_failed") == 1
    assert _value(prom, "hermes_pacer_last_pass_reason", reason="hermes_failed") == 1
    assert _value(prom, "hermes_pacer_last_pass_reason", reason="dispatched") == 0
    assert oct(prom.stat().st_mode & 0o777) == "0o644"
    assert oct(host.status_file(config.state_dir, "b1").stat().st_mode & 0o777) == "0o644"


def test_the_failing_streak_starts_at_its_first_failure_and_ends_with_a_success(tmp_path):
    config = _settings(tmp_path)
    pass_state.record_pass(config, _record("count_unknown", 1), "/h")
    first = _status(config)["failing_since"]
    pass_state.record_pass(config, _record("hermes_timeout", 1), "/h")
    assert first is not None and _status(config)["failing_since"] == first
    prom = host.metrics_file(config.metrics_dir, "b1")
    assert _value(prom, "hermes_pacer_failing_since_timestamp_seconds") == pytest.approx(first)

    pass_state.record_pass(config, _record("endpoint_down", 0), "/h")

    assert _status(config)["failing_since"] is None
    assert _value(prom, "hermes_pacer_failing_since_timestamp_seconds") == 0
    assert _value(prom, "hermes_pacer_last_pass_failed") == 0
    assert _value(prom, "hermes_pacer_last_spawn_timestamp_seconds") is None, "absent until a spawn"


def test_a_pass_that_did_not_count_writes_no_count_gauges(tmp_path):
    config = _settings(tmp_path)
    pass_state.record_pass(config, {"board": "b1", "reason": "paused", "rc": 0, "ms": 1}, "/h")
    prom = host.metrics_file(config.metrics_dir, "b1")
    names = {series.split("{", 1)[0] for series in _samples(prom)}
    assert "hermes_pacer_cards" not in names and "hermes_pacer_live_workers" not in names
    assert {"hermes_pacer_passes_total", "hermes_pacer_last_pass_reason", "hermes_pacer_cap"} <= names
    assert _status(config)["last"]["ready"] is None


def test_a_locked_pass_leaves_nothing(tmp_path):
    config = _settings(tmp_path)
    pass_state.record_pass(config, _record("locked"), "/h")
    assert not host.status_file(config.state_dir, "b1").exists()
    assert not host.metrics_file(config.metrics_dir, "b1").exists()


def _previous_fifo(path: Path) -> None:
    os.mkfifo(path)


def _previous_link(path: Path) -> None:
    elsewhere = path.parent.parent / "elsewhere.json"
    elsewhere.write_text(json.dumps({"version": 1, "board": "b1", "counters": {"passes": 1000}}))
    path.symlink_to(elsewhere)


@pytest.mark.parametrize(
    ("shape", "why"),
    [
        (lambda p: p.write_text("{not json"), "not JSON"),
        (lambda p: p.write_bytes(b"{" + b" " * (pass_state.LIMIT + 10) + b"}"), "larger than"),
        (_previous_link, "symbolic link"),
        (_previous_fifo, "not a regular file"),
        (lambda p: p.write_text(json.dumps({"version": 1, "board": "other"})), "another board"),
        (
            lambda p: p.write_text(json.dumps({"version": 1, "board": "b1", "counters": {"passes": -1}})),
            "counters",
        ),
    ],
    ids=["corrupt", "oversized", "link", "fifo", "other-board", "bad-counters"],
)
def test_a_previous_file_that_is_not_ours_restarts_the_counters_said_once(tmp_path, shape, why):
    config = _settings(tmp_path)
    path = host.status_file(config.state_dir, "b1")
    shape(path)

    first = _record("dispatched", spawned=["t1"])
    pass_state.record_pass(config, first, "/h")
    second = _record()
    pass_state.record_pass(config, second, "/h")

    assert "counters_reset:" in first["warning"] and why in first["warning"], first
    assert not second.get("warning"), "said once"
    assert not path.is_symlink() and path.is_file()
    assert _status(config)["counters"] == {"passes": 2, "failed_passes": 0, "spawned": 1, "reclaimed": 0}
    if shape is _previous_link:
        assert "1000" in (tmp_path / "elsewhere.json").read_text(), "the link's target is untouched"


def test_unwritable_directories_are_warnings(tmp_path):
    config = _settings(tmp_path, metrics=False, PACER_METRICS_DIR=str(tmp_path / "missing"))
    record = _record("dispatched", spawned=["t1"])
    pass_state.record_pass(config, record, "/h")
    assert "metrics_unwritten:No such file or directory" in record["warning"]
    assert _status(config)["counters"]["spawned"] == 1, "the status is written all the same"

    (tmp_path / "afile").write_text("")
    config = settings.load(
        {"HERMES_BIN": "/bin/true", "BOARD": "b1", "PACER_STATE_DIR": str(tmp_path / "afile")}
    )
    record = _record()
    pass_state.record_pass(config, record, "/h")
    assert record["warning"].startswith("state_unwritten:Not a directory"), record


def _board_db(path: Path, statuses: list[str]) -> None:
    """A board database with the columns the pass reads (Hermes' own schema has more)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE tasks (id TEXT PRIMARY KEY, status TEXT NOT NULL, created_at INTEGER NOT NULL)"
        )
        conn.executemany(
            "INSERT INTO tasks VALUES (?, ?, ?)", [(f"t{i}", s, 1000 + i) for i, s in enumerate(statuses)]
        )
    conn.close()


@pytest.mark.parametrize("where", ["missing", "file"])
def test_a_real_pass_keeps_its_rc_when_its_state_cannot_be_written(tmp_path, where):
    home = tmp_path / "home"
    _board_db(home / ".hermes" / "kanban.db", ["todo", "blocked", "done"])
    state = tmp_path / "state"
    if where == "file":
        state.write_text("")
    env = {
        "HOME": str(home),
        "PATH": "/usr/bin:/bin",
        "HERMES_BIN": "/bin/false",
        "BOARD": "default",
        "PACER_LOCK_DIR": str(tmp_path / "locks"),
        "PACER_STATE_DIR": str(state),
        "PACER_LOG_FORMAT": "json",
    }
    proc = subprocess.run([str(CAPPED)], env=env, capture_output=True, text=True, timeout=60)
    (line,) = proc.stdout.splitlines()
    record = json.loads(line)
    assert proc.returncode == 0 and record["reason"] == "no_ready" and record["rc"] == 0, proc
    assert "state_unwritten:" in record["warning"], record
    assert list(record) == ["time", *passlog.FIELDS[1:]], "the log line keeps its fields"


def test_a_real_pass_counts_todo_and_blocked_cards(tmp_path):
    home = tmp_path / "home"
    _board_db(home / ".hermes" / "kanban.db", ["todo", "blocked", "blocked", "done"])
    (tmp_path / "state").mkdir()
    env = {
        "HOME": str(home),
        "PATH": "/usr/bin:/bin",
        "HERMES_BIN": "/bin/false",
        "BOARD": "default",
        "PACER_LOCK_DIR": str(tmp_path / "locks"),
        "PACER_STATE_DIR": str(tmp_path / "state"),
    }
    proc = subprocess.run([str(CAPPED)], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc
    last = json.loads((tmp_path / "state" / "board-default.json").read_text())["last"]
    assert (last["ready"], last["running"], last["todo"], last["blocked"]) == (0, 0, 1, 2), last
    assert last["oldest_ready_created"] is None


WRITER = """
import sys
from hermes_pacer import pass_state, settings
config = settings.load({"HERMES_BIN": "/bin/true", "BOARD": "b1", "PACER_STATE_DIR": sys.argv[1]})
for _ in range(int(sys.argv[2])):
    record = {"board": "b1", "reason": "dispatched", "rc": 0, "ms": 1, "spawned": ["t"]}
    pass_state.record_pass(config, record, "/h")
    assert not record.get("warning"), record
"""


def test_two_concurrent_writers_lose_no_count(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO / "pacer")}
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(state), "100"], env=env, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    for writer in writers:
        assert writer.wait(timeout=120) == 0, writer.stderr.read()
    counters = json.loads((state / "board-b1.json").read_text())["counters"]
    assert counters["passes"] == 200 and counters["spawned"] == 200, counters


def test_the_textfiles_pass_promtool_with_a_hostile_home(tmp_path, promtool):
    config = _settings(tmp_path, PACER_ENDPOINT="gpu")
    record = _record(
        "dispatched",
        spawned=["t1"],
        reclaimed=[],
        workers=1,
        lingering=0,
        slots=1,
        **{
            pass_state.OLDEST_READY: 1000.0,
            pass_state.CARDS: {"running": 1, "ready": 2, "todo": 0, "blocked": 0},
        },
    )
    pass_state.record_pass(config, record, HOSTILE_HOME)
    endpoint = {"kind": "vllm", "url": "http://x/v1", "cap": 4, "time": 1.5, "up": True, "detail": "ok"}
    endpoint |= {
        "running": 3,
        "waiting": 0,
        "workers": 1,
        "foreign": 2,
        "used": 3,
        "ramp": False,
        "probe_ms": 4,
    }
    pass_state.record_endpoint(config, endpoint, record)
    assert not record.get("warning"), record

    for path in sorted(config.metrics_dir.glob("*.prom")):
        check = subprocess.run(
            [str(promtool), "check", "metrics"], input=path.read_text(), capture_output=True, text=True
        )
        assert check.returncode == 0, (path.name, check.stdout, check.stderr)
    prom = host.metrics_file(config.metrics_dir, "b1")
    homes = set(re.findall(r'home="((?:[^"\\]|\\.)*)"', prom.read_text()))
    assert homes == {textfile.escape_label(HOSTILE_HOME)}
    unescaped = {re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), h) for h in homes}
    assert unescaped == {HOSTILE_HOME}
    assert _value(prom, "hermes_pacer_oldest_ready_age_seconds") > 0
    eprom = host.endpoint_metrics_file(config.metrics_dir, "gpu")
    assert _value(eprom, "hermes_pacer_endpoint_requests", state="running") == 3
    assert _value(eprom, "hermes_pacer_endpoint_up", kind="vllm") == 1
    saved = json.loads(host.endpoint_status_file(config.state_dir, "gpu").read_text())
    assert saved["version"] == 1 and saved["endpoint"] == "gpu" and saved["used"] == 3


def test_values_are_finite_numbers():
    assert textfile.number(1764540000.5) == "1764540000.5" and textfile.number(3.0) == "3"
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError):
            textfile.number(bad)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"PACER_STATE_DIR": "var/lib/hermes-pacer"}, "PACER_STATE_DIR='var/lib/hermes-pacer' is invalid"),
        ({"PACER_STATE_DIR": "/s", "PACER_METRICS_DIR": "metrics"}, "PACER_METRICS_DIR='metrics' is invalid"),
        ({"PACER_METRICS_DIR": "/m"}, "PACER_METRICS_DIR is set but PACER_STATE_DIR is not"),
    ],
)
def test_bad_directories_are_bad_settings(env, expected):
    with pytest.raises(settings.SettingError, match=re.escape(expected)):
        settings.load({"HERMES_BIN": "/bin/true", **env})


def test_unset_directories_leave_nothing():
    config = settings.load({"HERMES_BIN": "/bin/true"})
    assert config.state_dir is None and config.metrics_dir is None


def test_a_board_with_invalid_settings_shows_up_as_failing(tmp_path):
    (tmp_path / "state").mkdir()
    (tmp_path / "metrics").mkdir()
    env = {
        "HOME": str(tmp_path),
        "PATH": "/usr/bin:/bin",
        "HERMES_BIN": "/bin/false",
        "BOARD": "b1",
        "MAX_PARALLEL": "0",
        "PACER_STATE_DIR": str(tmp_path / "state"),
        "PACER_METRICS_DIR": str(tmp_path / "metrics"),
    }
    proc = subprocess.run([str(CAPPED)], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "reason=settings_invalid" in proc.stdout, proc
    status = json.loads((tmp_path / "state" / "board-b1.json").read_text())
    assert status["last"]["reason"] == "settings_invalid" and status["failing_since"] is not None
    assert status["cap"] is None, "MAX_PARALLEL=0 is no cap to show"
    prom = tmp_path / "metrics" / "hermes-pacer-board-b1.prom"
    assert _value(prom, "hermes_pacer_last_pass_reason", reason="settings_invalid") == 1
    assert _value(prom, "hermes_pacer_failed_passes_total") == 1


# The real sub-minute loop with a clock that only its sleeps move: a minute of passes at once.
FAST_MINUTE = """
import os, sys
from hermes_pacer import settings, subminute
now = [0.0]
def clock():
    return now[0]
def sleep(seconds):
    now[0] += seconds
env = dict(os.environ)
sys.exit(subminute.run(settings.load(env), env, clock=clock, sleep=sleep))
"""


def test_the_loops_own_records_are_counted(tmp_path):
    (tmp_path / "state").mkdir()
    env = {
        "HOME": str(tmp_path),
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(REPO / "pacer"),
        "HERMES_BIN": "/bin/false",
        "BOARD": "b1",
        "RUNS_PER_MINUTE": "3",
        "CAP_SCRIPT": str(tmp_path / "no-such-script"),
        "PACER_LOCK_DIR": str(tmp_path / "locks"),
        "PACER_STATE_DIR": str(tmp_path / "state"),
    }
    proc = subprocess.run(
        [sys.executable, "-c", FAST_MINUTE], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 1 and proc.stdout.count("reason=cap_script_unavailable") == 3, proc
    status = json.loads((tmp_path / "state" / "board-b1.json").read_text())
    assert status["counters"]["passes"] == 3 and status["counters"]["failed_passes"] == 3
    assert status["last"]["reason"] == "cap_script_unavailable" and status["failing_since"] is not None
