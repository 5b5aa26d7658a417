"""`hermes-pacer status` and `./tasks.sh status` on real files: settings files as the role writes them
and status files in docs/metrics.md's shape (written here, as a pass writes them), read through the
installed command. The status files are the Hermes user's: links, FIFOs, huge files, wrong types and
escape sequences in them give a board flagged unreadable or a cleaned string, never a traceback."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ansible_run import LOCAL_HOST, UNREACHABLE_HOST, invoke, write_inventory

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
COMMAND = REPO / "roles" / "hermes_pacer" / "files" / "scripts" / "hermes-pacer"
HEADER = re.compile(r"^hermes-pacer status of \S+ at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$", re.M)
BOARD_KEYS = {
    "board",
    "settings",
    "state_dir",
    "cap",
    "interval",
    "flags",
    "problems",
    "last_pass_age",
    "reason",
    "rc",
    "error",
    "warning",
    "workers",
    "lingering",
    "running",
    "ready",
    "slots",
    "oldest_ready_age",
    "failing_since_age",
    "last_spawn_age",
    "endpoint",
}
ENDPOINT_KEYS = {"name", "state", "detail", "age", "problem", "cap", "used", "foreign", "workers"}
ENDPOINT_KEYS |= {"running", "waiting", "fleet", "fleet_index", "fleet_hosts", "fleet_mode"}


# --- the files, as the role and a pass write them -----------------------------------------------


def write_settings(
    etc: Path, board: str, state: Path, endpoint: str = "", runs: int = 4, cap: int = 2
) -> Path:
    folder = etc / "hermes-pacer"
    folder.mkdir(parents=True, exist_ok=True)
    lines = [f"BOARD={board}", f"MAX_PARALLEL={cap}", f"RUNS_PER_MINUTE={runs}", f"PACER_STATE_DIR={state}"]
    if endpoint:
        lines += [f"PACER_ENDPOINT={endpoint}", "PACER_ENDPOINT_MAX_PARALLEL=4"]
    path = folder / f"{board}.env"
    path.write_text("\n".join(lines) + "\n")
    return path


def board_document(board: str, now: float, endpoint: str = "", **last) -> dict:
    return {
        "version": 1,
        "board": board,
        "home": "/home/hermes/.hermes",
        "endpoint": endpoint,
        "cap": 2,
        "interval": 15.0,
        "last": {
            "time": now - 2,
            "reason": "dispatched",
            "rc": 0,
            "ms": 412,
            "running": 1,
            "ready": 3,
            "todo": 0,
            "blocked": 0,
            "workers": 2,
            "lingering": 0,
            "slots": 1,
            "oldest_ready_created": now - 750,
            "spawned": 1,
            "reclaimed": 0,
            "endpoint_cap": 4 if endpoint else None,
            "endpoint_used": 3 if endpoint else None,
            "foreign": 1 if endpoint else None,
            "error": "",
            "warning": "",
            **last,
        },
        "counters": {"passes": 120, "failed_passes": 0, "spawned": 14, "reclaimed": 0},
        "counting_since": now - 1000,
        "last_spawn": now - 2,
        "failing_since": None,
    }


def endpoint_document(name: str, now: float, **fields) -> dict:
    return {
        "version": 1,
        "endpoint": name,
        "kind": "vllm",
        "url": "http://10.0.0.5:8000/v1",
        "cap": 4,
        "time": now - 2,
        "up": True,
        "detail": "",
        "running": 3,
        "waiting": 0,
        "workers": 2,
        "foreign": 1,
        "used": 3,
        "ramp": False,
        "probe_ms": 4,
        **fields,
    }


def write_json(path: Path, document: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document))
    return path


def host_with(tmp_path: Path, **last) -> tuple[Path, Path]:
    """(etc, state dir) of a host with one board `default` on endpoint gpu0, both fine unless
    `last` changes the board's last pass."""
    etc, state, now = tmp_path / "etc", tmp_path / "state", time.time()
    write_settings(etc, "default", state, endpoint="gpu0")
    write_json(state / "board-default.json", board_document("default", now, "gpu0", **last))
    write_json(state / "endpoint-gpu0.json", endpoint_document("gpu0", now))
    return etc, state


