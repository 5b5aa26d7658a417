"""Faults of the pacing pass and its sub-minute loop: each ends in one record and never in two
dispatches at once, a stalled board or a dead loop.

Real processes throughout: the real hermes CLI on real boards, real look-alike processes of another
uid, real signals. Where a test needs hermes to misbehave (sleep inside a dispatch, leak a pipe,
print garbage), a small wrapper script stands in front of the real one and records its calls.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hermes_host import CAPPED, REPO, SUBMINUTE
from hermes_pacer import passlog, workers

pytestmark = pytest.mark.slow

NOBODY = pwd.getpwnam("nobody").pw_uid

# Runs the real sub-minute loop in a process of its own with a clock that only its sleeps move: every
# slot of a minute runs at once, each pass for real (board, locks, hermes, the log line on stdout).
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


def _fields(line: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in line.split() if "=" in part)


def _records(stdout: str) -> list[dict[str, str]]:
    return [_fields(line) for line in stdout.splitlines() if line.startswith("time=")]


def _wrapper(host, name: str, dispatch_body: str) -> Path:
    """A HERMES_BIN that runs `dispatch_body` for `kanban ... dispatch` (with $REAL, the real hermes,
    and $CALLS, a file it appends to) and is the real hermes for anything else."""
    calls = host.home / f"{name}.calls"
    path = host.home / name
    path.write_text(
        "#!/bin/sh\n"
        f"REAL={host.hermes_bin}\nCALLS={calls}\n"
        'case " $* " in\n'
        f'  *" dispatch "*)\n    echo "dispatch $*" >> "$CALLS"\n{dispatch_body}\n    ;;\n'
        "esac\n"
        'exec "$REAL" "$@"\n'
    )
    path.chmod(0o755)
    return path


def _calls(wrapper: Path) -> list[str]:
    with contextlib.suppress(FileNotFoundError):
        return wrapper.with_name(wrapper.name + ".calls").read_text().splitlines()
    return []


def _processes_with_argv(argv: list[str]) -> list[int]:
    wanted = ("\0".join(argv) + "\0").encode()
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/cmdline").read_bytes() == wanted:
                found.append(int(pid))
    return found


def _fast_minute(host, stdout, **overrides: str) -> subprocess.CompletedProcess:
    env = host.pacer_env(PYTHONPATH=str(REPO / "pacer"), **overrides)
    return subprocess.run(
        [sys.executable, "-s", "-c", FAST_MINUTE],
        env=env,
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        timeout=300,
        check=False,
    )


# --- the log record (C2) ----------------------------------------------------------------------


def test_every_record_has_rc_right_after_reason():
    assert passlog.FIELDS[passlog.FIELDS.index("reason") + 1] == "rc"
    line = passlog.line({"board": "b", "reason": "terminated", "rc": 1}, "kv")
    assert " reason=terminated rc=1 " in line
    assert {"terminated", "internal_error", "settings_invalid"} <= passlog.FAILED_CLOSED
    assert "locked" not in passlog.FAILED_CLOSED


# --- workers of other users (C1) --------------------------------------------------------------


SLEEPER = "import time; time.sleep(120)"


@contextlib.contextmanager
def _look_alikes(count: int, uid_args: list[str], env: dict[str, str]):
    """`count` processes whose argv reads `work kanban task fakeN`, started as another user."""
    procs = [
        subprocess.Popen(
            [
                *uid_args,
                "/usr/bin/python3",
                "-c",
                "import time; time.sleep(120)",
                f"work kanban task fake{i}",
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            cwd="/",
        )
        for i in range(count)
    ]
    try:
        yield procs
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def _wait_until_switched(procs: list[subprocess.Popen], uid: int) -> None:
    """setpriv runs as root, with the same argv, until it has switched users."""
    deadline = time.monotonic() + 30
    for proc in procs:
        status = ""
        while f"Uid:\t{uid}\t" not in status and time.monotonic() < deadline:
            time.sleep(0.05)
            status = Path(f"/proc/{proc.pid}/status").read_text()
        assert f"Uid:\t{uid}\t" in status, status


AS_NOBODY = ["setpriv", "--reuid", str(NOBODY), "--regid", str(NOBODY), "--clear-groups", "--"]


@pytest.mark.slow
def test_look_alike_workers_of_another_user_are_not_counted(paced_host):
    paced_host.create_cards(3)
    db = paced_host.root / "kanban.db"
    # As close to this board's workers as another user can make them: same argv, same board env.
    imitation = {"PATH": "/usr/bin:/bin", "HERMES_KANBAN_DB": str(db), "HERMES_KANBAN_BOARD": "default"}
    with _look_alikes(5, AS_NOBODY, imitation) as fakes:
        _wait_until_switched(fakes, NOBODY)

        proc = paced_host.capped(MAX_PARALLEL="2")

        record = _fields(proc.stdout)
        assert record["reason"] == "dispatched", proc.stdout + proc.stderr
        assert len(record["spawned"].split(",")) == 2 and record["rc"] == "0"
        assert record["workers"] == "0"  # the five look-alikes are not this board's workers
        assert "foreign_workers_ignored:" in record["warning"]
        ours = workers.scan("default", db)
        assert {fake.pid for fake in fakes} <= set(ours.foreign)
        assert not {f"fake{i}" for i in range(5)} & ours.tasks
        as_nobody = workers.scan("default", db, uid=NOBODY)
        assert as_nobody.tasks == {f"fake{i}" for i in range(5)}


def test_scan_counts_only_the_given_uid_and_lists_the_others(tmp_path):
    db = tmp_path / "kanban.db"
    env = {"PATH": "/usr/bin:/bin", "HERMES_KANBAN_DB": str(db)}
    with _look_alikes(2, AS_NOBODY, env) as theirs, _look_alikes(1, [], env) as mine:
        _wait_until_switched(theirs, NOBODY)
        live = workers.scan("default", db, uid=os.geteuid())
        assert live.tasks == {"fake0"}
        assert {proc.pid for proc in theirs} <= set(live.foreign)
        assert mine[0].pid not in live.foreign


def test_an_environment_too_large_to_read_counts_against_the_board(tmp_path):
    # The board is only known past the read bound: the worker may be ours, so it holds a slot.
    db = tmp_path / "kanban.db"
    padding = {f"PAD{i}": "x" * 100_000 for i in range(3)}
    env = {"PATH": "/usr/bin:/bin", **padding, "HERMES_KANBAN_DB": str(tmp_path / "other.db")}
    with _look_alikes(1, [], env):
        deadline = time.monotonic() + 30
        while workers.scan("default", db).unattributed < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert workers.scan("default", db).unattributed == 1


# --- the lock covers the whole dispatch -------------------------------------------------------

# Records the start and end of each dispatch; a dispatch that finds another one's lock still held
# (by the shell or the sleep it waits on) writes `overlap`. DISPATCH_DELAY seconds of sleep
# come before the real dispatch, a sleep the stopped pass must end.
RECORDED_DISPATCH = """\
    exec 9>>"$CALLS.lock"
    flock -n 9 || echo "overlap $$" >> "$CALLS"
    echo "start $$" >> "$CALLS"
    trap 'echo "end $$ terminated" >> "$CALLS"; exit 143' TERM
    sleep "$DISPATCH_DELAY" &
    wait $!
    "$REAL" "$@"
    rc=$?
    echo "end $$" >> "$CALLS"
    exit $rc"""


@pytest.mark.slow
@pytest.mark.parametrize(
    ("script", "loop_env"),
    [(CAPPED, {}), (SUBMINUTE, {}), (SUBMINUTE, {"CAP_SCRIPT": str(CAPPED)})],
    ids=["capped", "subminute", "subminute-cap-script"],
)
def test_sigterm_mid_dispatch_never_lets_two_dispatches_run_at_once(paced_host, script, loop_env):
    paced_host.create_cards(3)
    wrapper = _wrapper(paced_host, "recording-hermes", RECORDED_DISPATCH)
    delay = "41.75"  # an argv no other process has: the first dispatch's sleep
    first = subprocess.Popen(
        [str(script)],
        env=paced_host.pacer_env(HERMES_BIN=str(wrapper), DISPATCH_DELAY=delay, **loop_env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not any(call.startswith("start") for call in _calls(wrapper)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert any(call.startswith("start") for call in _calls(wrapper)), first.communicate()

    first.send_signal(signal.SIGTERM)
    seconds = []
    for _ in range(50):  # passes back to back from the moment of the signal, until one dispatches
        second = paced_host.capped(HERMES_BIN=str(wrapper), DISPATCH_DELAY="0")
        seconds.append(second.stdout)
        if _fields(second.stdout).get("reason") != "locked":
            break
    out, err = first.communicate(timeout=60)

    record = _fields(out)
    assert first.returncode == 1, out + err
    assert (record["reason"], record["rc"]) == ("terminated", "1"), out + err
    assert len(_records(out)) == 1  # and a loop stopped there
    assert "Traceback" not in err
    assert _fields(seconds[-1])["reason"] == "dispatched", seconds
    calls = [call for call in _calls(wrapper) if not call.startswith("dispatch")]
    assert not [call for call in calls if call.startswith("overlap")], calls
    # Strictly one dispatch at a time: each start is followed by its own end.
    open_runs = []
    for call in calls:
        kind, pid = call.split()[:2]
        if kind == "start":
            assert not open_runs, calls
            open_runs.append(pid)
        else:
            assert open_runs == [pid], calls
            open_runs.pop()
    assert calls[1].endswith("terminated"), calls
    assert _processes_with_argv(["sleep", delay]) == []


# --- a leaked pipe does not stretch a call ----------------------------------------------------

LEAKING_DISPATCH = """\
    echo '{"spawned": [["t_leaked", "worker", "/tmp"]], "reclaimed": []}'
    sleep 53.25 &
    exit 0"""


@pytest.mark.slow
def test_a_grandchild_holding_stdout_does_not_stretch_the_call(paced_host):
    paced_host.create_cards(1)
    wrapper = _wrapper(paced_host, "leaking-hermes", LEAKING_DISPATCH)

    proc = paced_host.capped(HERMES_BIN=str(wrapper), HERMES_TIMEOUT="10", timeout=120)

    record = _fields(proc.stdout)
    # The output was complete when the CLI exited 0: it is used, not thrown away as a timeout.
    assert (record["reason"], record["spawned"]) == ("dispatched", "t_leaked"), proc.stdout
    assert record["rc"] == "0"
    assert _processes_with_argv(["sleep", "53.25"]) == []


# --- one bad pass never ends the loop ---------------------------------------------------------

EMPTY_DISPATCH = """\
    echo '{"spawned": []}'
    exit 0"""


@pytest.mark.slow
def test_a_loop_on_a_full_disk_runs_every_slot_without_a_traceback(paced_host):
    paced_host.create_cards(1)
    wrapper = _wrapper(paced_host, "empty-hermes", EMPTY_DISPATCH)

    with open("/dev/full", "w") as full:
        proc = _fast_minute(paced_host, full, HERMES_BIN=str(wrapper), RUNS_PER_MINUTE="6")

    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.count("cannot write pass records to stdout") == 1, proc.stderr
    assert proc.returncode == 1
    assert len([call for call in _calls(wrapper) if call.startswith("dispatch")]) == 6


GARBAGE_ONCE = """\
    if [ ! -e "$CALLS.garbage" ]; then
      : > "$CALLS.garbage"
      python3 -c 'print("[" * 100000)'
    else
      echo '{"spawned": []}'
    fi
    exit 0"""


@pytest.mark.slow
def test_an_error_inside_a_pass_is_one_record_and_the_loop_goes_on(paced_host):
    paced_host.create_cards(1)
    # JSON nested past the parser's recursion limit: an error no pass code expects.
    wrapper = _wrapper(paced_host, "garbage-hermes", GARBAGE_ONCE)

    proc = _fast_minute(
        paced_host, subprocess.PIPE, HERMES_BIN=str(wrapper), RUNS_PER_MINUTE="3", PACER_LOG_FORMAT="json"
    )

    assert "Traceback" not in proc.stderr, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [(r["reason"], r["rc"]) for r in records] == [
        ("internal_error", 1),
        ("none_spawnable", 0),
        ("none_spawnable", 0),
    ], proc.stdout
    assert records[0]["error"].startswith("RecursionError: ")
    assert proc.returncode == 1


@pytest.mark.slow
def test_an_error_inside_a_single_pass_is_one_record(paced_host):
    paced_host.create_cards(1)
    wrapper = _wrapper(paced_host, "garbage-hermes", GARBAGE_ONCE)
    proc = paced_host.capped(HERMES_BIN=str(wrapper))
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(_records(proc.stdout)) == 1
    assert (_fields(proc.stdout)["reason"], _fields(proc.stdout)["rc"]) == ("internal_error", "1")
    assert proc.returncode == 1


# --- settings ---------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("script", [CAPPED, SUBMINUTE], ids=["capped", "subminute"])
@pytest.mark.parametrize("name", ["HERMES_KANBAN_DB", "HERMES_KANBAN_HOME", "HERMES_HOME"])
def test_a_relative_hermes_path_is_bad_input_and_nothing_runs(paced_host, script, name):
    paced_host.create_cards(1)
    wrapper = _wrapper(paced_host, "recording-hermes", EMPTY_DISPATCH)
    value = "kanban.db" if name == "HERMES_KANBAN_DB" else ".hermes"

    proc = subprocess.run(
        [str(script)],
        env=paced_host.pacer_env(HERMES_BIN=str(wrapper), **{name: value}),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr == f"hermes-pacer: {name}={value!r} is invalid: expected an absolute path\n"
    assert _fields(proc.stdout)["reason"] == "settings_invalid"
    assert _calls(wrapper) == []
    assert set(paced_host.statuses().values()) == {"ready"}


# --- housekeeping and the clock ---------------------------------------------------------------


@pytest.mark.slow
def test_a_lock_stamp_from_the_future_still_lets_housekeeping_run(paced_host):
    # One open card and none ready: only housekeeping makes the pass call dispatch.
    (parent,) = paced_host.create_cards(1)
    paced_host.kanban("create", "child", "--assignee", "worker", "--parent", parent)
    paced_host.kanban("block", parent, "held for the test")
    lock_dir = paced_host.home / "locks"
    lock_dir.mkdir(mode=0o700)
    lock = lock_dir / "board-default.lock"
    lock.touch(mode=0o600)
    ahead = time.time() + 3600  # the clock was stepped back an hour since the last dispatch
    os.utime(lock, (ahead, ahead))
    wrapper = _wrapper(paced_host, "recording-hermes", 'exec "$REAL" "$@"')

    proc = paced_host.capped(HERMES_BIN=str(wrapper), PACER_HOUSEKEEPING_SECONDS="60")

    record = _fields(proc.stdout)
    assert (record["reason"], record["ready"]) == ("housekeeping", "0"), proc.stdout
    assert record["rc"] == "0"
    assert len(_calls(wrapper)) == 1
    assert lock.stat().st_mtime < ahead - 3000  # stamped again with the clock as it is now
