"""`verify` (and the pass's config read) against what a hostile Hermes user can leave behind: FIFOs
and links to /dev/zero where root reads, a Latin-1 config, a quoted "false", dispatch lines in
forms the old regex missed, passes that all failed closed, and look-alike workers of another user.

Hostile files belong to `nobody` in directories `nobody` owns, as the Hermes user's would. Reads
that could hang run verify as a subprocess with a timeout: the test asserts it finished.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from hermes_host import CAPPED, REPO
from hermes_pacer import fleet_report, paths, verify
from test_verify import managed_cron_pacer

pytestmark = pytest.mark.slow

VERIFY = REPO / "scripts" / "hermes-pacer-verify.sh"
NOBODY = 65534
NO_HANG = 60  # seconds: far past what verify takes; reaching it means it hung


def _nobodys(path) -> None:
    os.lchown(path, NOBODY, NOBODY)


def _kv(when: float, reason: str, rc: int, error: str = "") -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))
    tail = f' error="{error}"' if error else ""
    return f"time={stamp} board=default cap=2 running=0 reason={reason} rc={rc}{tail} ms=12\n"


# --- without Hermes: the pass's config read and the rule on passes ------------------------------


def _pass_with_config(tmp_path, content: bytes | None) -> subprocess.CompletedProcess:
    home = tmp_path / "home"
    (home / ".hermes").mkdir(parents=True)
    config = home / ".hermes" / "config.yaml"
    if content is None:
        os.mkfifo(config)
    else:
        config.write_bytes(content)
    env = {
        "HOME": str(home),
        "PATH": "/usr/bin:/bin",
        "PACER_LOCK_DIR": str(home / "locks"),
        "BOARD": "default",
        "HERMES_BIN": "/bin/false",  # never run: there is no board to count
    }
    return subprocess.run(
        [str(CAPPED)], env=env, capture_output=True, text=True, timeout=NO_HANG, check=False
    )


def test_the_pass_does_not_hang_on_a_fifo_config(tmp_path):
    result = _pass_with_config(tmp_path, None)
    assert "Traceback" not in result.stderr
    assert "reason=" in result.stdout  # it logged its pass (no board here: count_unknown)


def test_the_pass_reads_a_latin1_config(tmp_path):
    result = _pass_with_config(tmp_path, b"# caf\xe9\nkanban:\n  max_in_progress: 1\n")
    assert "Traceback" not in result.stderr
    assert "native_cap_set:max_in_progress:1" in result.stdout


def test_passes_that_all_failed_closed_are_a_problem_naming_reason_and_since():
    now = time.time()
    records = [verify.parse_record(_kv(now - 600 + 15 * i, "hermes_failed", 1, "exit 1")) for i in range(40)]
    age, problem = verify.judge_passes(records, now, 15.0)
    assert age is not None and age < 30
    assert "hermes_failed x40" in problem and "since " + records[0]["time"] in problem
    assert "exit 1" in problem


def test_all_locked_is_a_problem_and_one_good_pass_is_not():
    now = time.time()
    locked = [verify.parse_record(_kv(now - 200 + 15 * i, "locked", 0)) for i in range(12)]
    assert "locked x12" in verify.judge_passes(locked, now, 15.0)[1]
    mixed = [*locked[:-1], verify.parse_record(_kv(now - 5, "no_ready", 0))]
    assert verify.judge_passes(mixed, now, 15.0)[1] == ""


def test_a_pass_record_in_json_is_read_too():
    record = verify.parse_record('{"time":"2026-01-01T00:00:00Z","board":"b","reason":"at_cap","rc":0}')
    assert record is not None and record["reason"] == "at_cap" and not verify.failed_closed(record)


def test_the_managed_scope_turning_the_dispatcher_on_fails(tmp_path):
    # Hermes 0.19 reads /etc/hermes/config.yaml last and lets it win, key by key.
    etc = tmp_path / "etc"
    (etc / "hermes").mkdir(parents=True)
    (etc / "hermes" / "config.yaml").write_text("kanban:\n  dispatch_in_gateway: yes\n")
    report = verify.run(etc=etc, spool=tmp_path / "spool", homes=[tmp_path / "none"])
    check = next(c for c in report["checks"] if c["name"].startswith("managed config"))
    assert not check["ok"] and not report["ok"]
    (etc / "hermes" / "config.yaml").write_text("kanban:\n  dispatch_in_gateway: off\n")
    report = verify.run(etc=etc, spool=tmp_path / "spool", homes=[tmp_path / "none"])
    assert next(c for c in report["checks"] if c["name"].startswith("managed config"))["ok"]


# --- with Hermes: verify on a paced home ----------------------------------------------------------


@pytest.fixture
def paced(paced_host, tmp_path):
    """The test home with a managed cron pacer in a private /etc and one logged pass; its log
    directory belongs to nobody, as the Hermes user's does."""
    etc = tmp_path / "etc"
    log_dir = paced_host.home / "log"
    log_dir.mkdir()
    log = log_dir / "kanban-dispatch-default.log"
    env = paced_host.pacer_env(BOARD="default", MAX_PARALLEL="2")
    managed_cron_pacer(etc, env, log, "nobody")
    with open(log, "w") as out:
        subprocess.run([str(CAPPED)], env=env, stdout=out, check=True)
    _nobodys(log_dir)
    _nobodys(log)
    paced_host.etc = etc
    paced_host.log = log
    paced_host.pids = []
    yield paced_host
    for pid in paced_host.pids:
        try:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def _verify(host) -> tuple[int, dict, str]:
    args = [str(VERIFY), "--etc", str(host.etc), "--spool", str(host.etc / "spool"), "--home", str(host.root)]
    text = subprocess.run(args, capture_output=True, text=True, timeout=NO_HANG, check=False)
    data = subprocess.run([*args, "--json"], capture_output=True, text=True, timeout=NO_HANG, check=False)
    assert "Traceback" not in text.stderr + data.stderr, text.stderr + data.stderr
    assert text.returncode == data.returncode
    return data.returncode, json.loads(data.stdout), text.stdout