def status(*args, timeout: int = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(COMMAND), "status", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def as_json(etc: Path) -> tuple[int, dict]:
    run = status("--json", "--etc", etc)
    assert "Traceback" not in run.stderr, run.stderr
    return run.returncode, json.loads(run.stdout)


# --- the view -----------------------------------------------------------------------------------


def test_the_table_and_the_json_of_fine_boards(tmp_path):
    etc, state = host_with(tmp_path)
    now = time.time()
    write_settings(etc, "research", state, runs=1, cap=4)
    write_json(state / "board-research.json", board_document("research", now, reason="no_slots", ready=0))

    run = status("--etc", etc)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert HEADER.match(lines[0])
    assert lines[1].split() == [
        "BOARD",
        "CAP",
        "LIVE",
        "RUN",
        "READY",
        "OLDEST",
        "LAST",
        "REASON",
        "ENDPOINT",
    ]
    default = next(line for line in lines if line.startswith("default "))
    assert re.match(
        r"default\s+2\s+2\s+1\s+3\s+12m\s+\d+s\s+dispatched\s+gpu0 up 3/4 used, 1 foreign$", default
    )
    research = next(line for line in lines if line.startswith("research "))
    assert re.match(r"research\s+4\s+2\s+1\s+0\s+12m\s+\d+s\s+no_slots\s+-$", research)
    # Aligned: every column starts where its heading does.
    assert default.index("dispatched") == lines[1].index("REASON") == research.index("no_slots")
    assert default.index("gpu0") == lines[1].index("ENDPOINT")
    assert max(map(len, lines)) <= 100

    code, document = as_json(etc)
    assert code == 0
    assert set(document) == {"version", "host", "time", "ok", "error", "boards"}
    assert document["ok"] is True and document["version"] == 1
    assert [b["board"] for b in document["boards"]] == ["default", "research"]
    for board in document["boards"]:
        assert set(board) == BOARD_KEYS
        assert board["flags"] == [] and board["problems"] == []
    default = document["boards"][0]
    assert default["cap"] == 2 and default["interval"] == 15.0 and default["workers"] == 2
    assert 740 < default["oldest_ready_age"] < 3600
    assert set(default["endpoint"]) == ENDPOINT_KEYS
    assert default["endpoint"]["state"] == "up" and default["endpoint"]["used"] == 3
    assert document["boards"][1]["endpoint"] is None and document["boards"][1]["interval"] == 60.0


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(None, "-"), (0, "0s"), (12.9, "12s"), (59, "59s"), (240, "4m"), (3 * 3600 + 5, "3h")],
)
def test_human_ages(seconds, shown):
    sys.path.insert(0, str(REPO / "pacer"))
    from hermes_pacer.status import human_age

    assert human_age(seconds) == shown


def test_a_ramping_endpoint(tmp_path):
    etc, state = host_with(tmp_path)
    write_json(state / "endpoint-gpu0.json", endpoint_document("gpu0", time.time(), ramp=True, foreign=0))
    run = status("--etc", etc)
    assert run.returncode == 0
    assert re.search(r"gpu0 ramp 3/4 used$", run.stdout, re.M)


def test_a_fleet_host_shows_its_place_and_mode(tmp_path):
    etc, state = host_with(tmp_path)
    settings = etc / "hermes-pacer" / "default.env"
    settings.write_text(
        settings.read_text() + "PACER_FLEET=gpu_a_fleet\nPACER_FLEET_HOSTS=3\nPACER_FLEET_INDEX=1\n"
    )
    fleet = {"fleet": "ignored", "fleet_hosts": 3, "fleet_index": 1, "fleet_share": 1, "fleet_static": True}
    write_json(state / "endpoint-gpu0.json", endpoint_document("gpu0", time.time(), **fleet))

    run = status("--etc", etc)
    assert run.returncode == 0, run.stdout + run.stderr
    # The group and the place come from root's settings file, the mode from the pass's status.
    assert re.search(r"gpu0 up 3/4 used, 1 foreign, fleet gpu_a_fleet 2/3 static$", run.stdout, re.M)
    endpoint = as_json(etc)[1]["boards"][0]["endpoint"]
    assert (endpoint["fleet"], endpoint["fleet_index"], endpoint["fleet_hosts"]) == ("gpu_a_fleet", 1, 3)
    assert endpoint["fleet_mode"] == "static"

    write_json(state / "endpoint-gpu0.json", endpoint_document("gpu0", time.time(), fleet_static="yes"))
    code, document = as_json(etc)
    assert code == 1 and document["boards"][0]["flags"] == ["unreadable"]
    assert "fleet_static is str, expected bool or null" in document["boards"][0]["problems"][0]


