"""`hermes-pacer backup`: a copy made while Hermes writes restores a board the real Hermes opens,
with the same cards."""

from __future__ import annotations

import json
import os
import subprocess
import threading

import pytest
from hermes_host import REPO
from hermes_pacer import board_backup

pytestmark = pytest.mark.slow


def _backup(host, dest, *extra: str) -> subprocess.CompletedProcess:
    env = host.pacer_env()
    code = "import sys; from hermes_pacer.__main__ import main; sys.exit(main(sys.argv[1:]))"
    env["PYTHONPATH"] = str(REPO / "pacer")
    return subprocess.run(
        ["python3", "-c", code, "backup", "--dir", str(dest), *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_backup_taken_while_hermes_writes_restores_the_board(host, tmp_path):
    host.root.mkdir(parents=True, exist_ok=True)
    host.kanban("init")
    host.create_cards(3, assignee="nobody-here")
    db = host.root / "kanban.db"
    os.chmod(db, 0o600)
    writer = threading.Thread(target=host.create_cards, args=(4, "nobody-here"))
    writer.start()
    result = _backup(host, tmp_path / "copies")
    writer.join()
    assert result.returncode == 0, result.stdout + result.stderr
    copies = sorted((tmp_path / "copies" / "default").glob("kanban-*.db"))
    assert len(copies) == 1 and (copies[0].stat().st_mode & 0o777) == 0o600
    # Restore: (pacer stopped) swap the file, check it, start again.
    cards_now = host.statuses()
    for sidecar in ("-wal", "-shm"):
        (host.root / f"kanban.db{sidecar}").unlink(missing_ok=True)
    os.replace(copies[0], db)
    restored = json.loads(host.kanban("list", "--json"))
    assert 3 <= len(restored) <= len(cards_now)
    assert {card["id"] for card in restored} <= set(cards_now)
    assert "Refusing" not in host.kanban("list")


def test_old_copies_go_the_newest_stays(host, tmp_path):
    host.root.mkdir(parents=True, exist_ok=True)
    host.kanban("init")
    dest = tmp_path / "copies"
    assert _backup(host, dest).returncode == 0
    (fresh,) = (dest / "default").glob("kanban-*.db")
    stale = dest / "default" / "kanban-19700101T000000Z.db"
    stale.write_bytes(fresh.read_bytes())
    os.utime(stale, (1, 1))
    assert _backup(host, dest, "--keep-days", "7").returncode == 0
    assert not stale.exists() and fresh.exists()
    # A lone copy older than the retention (the timer stopped long ago) is never the last to go.
    only = tmp_path / "only"
    only.mkdir()
    lone = only / "kanban-19700101T000000Z.db"
    lone.write_bytes(fresh.read_bytes())
    os.utime(lone, (1, 1))
    assert board_backup.prune(only, 7 * 86400, 10**9) == [] and lone.exists()


def test_a_corrupt_board_is_not_copied(host, tmp_path):
    from test_board_corrupt import corrupt_board

    host.root.mkdir(parents=True, exist_ok=True)
    host.kanban("init")
    corrupt_board(host)
    result = _backup(host, tmp_path / "copies")
    assert result.returncode == 1 and "is corrupt" in result.stdout
    assert not list((tmp_path / "copies").glob("*/kanban-*.db"))