def _board(report: dict, slug: str = "default") -> dict:
    return next(item for item in report["boards"] if item["board"] == slug)


@pytest.mark.slow
def test_a_paced_host_is_safe(paced):
    code, _, text = _verify(paced)
    assert code == 0, text


@pytest.mark.slow
def test_a_fifo_config_is_named_not_a_hang(paced):
    config = paced.root / "profiles" / "worker" / "config.yaml"
    config.unlink()
    os.mkfifo(config)
    _nobodys(config)
    code, _, text = _verify(paced)
    assert code == 1
    assert f"FAIL config {config}" in text and "not a regular file" in text


@pytest.mark.slow
def test_a_latin1_config_is_one_hermes_cannot_load(paced):
    config = paced.root / "config.yaml"
    config.write_bytes(config.read_bytes() + b"# caf\xe9\n")
    code, _, text = _verify(paced)
    assert code == 1
    assert f"FAIL config {config}" in text and "not UTF-8" in text


@pytest.mark.slow
@pytest.mark.parametrize("target", ["/dev/zero", "fifo"])
def test_a_log_linked_to_dev_zero_or_a_fifo_is_named_not_a_hang(paced, target):
    if target == "fifo":
        target = str(paced.log.parent / "fifo")
        os.mkfifo(target)
        _nobodys(target)
    paced.log.unlink()
    paced.log.symlink_to(target)
    _nobodys(paced.log)
    code, _, text = _verify(paced)
    assert code == 1
    assert (
        f"{paced.log}: kanban-dispatch-default.log is a symbolic link of uid {NOBODY}: not followed" in text
    )


@pytest.mark.slow
def test_a_log_that_is_a_fifo_is_named_not_a_hang(paced):
    paced.log.unlink()
    os.mkfifo(paced.log)
    _nobodys(paced.log)
    code, _, text = _verify(paced)
    assert code == 1 and f"{paced.log} is not a regular file" in text


@pytest.mark.slow
@pytest.mark.parametrize("target", ["/dev/zero", "fifo"])
def test_jobs_json_linked_to_dev_zero_or_a_fifo_is_named_not_a_hang(paced, target):
    cron = paced.root / "cron"
    cron.mkdir(exist_ok=True)
    _nobodys(cron)
    if target == "fifo":
        target = str(cron / "fifo")
        os.mkfifo(target)
        _nobodys(target)
    jobs = cron / "jobs.json"
    jobs.unlink(missing_ok=True)
    jobs.symlink_to(target)
    _nobodys(jobs)
    code, _, text = _verify(paced)
    assert code == 1 and f"{jobs}: jobs.json is a symbolic link of uid {NOBODY}: not followed" in text