def test_a_stopped_pacer(tmp_path):
    # RUNS_PER_MINUTE=4: stopped after 3 x 15 s + 60 s without a pass.
    etc, _ = host_with(tmp_path, time=time.time() - 3 * 3600 - 100)
    run = status("--etc", etc)
    assert run.returncode == 1
    assert re.search(r"^default .* 3h  dispatched", run.stdout, re.M)
    assert "    ! stopped: no pass for 3h (expected every 15s)" in run.stdout
    assert as_json(etc)[1]["boards"][0]["flags"] == ["stopped"]


def test_a_board_failing_closed(tmp_path):
    etc, _ = host_with(tmp_path, reason="hermes_error", rc=1, error="hermes exited 1: database is locked")
    document_path = tmp_path / "state" / "board-default.json"
    document = json.loads(document_path.read_text())
    document["failing_since"] = time.time() - 600
    write_json(document_path, document)
    run = status("--etc", etc)
    assert run.returncode == 1
    assert "    ! failing closed for 10m: hermes_error: hermes exited 1: database is locked" in run.stdout
    code, document = as_json(etc)
    assert code == 1 and document["ok"] is False
    assert document["boards"][0]["flags"] == ["failing"]
    assert 590 < document["boards"][0]["failing_since_age"] < 3600


def test_an_endpoint_down(tmp_path):
    etc, state = host_with(tmp_path, reason="endpoint_down")
    down = endpoint_document("gpu0", time.time(), up=False, detail="connection refused", running=None)
    write_json(state / "endpoint-gpu0.json", down)
    run = status("--etc", etc)
    assert run.returncode == 1
    assert re.search(r"endpoint_down\s+gpu0 down: connection refused$", run.stdout, re.M)
    assert "    ! endpoint gpu0 is down: connection refused" in run.stdout
    assert as_json(etc)[1]["boards"][0]["flags"] == ["endpoint_down"]


def test_no_status_yet(tmp_path):
    etc, state = host_with(tmp_path)
    (state / "board-default.json").unlink()
    (state / "endpoint-gpu0.json").unlink()
    run = status("--etc", etc)
    assert run.returncode == 1, "a board no pass has reported on is not vouched for"
    assert re.search(r"^default\s+2\s+-\s+-\s+-\s+-\s+-\s+-\s+gpu0 no status yet$", run.stdout, re.M)
    assert f"    ! no status yet: no pass has written {state / 'board-default.json'}\n" in run.stdout
    assert as_json(etc)[1]["boards"][0]["flags"] == ["no_status"]


def test_no_paced_board_says_where_it_looked(tmp_path):
    run = status("--etc", tmp_path)
    assert run.returncode == 2
    assert f"no paced board found: no *.env settings file in {tmp_path / 'hermes-pacer'}" in run.stderr
    code, document = as_json(tmp_path)
    assert code == 2 and document["ok"] is False and document["boards"] == []
    assert document["error"].startswith("no paced board found")


@pytest.mark.parametrize("watch", ["0", "-1", "soon", "3601"])
def test_bad_usage(tmp_path, watch):
    run = status("--etc", tmp_path, "--watch", watch)
    assert run.returncode == 2
    assert "--watch takes seconds from 0.1 to 3600" in run.stderr


def test_an_unreadable_settings_file_is_a_board_flagged(tmp_path):
    etc, _ = host_with(tmp_path)
    (etc / "hermes-pacer" / "bad.env").write_text("MAX_PARALLEL=2\nNOT_A_KEY=1\n")
    code, document = as_json(etc)
    assert code == 1
    bad = next(b for b in document["boards"] if b["board"] == "bad")
    assert bad["flags"] == ["unreadable"] and "NOT_A_KEY is not a setting" in bad["problems"][0]


