"""A board Hermes refuses is never paced in silence: reason=board_corrupt, rc 1, nothing
dispatched, and `verify` says NOT SAFE naming the board and Hermes' preserved copy. The damage is
the one seen in the field: an index of `tasks` that lost entries (a stale page of it), made on a
board written by the real CLI."""

from __future__ import annotations

import sqlite3
import time

import pytest
import test_verify
from test_verify import _board, _verify

pytestmark = pytest.mark.slow
paced = test_verify.paced  # the test home with a managed cron pacer


def _fields(line: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in line.split() if "=" in part)


def _checkpoint(db) -> None:
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def corrupt_board(host, cards: int = 5) -> list[str]:
    """Cards made by the real CLI, then the session_id index's page (0.14 has none: another
    index of `tasks`) put back to what it was before them: integrity_check reports rows missing
    from the index, quick_check does not."""
    db = host.root / "kanban.db"
    host.create_cards(1)
    _checkpoint(db)
    before = db.read_bytes()
    made = host.create_cards(cards)
    _checkpoint(db)
    conn = sqlite3.connect(db)
    size = conn.execute("PRAGMA page_size").fetchone()[0]
    (root,) = conn.execute(
        "SELECT rootpage FROM sqlite_master WHERE type = 'index' AND tbl_name = 'tasks' "
        "AND name LIKE 'idx_%' ORDER BY name = 'idx_tasks_session_id' DESC, name"
    ).fetchone()
    conn.close()
    with open(db, "r+b") as handle:
        handle.seek((root - 1) * size)
        handle.write(before[(root - 1) * size : root * size])
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    assert conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] != "ok"
    conn.close()
    return made


def test_the_periodic_integrity_check_fails_the_pass_closed(paced_host):
    cards = corrupt_board(paced_host)
    result = paced_host.capped(BOARD="default", MAX_PARALLEL="2")
    record = _fields(result.stdout)
    assert result.returncode == 1, result.stdout + result.stderr
    assert record["reason"] == "board_corrupt" and record["rc"] == "1"
    assert "missing from index idx_tasks_" in result.stdout
    assert record["spawned"] == "-" and not paced_host.workers()
    # It stays failed on every pass, not once per check interval.
    again = paced_host.capped(BOARD="default", MAX_PARALLEL="2")
    assert again.returncode == 1 and _fields(again.stdout)["reason"] == "board_corrupt"
    assert len(cards) == 5


def test_hermes_refusing_the_board_fails_the_pass_closed(paced_host):
    if "0.14" in str(paced_host.hermes_bin):
        pytest.skip("Hermes 0.14 has no integrity guard: it does not refuse a corrupt board")
    corrupt_board(paced_host)
    result = paced_host.capped(BOARD="default", MAX_PARALLEL="2", PACER_INTEGRITY_CHECK_SECONDS="0")
    record = _fields(result.stdout)
    assert result.returncode == 1, result.stdout + result.stderr
    assert record["reason"] == "board_corrupt"
    assert "Refusing to open corrupt kanban DB" in result.stdout
    assert ".corrupt." in result.stdout and not paced_host.workers()


def test_a_sound_board_is_checked_once_per_interval(paced_host):
    paced_host.create_cards(2, assignee="nobody-here")
    stamp = paced_host.home / "locks" / "board-default.checked"
    first = paced_host.capped(BOARD="default", MAX_PARALLEL="2")
    assert first.returncode == 0 and stamp.is_file(), first.stdout
    checked = stamp.stat().st_mtime
    paced_host.capped(BOARD="default", MAX_PARALLEL="2")
    assert stamp.stat().st_mtime == checked


def test_verify_names_the_corrupt_board_and_hermes_preserved_copy(paced):
    corrupt_board(paced)
    if "0.14" not in str(paced.hermes_bin):  # a refusal by Hermes preserves a copy
        paced.capped(BOARD="default", MAX_PARALLEL="2", PACER_INTEGRITY_CHECK_SECONDS="0")
    code, report, text = _verify(paced)
    assert code == 1 and "verdict: NOT SAFE" in text
    problems = " ".join(_board(report)["problems"])
    assert f"board {paced.root / 'kanban.db'} is corrupt" in problems
    if "0.14" not in str(paced.hermes_bin):
        assert "Hermes' preserved copy: " + str(paced.root / "kanban.db.corrupt.") in problems


def test_verify_reports_cards_running_without_a_worker(paced):
    cards = paced.create_cards(2, assignee="nobody-here")
    conn = sqlite3.connect(paced.root / "kanban.db")
    with conn:
        conn.execute(
            "UPDATE tasks SET status = 'running', started_at = ? WHERE id = ?",
            (int(time.time()) - 3600, cards[0]),
        )
    conn.close()
    code, report, text = _verify(paced)
    assert code == 1, text
    problems = " ".join(_board(report)["problems"])
    assert "1 card(s) running for over 900s with no live worker on board default" in problems
    assert cards[0] in problems and cards[1] not in problems