@pytest.mark.slow
def test_a_board_database_linked_to_a_fifo_is_named_not_a_hang(paced):
    fifo = paced.home / "log" / "fifo"
    os.mkfifo(fifo)
    db = paced.root / "kanban.db"
    db.unlink()
    db.symlink_to(fifo)
    _nobodys(db)
    code, _, text = _verify(paced)
    assert code == 1 and f"cannot read the board: {db}: kanban.db is a symbolic link" in text


@pytest.mark.slow
def test_every_pass_failed_closed_is_not_safe(paced):
    now = time.time()
    paced.log.write_text("".join(_kv(now - 400 + 10 * i, "hermes_failed", 1, "exit 2") for i in range(40)))
    code, _, text = _verify(paced)
    assert code == 1
    assert "failed closed" in text and "hermes_failed x40" in text and "since " in text


@pytest.mark.slow
def test_every_pass_locked_is_not_safe(paced):
    now = time.time()
    paced.log.write_text("".join(_kv(now - 400 + 10 * i, "locked", 0) for i in range(40)))
    code, _, text = _verify(paced)
    assert code == 1 and "locked x40" in text


@pytest.mark.slow
@pytest.mark.parametrize("value", ['"false"', "'off'", '"no"', "!!str false"])
def test_a_quoted_false_is_on_as_hermes_reads_it(paced, value):
    config = paced.root / "config.yaml"
    config.write_text(
        config.read_text().replace("dispatch_in_gateway: false", f"dispatch_in_gateway: {value}")
    )
    code, _, text = _verify(paced)
    assert code == 1 and f"FAIL config {config}" in text


@pytest.mark.slow
@pytest.mark.parametrize("value", ["off", "no", "False", "0", "null", "~", "''"])
def test_what_python_finds_false_is_off(paced, value):
    config = paced.root / "config.yaml"
    config.write_text(
        config.read_text().replace("dispatch_in_gateway: false", f"dispatch_in_gateway: {value}")
    )
    code, _, text = _verify(paced)
    assert code == 0, text


@pytest.mark.slow
def test_profile_and_board_forms_of_dispatch_lines_are_seen(paced):
    paced.create_board("ops")
    spool = paced.etc / "spool"
    spool.mkdir()
    (spool / "hermes").write_text(
        f"HOME={paced.home}\n"
        f"* * * * * {paced.hermes_bin} -p worker kanban dispatch\n"
        f"* * * * * {paced.hermes_bin} --profile worker kanban --board ops dispatch\n"
    )
    code, report, text = _verify(paced)
    assert code == 1
    assert sorted(p["kind"] for p in _board(report)["paths"]) == ["cron", "pacer"]
    assert [p["kind"] for p in _board(report, "ops")["paths"]] == ["cron"]
    assert "profile worker" in text


@pytest.mark.slow
def test_a_board_slug_hermes_refuses_is_reported_as_such(paced):
    spool = paced.etc / "spool"
    spool.mkdir()
    (spool / "hermes").write_text(f"HOME={paced.home}\n* * * * * hermes kanban --board ../x dispatch\n")
    _, report, _ = _verify(paced)
    assert [p["kind"] for p in _board(report)["paths"]] == ["pacer"]
    assert "board slug '../x' is refused by Hermes" in " ".join(report["warnings"])


@pytest.mark.slow
def test_a_dispatch_line_of_another_home_is_not_this_homes_path(paced):
    spool = paced.etc / "spool"
    spool.mkdir()
    (spool / "alice").write_text("* * * * * HOME=/home/alice-h3 hermes kanban dispatch\n")
    _, report, _ = _verify(paced)
    assert [p["kind"] for p in _board(report)["paths"]] == ["pacer"]