# --- hostile status files ----------------------------------------------------------------------


def _link(path: Path) -> None:
    # As on a host: the link and its directory belong to the Hermes user (here nobody), not root.
    target = path.with_name("elsewhere.json")
    path.rename(target)
    path.symlink_to(target)
    os.lchown(path, 65534, 65534)
    os.chown(path.parent, 65534, 65534)


def _fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def _huge(path: Path) -> None:
    path.write_bytes(b" " * (10 << 20) + path.read_bytes())


def _retype(key: str, value: object):
    def change(path: Path) -> None:
        document = json.loads(path.read_text())
        parent = document["last"] if key.startswith("last.") else document
        parent[key.removeprefix("last.")] = value
        path.write_text(json.dumps(document))

    return change


def _text(text: bytes):
    return lambda path: path.write_bytes(text)


HOSTILE = {
    "link": (_link, "is a symbolic link of uid 65534: not followed"),
    "fifo": (_fifo, "is not a regular file: not read"),
    "10 MiB": (_huge, "is larger than 65536 bytes: not read"),
    "count as text": (_retype("last.running", "3"), "last.running is str, expected int or null"),
    "count as bool": (_retype("last.workers", True), "last.workers is bool, expected int or null"),
    "negative count": (_retype("last.ready", -1), "last.ready is negative"),
    "last as list": (_retype("last", []), "last is array, expected object"),
    "time missing": (_retype("last", {"reason": "x"}), "last.time is missing"),
    "version 2": (_retype("version", 2), "version is 2, this reader knows version 1"),
    "another board": (_retype("board", "other"), "the file is not board default's"),
    "future": (_retype("last.time", time.time() + 86400), "last.time is in the future"),
    "NaN": (_text(b'{"version": NaN}'), "NaN is not a JSON number"),
    "infinite": (_text(b'{"version": 1, "board": "default", "last": {"time": 1e999}}'), "not a finite"),
    "not UTF-8": (_text(b'{"version": 1, "board": "def\xffault"}'), "is not UTF-8 (byte 28)"),
    "deep": (_text(b"[" * 60000), "is not JSON (RecursionError)"),
    "not JSON": (_text(b"ok\n"), "is not JSON (Expecting value)"),
    "array": (_text(b"[1]"), "is not a JSON object"),
}


@pytest.mark.parametrize("name", HOSTILE)
def test_a_hostile_board_status_file(tmp_path, name):
    change, why = HOSTILE[name]
    etc, state = host_with(tmp_path)
    change(state / "board-default.json")
    run = status("--etc", etc, timeout=30)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "Traceback" not in run.stderr and run.stderr == ""
    assert re.search(
        rf"^    ! {re.escape(str(state / 'board-default.json'))}.*{re.escape(why)}", run.stdout, re.M
    )
    code, document = as_json(etc)
    assert code == 1 and document["boards"][0]["flags"] == ["unreadable"]


def test_a_hostile_endpoint_status_file(tmp_path):
    etc, state = host_with(tmp_path)
    write_json(state / "endpoint-gpu0.json", endpoint_document("gpu0", time.time(), up="yes"))
    run = status("--etc", etc)
    assert run.returncode == 1
    assert "gpu0 unreadable" in run.stdout
    assert f"! {state / 'endpoint-gpu0.json'}: up is str, expected bool" in run.stdout


def test_escape_sequences_never_reach_the_terminal(tmp_path):
    error = "\x1b[2J\x1b]0;owned\x07red\x1b[31m\rline\u202etxt.exe\x9b"
    etc, state = host_with(tmp_path, rc=1, reason="hermes_error\x1b[1m", error=error, warning="\x1b[5m")
    write_json(
        state / "endpoint-gpu0.json", endpoint_document("gpu0", time.time(), up=False, detail="\x1b[8mgone")
    )
    run = status("--etc", etc)
    assert run.returncode == 1
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202e]", run.stdout)
    assert r"\x1b[2J\x1b]0;owned\x07red\x1b[31m\x0dline\u202etxt.exe\x9b" in run.stdout
    assert r"gpu0 down: \x1b[8mgone" in run.stdout
    assert r"warning: \x1b[5m" in run.stdout
    json_run = status("--json", "--etc", etc)
    assert json_run.stdout.isascii() and "\x1b" not in json_run.stdout
    assert json.loads(json_run.stdout)["boards"][0]["error"] == error  # --json keeps it whole, escaped


