"""`hermes-pacer keep-open`, the board keeper, against the real CLI.

The reproduction of tests/corruption (lost_commits.sh) loses the cards of every round on Hermes
0.19 (measured: 3 of 3 rounds, 5 of 5, 10 of 10); with the keeper running beside it, none.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import test_verify
from hermes_host import REPO
from test_verify import _board, _verify

pytestmark = pytest.mark.slow
LOST_COMMITS = REPO / "tests" / "corruption" / "lost_commits.sh"
PACER = REPO / "scripts" / "hermes-pacer"
ROUNDS = 3
verify_paced_host = test_verify.paced  # the fixture `paced`: a home with a managed cron pacer


def _version(hermes_bin: Path) -> str:
    return hermes_bin.parent.parent.name.removeprefix("hermes-")


def _lost_commits(hermes_bin: Path, rounds: int, keeper: str | None) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
    if keeper:
        env["KEEPER"] = keeper
    venv = hermes_bin.parent.parent
    return subprocess.run(
        [str(LOST_COMMITS), str(venv), str(rounds)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60 * rounds,
        check=False,
    )


def test_with_the_keeper_no_commit_is_lost(hermes_bin):
    result = _lost_commits(hermes_bin, ROUNDS, keeper="pacer")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"rounds={ROUNDS} damaged=0" in result.stdout


def test_without_the_keeper_the_reproduction_still_loses_commits(hermes_bin):
    """The keeper's pass above means something only if the same rounds lose cards without it.
    Every round lost its cards in every measurement; one damaged round of three is required, so a
    slow shared machine cannot make this fail."""
    if not _version(hermes_bin).startswith("0.19."):
        pytest.skip("only Hermes 0.19 drops its own lock (0.14 keeps every commit without a keeper)")
    result = _lost_commits(hermes_bin, ROUNDS, keeper=None)
    damaged = int(re.search(r"damaged=(\d+)", result.stdout).group(1))
    assert damaged >= 1, result.stdout + result.stderr


class Keeper:
    def __init__(self, host, *args: str):
        self.log = host.home / f"keeper-{time.monotonic_ns()}.log"
        self.out = open(self.log, "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [str(PACER), "keep-open", *args], env=host.env, stdout=self.out, stderr=subprocess.STDOUT
        )

    def text(self) -> str:
        return self.log.read_text()

    def wait_for(self, pattern: str, timeout: float = 15) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, self.text())
            if found:
                return found
            assert self.process.poll() is None, self.text()
            time.sleep(0.1)
        raise AssertionError(f"no {pattern!r} in the keeper's log:\n{self.text()}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=10)
        finally:
            self.out.close()


@pytest.fixture
def keeper_of(host):
    started = []

    def start(*args: str) -> Keeper:
        started.append(Keeper(host, *args))
        return started[-1]

    yield start
    for keeper in started:
        if keeper.process.poll() is None:
            keeper.process.kill()
        keeper.stop()


def _locks_of(pid: int, path: Path) -> list[str]:
    ino = str(path.stat().st_ino)
    with open("/proc/locks", encoding="ascii") as table:
        rows = [line.split() for line in table]
    return [row for row in rows if row[4] == str(pid) and row[5].split(":")[-1] == ino]


def test_sigterm_ends_the_keeper_and_it_never_writes(host, keeper_of):
    host.root.mkdir(parents=True, exist_ok=True)
    host.kanban("init")
    db = host.root / "kanban.db"
    keeper = keeper_of("--board", "default")
    keeper.wait_for(r"board=default .* opened")
    # It holds the shared lock on the WAL index (and the database) that Hermes 0.19 drops.
    assert _locks_of(keeper.process.pid, db) and _locks_of(keeper.process.pid, Path(f"{db}-shm"))
    # No transaction stays open: Hermes writes, and a checkpoint empties the WAL.
    host.create_cards(2, assignee="nobody-here")
    conn = sqlite3.connect(db)
    busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    conn.close()
    assert busy == 0 and Path(f"{db}-wal").stat().st_size == 0
    started = time.monotonic()
    assert keeper.stop() == 0
    assert time.monotonic() - started < 5
    lines = keeper.text().splitlines()
    assert lines[0].startswith("keep-open: started ") and "boards=default" in lines[0]
    assert lines[-1] == "keep-open: stopped by signal 15"
    assert len(lines) == 3, lines  # started, opened, stopped: no chatter per poll


def test_a_replaced_file_is_reopened_and_a_new_board_opened(host, keeper_of, tmp_path):
    host.root.mkdir(parents=True, exist_ok=True)
    host.kanban("init")
    host.create_cards(1, assignee="nobody-here")
    db = host.root / "kanban.db"
    keeper = keeper_of()  # every board on disk
    first = keeper.wait_for(r"board=default db=\S+ inode=(\d+) opened")
    assert int(first.group(1)) == db.stat().st_ino
    # A restore: a copy swapped in (its sidecars removed first), as docs/reliability.md shows.
    copy = tmp_path / "copy.db"
    source = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)
    target = sqlite3.connect(copy)
    source.backup(target)
    target.close()
    source.close()
    for sidecar in ("-wal", "-shm"):
        Path(f"{db}{sidecar}").unlink(missing_ok=True)
    os.replace(copy, db)
    again = keeper.wait_for(r"board=default db=\S+ inode=(\d+) re-opened")
    assert int(again.group(1)) == db.stat().st_ino != int(first.group(1))
    assert "Refusing" not in host.kanban("list")
    assert _locks_of(keeper.process.pid, db)
    # A board created later is found and held too.
    host.create_board("later")
    keeper.wait_for(r"board=later db=\S+/kanban/boards/later/kanban.db inode=\d+ opened")
    assert keeper.stop() == 0


def test_a_named_board_that_appears_later_is_opened(host, keeper_of):
    host.root.mkdir(parents=True, exist_ok=True)
    keeper = keeper_of("--board", "default", "--board", "ops")
    keeper.wait_for(r"started .* boards=default,ops")
    time.sleep(0.5)
    assert "opened" not in keeper.text()
    host.kanban("init")
    keeper.wait_for(r"board=default .* opened")
    assert "board=ops" not in keeper.text()
    assert keeper.stop() == 0


def test_a_bad_slug_is_refused(host):
    command = [str(PACER), "keep-open", "--board", "../etc"]
    result = subprocess.run(command, env=host.env, capture_output=True, text=True, check=False)
    assert result.returncode == 2 and "not a board slug" in result.stderr


# --- verify -------------------------------------------------------------------------------------


def _keeper_line(paced) -> None:
    cron = paced.etc / "cron.d" / "hermes-pacer"
    lock = paced.home / "locks" / "keeper.lock"
    cron.write_text(cron.read_text() + f"* * * * * root flock -n {lock} {PACER} keep-open --board default\n")


def test_verify_fails_a_paced_board_no_keeper_holds_when_the_role_installed_one(verify_paced_host, keeper_of):
    paced = verify_paced_host
    code, _, text = _verify(paced)
    assert code == 0 and "no board keeper" not in text, text  # no keeper installed: nothing to say
    _keeper_line(paced)
    code, report, text = _verify(paced)
    assert code == 1 and "NOT SAFE" in text
    assert any("no board keeper holds board default" in p for p in _board(report)["problems"]), text
    keeper = keeper_of("--board", "default")
    keeper.wait_for(r"board=default .* opened")
    code, report, text = _verify(paced)
    assert code == 0, text
    assert [p["kind"] for p in _board(report)["paths"]] == ["pacer"]  # the keeper dispatches nothing
    keeper.stop()
    code, _, text = _verify(paced)
    assert code == 1 and "no board keeper holds board default" in text


def test_the_keeper_unit_is_no_pacer_of_a_board_named_keeper(verify_paced_host, keeper_of):
    paced = verify_paced_host
    units = paced.etc / "systemd" / "system"
    units.mkdir(parents=True)
    (units / "hermes-board-keeper.service").write_text(
        f"[Service]\nType=simple\nUser=root\nExecStart={PACER} keep-open --board default\n"
    )
    code, report, text = _verify(paced)
    assert code == 1 and [board["board"] for board in report["boards"]] == ["default"], text
    assert "no board keeper holds board default" in text
    keeper_of("--board", "default").wait_for(r"board=default .* opened")
    code, report, text = _verify(paced)
    assert code == 0 and [board["board"] for board in report["boards"]] == ["default"], text