@pytest.mark.slow
def test_look_alike_workers_of_another_user_are_named(paced):
    setuid = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    for index in range(5):
        sleeper = [sys.executable, "-c", "import time; time.sleep(120)", f"work kanban task fake{index}"]
        process = subprocess.Popen([*setuid, *sleeper], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        paced.pids.append(process.pid)
    time.sleep(1)  # long enough to have exec'd into its final command line
    _, report, text = _verify(paced)
    warnings = " ".join(report["warnings"])
    for pid in paced.pids:
        assert f"pid {pid} (uid {NOBODY})" in warnings
    assert "WARNING" in text and "not counted" in text


# --- systemd pacers log to the journal (contract C3) -----------------------------------------------
# journald does not run on this development machine (PID 1 is not systemd), so a `journalctl` on
# PATH stands in for it here: it records its arguments and prints what the journal would.


def _journal(tmp_path, monkeypatch, body: str) -> paths.Pacer:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    journalctl = bin_dir / "journalctl"
    journalctl.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/argv\n{body}\n')
    journalctl.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    values = {"BOARD": "ops", "PACER_USER": "hermes", "PACER_JOURNAL_ID": "hermes-pacer-ops"}
    return paths.Pacer("ops", "systemd", values, "/etc/hermes-pacer/ops.env")


def test_a_systemd_pacer_is_read_from_its_journal_identifier(tmp_path, monkeypatch):
    now = time.time()
    lines = "".join(_kv(now - 30 + 5 * i, "no_ready", 0) for i in range(5))
    pacer = _journal(tmp_path, monkeypatch, f"cat <<'END'\n{lines}END")
    where, records = verify.recent_passes(pacer)
    assert where == "journal hermes-pacer-ops" and len(records) == 5
    assert (tmp_path / "argv").read_text().split() == [
        *("-q", "--no-pager", "-o", "cat", "-t", "hermes-pacer-ops", "-n", "200"),
    ]


def test_a_journal_that_does_not_answer_is_a_finding_not_a_hang(tmp_path, monkeypatch):
    pacer = _journal(tmp_path, monkeypatch, "exec sleep 30")
    monkeypatch.setattr(verify, "JOURNAL_TIMEOUT", 1)
    with pytest.raises(verify.PassesUnreadable, match="journalctl"):
        verify.recent_passes(pacer)


def test_a_masked_unit_is_no_refused_file(tmp_path):
    """`systemctl mask` (and Debian's container images) link units to /dev/null: they run nothing."""
    units = tmp_path / "systemd" / "system"
    units.mkdir(parents=True)
    (units / "console-getty.service").symlink_to("/dev/null")
    (units / "fifo.service").symlink_to("/dev/zero")
    refused: list[str] = []
    assert paths.other_units(tmp_path, refused) == []
    assert len(refused) == 1 and "fifo.service" in refused[0]


def test_a_board_held_on_purpose_is_said_without_failing():
    """Passes that start nothing because the endpoint is down or an ESTOP holds did their job: not
    a failure, but the operator reads why the work waits."""
    now = 1_000_000.0
    stamp = lambda t: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))  # noqa: E731
    down = [
        {
            "time": stamp(now - 400 + 5 * i),
            "reason": "endpoint_down",
            "rc": "0",
            "error": "127.0.0.1: refused",
        }
        for i in range(80)
    ]
    assert verify.judge_passes(down, now, 5.0)[1] == ""
    said = verify.holding(down, now, 5.0)
    assert said.startswith(f"its endpoint is down since {stamp(now - 400)}") and "refused" in said
    paused = [{"time": stamp(now - 300 + 5 * i), "reason": "paused", "rc": "0"} for i in range(60)]
    assert verify.holding(paused, now, 5.0).startswith("an ESTOP pauses it")
    assert verify.holding([*down, {"time": stamp(now), "reason": "dispatched", "rc": "0"}], now, 5.0) == ""


ESCAPES = "\x1b[2J\x1b]0;owned\x07\rline\u202etxt"


def test_what_the_hermes_user_wrote_reaches_the_terminal_as_text():
    """A URL from its config.yaml, a board's path: verify's and the fleet summary's lines show an
    escape sequence as text, never as one."""
    report = {
        "ok": False,
        "boards": [],
        "checks": [{"name": "config", "ok": False, "detail": f"model.base_url {ESCAPES}", "fix": ""}],
        "warnings": [f"http://gpu{ESCAPES}/v1 is no endpoint of the boards"],
        "notes": [],
    }
    fleet = {
        "fleet": "gpu_fleet",
        "endpoint": "gpu",
        "url": f"http://gpu{ESCAPES}/v1",
        "ok": True,
        "workers": 0,
        "cap": 2,
        "shares": 2,
        "hosts": [],
        "missing": [],
        "problems": [],
        "warnings": [],
    }
    for text in (verify.render(report), fleet_report.render([fleet])):
        assert "\x1b" not in text and "\r" not in text and "\u202e" not in text, text
        assert r"\x1b[2J\x1b]0;owned\x07\x0dline\u202etxt" in text