# --- --watch -----------------------------------------------------------------------------------


def _frames(stream, count: int) -> str:
    """Lines of `stream` until `count` headers were read (each read waits for the next frame)."""
    text = ""
    while len(HEADER.findall(text)) < count:
        line = stream.readline()
        assert line, f"the watch ended early: {text!r}"
        text += line
    return text


def test_watch_prints_successive_blocks_until_ctrl_c(tmp_path):
    etc, _ = host_with(tmp_path)
    watch = subprocess.Popen(
        [str(COMMAND), "status", "--etc", str(etc), "--watch", "0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        text = _frames(watch.stdout, 2)
        assert "\x1b" not in text, "no screen control when stdout is no terminal"
        first = HEADER.split(text)[1]
        assert first.splitlines()[2].startswith("default ") and first.endswith("\n\n"), "a blank line apart"
        watch.send_signal(signal.SIGINT)
        assert watch.wait(timeout=30) == 0
        assert "Traceback" not in watch.stderr.read()
    finally:
        watch.kill()
        watch.wait()


def test_watch_redraws_in_place_on_a_terminal(tmp_path):
    etc, _ = host_with(tmp_path, reason="failing", rc=1, error="e")  # a bad board: still exit 0 on Ctrl-C
    main, child = pty.openpty()
    watch = subprocess.Popen(
        [str(COMMAND), "status", "--etc", str(etc), "--watch", "0.2"],
        stdout=child,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    os.close(child)
    try:
        output = b""
        while output.count(b"\x1b[H\x1b[2J") < 2:
            ready, _, _ = select.select([main], [], [], 30)
            assert ready, f"no second frame: {output!r}"
            output += os.read(main, 65536)
        assert output.startswith(b"\x1b[H\x1b[2Jhermes-pacer status of ")
        watch.send_signal(signal.SIGINT)
        assert watch.wait(timeout=30) == 0
    finally:
        watch.kill()
        watch.wait()
        os.close(main)


# --- ./tasks.sh status -------------------------------------------------------------------------


def test_tasks_status_shows_every_host_of_the_inventory(tmp_path):
    """The real playbook on this machine: one host with the installed command and a board, one
    without the command, one that cannot be reached: one table, and the task fails."""
    etc, _ = host_with(tmp_path)
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "hermes-pacer").symlink_to(COMMAND)
    inventory = write_inventory(
        tmp_path / "hosts.yml",
        {
            "localhost": {
                **LOCAL_HOST,
                "hermes_pacer_scripts_dir": str(scripts),
                "hermes_pacer_status_etc": str(etc),
            },
            "bare": {**LOCAL_HOST, "hermes_pacer_scripts_dir": str(tmp_path / "none")},
            "down": UNREACHABLE_HOST,
        },
    )

    def status_of_inventory(*args):
        return invoke("status", "--inventory", inventory, *args)

    run = status_of_inventory()
    assert run.returncode == 1, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert re.match(r"hermes-pacer status of 3 host\(s\) at ", lines[0])
    assert lines[1].split()[:2] == ["HOST", "BOARD"]
    assert re.match(r"bare\s+hermes-pacer is not installed here: run site.yml$", lines[2])
    assert re.match(r"down\s+unreachable or failed, no status: fatal: \[down\]: UNREACHABLE!", lines[3])
    assert re.match(r"localhost\s+default\s+2\s+2\s+1\s+3\s+12m\s+\d+s\s+dispatched\s+gpu0 up 3/4", lines[4])
    assert lines[1].index("BOARD") == lines[4].index("default")

    limited = status_of_inventory("--limit", "localhost", "--json")
    assert limited.returncode == 0, limited.stdout + limited.stderr
    documents = json.loads(limited.stdout)
    assert list(documents) == ["localhost"] and documents["localhost"]["ok"] is True
