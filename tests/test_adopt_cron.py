"""`hermes-pacer adopt-cron` against a private /etc and spool: it comments out only the lines that
dispatch a managed board of the managed Hermes home, backs each changed file up root-only, and
leaves everything else as it was (other homes, lines that only mention a log, line ends)."""

from __future__ import annotations

import json
import os
import stat
import subprocess

import pytest
from hermes_host import REPO

pytestmark = pytest.mark.slow

SHIM = REPO / "scripts" / "hermes-pacer"
NOBODY = 65534
SCRIPT = "/opt/hermes/scripts/hermes-kanban-dispatch-subminute.sh"


@pytest.fixture
def host(tmp_path):
    """A private /etc, spool and backup dir, and the managed Hermes home."""
    etc = tmp_path / "etc"
    (etc / "cron.d").mkdir(parents=True)
    spool = tmp_path / "spool"
    spool.mkdir()
    home = tmp_path / "home" / "hermes"
    return {"etc": etc, "spool": spool, "home": home, "root": home / ".hermes", "backups": tmp_path / "bk"}


def _adopt(host, *boards: str, check: bool = False) -> dict:
    args = [str(SHIM), "adopt-cron", "--json", "--home", str(host["root"])]
    args += ["--backup-dir", str(host["backups"])]
    args += ["--etc", str(host["etc"]), "--spool", str(host["spool"])]
    args += ["--managed-file", str(host["etc"] / "cron.d" / "hermes-pacer")]
    args += [f"--board={b}" for b in boards] + (["--check"] if check else [])
    result = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _user_crontab(host, user: str, text: str, owner: int = 0):
    path = host["spool"] / user
    path.write_bytes(text.encode())
    os.chown(path, owner, owner)
    path.chmod(0o600)
    return path


def _commented(text: str) -> list[str]:
    marked = [line for line in text.splitlines() if line.startswith("# removed by hermes-pacer")]
    return [line.split(": ", 1)[1] for line in marked]


def test_board_on_its_own_env_line_is_attributed_to_that_board(host):
    crontab = _user_crontab(
        host, "hermes", f"HOME={host['home']}\nBOARD=ops\n* * * * * MAX_PARALLEL=2 {SCRIPT}\n"
    )
    assert _adopt(host, "default")["adopted"] == []
    assert "removed" not in crontab.read_text()
    report = _adopt(host, "ops")
    assert [(r["board"], r["home"]) for r in report["adopted"]] == [("ops", str(host["root"]))]
    assert _commented(crontab.read_text()) == [f"* * * * * MAX_PARALLEL=2 {SCRIPT}"]
    assert "BOARD=ops\n" in crontab.read_text()  # the env line stays: it is no command


def test_hermes_kanban_board_and_upper_case_board_are_the_board_hermes_uses(host):
    crontab = _user_crontab(
        host,
        "hermes",
        f"HOME={host['home']}\n"
        "* * * * * HERMES_KANBAN_BOARD=ops hermes kanban dispatch\n"
        f"* * * * * BOARD=OPS {SCRIPT}\n"
        "* * * * * hermes kanban dispatch\n",
    )
    report = _adopt(host, "ops")
    assert [r["board"] for r in report["adopted"]] == ["ops", "ops"]
    assert _commented(crontab.read_text()) == [
        "* * * * * HERMES_KANBAN_BOARD=ops hermes kanban dispatch",
        f"* * * * * BOARD=OPS {SCRIPT}",
    ]


def test_profile_and_board_forms_are_adopted(host):
    crontab = _user_crontab(
        host,
        "hermes",
        f"HOME={host['home']}\n"
        "* * * * * hermes -p coder kanban dispatch\n"
        "* * * * * /usr/local/bin/hermes --profile coder kanban --board ops dispatch\n",
    )
    report = _adopt(host, "default", "ops")
    assert sorted(r["board"] for r in report["adopted"]) == ["default", "ops"]
    assert len(_commented(crontab.read_text())) == 2


def test_another_users_home_is_left_alone(host):
    theirs = _user_crontab(host, "alice", "* * * * * HOME=/home/alice hermes kanban dispatch\n", NOBODY)
    system = host["etc"] / "cron.d" / "alice"
    system.write_text(f"* * * * * root HOME=/home/alice {SCRIPT}\n")
    report = _adopt(host, "default")
    assert report["adopted"] == [] and not report["changed"]
    assert [r["why"] for r in report["left"]] == ["another Hermes home", "another Hermes home"]
    assert "removed" not in theirs.read_text() + system.read_text()


def test_a_line_that_only_mentions_a_log_or_a_script_is_left(host):
    text = (
        f"HOME={host['home']}\n"
        "*/5 * * * * tail -n 50 /var/log/hermes/kanban-dispatch-default.log | mail -s pacer root\n"
        "0 * * * * grep -c hermes-kanban-dispatch- /var/log/syslog > /tmp/count\n"
    )
    crontab = _user_crontab(host, "hermes", text)
    report = _adopt(host, "default")
    assert report == {"changed": False, "adopted": [], "left": [], "refused": []}
    assert crontab.read_text() == text


def test_backups_are_root_only_and_the_rest_of_the_file_is_kept(host):
    original = (
        f"# my crontab\r\nHOME={host['home']}\r\n"
        "* * * * * hermes kanban dispatch >> /tmp/d.log 2>&1\r\n"
        "0 3 * * * /usr/bin/backup\r\n"
    )
    crontab = _user_crontab(host, "hermes", original)
    report = _adopt(host, "default")
    assert report["changed"] and len(report["adopted"]) == 1
    backups = list(host["backups"].iterdir())
    assert len(backups) == 1
    assert backups[0].read_bytes() == original.encode()
    assert stat.S_IMODE(backups[0].stat().st_mode) == 0o600 and backups[0].stat().st_uid == 0
    assert stat.S_IMODE(host["backups"].stat().st_mode) == 0o700
    after = crontab.read_bytes().decode()
    assert after.count("\r\n") == 4  # CRLF kept
    assert f"# removed by hermes-pacer (backup {backups[0]}): * * * * * hermes kanban dispatch" in after
    assert "\r\n0 3 * * * /usr/bin/backup\r\n" in after
    assert _adopt(host, "default") == {"changed": False, "adopted": [], "left": [], "refused": []}


def test_a_system_crontab_keeps_its_owner_and_mode(host):
    path = host["etc"] / "crontab"
    path.write_text(f"HOME={host['home']}\n* * * * * root hermes kanban dispatch\n")
    path.chmod(0o640)
    report = _adopt(host, "default")
    assert [r["user"] for r in report["adopted"]] == ["root"]
    assert _commented(path.read_text()) == ["* * * * * root hermes kanban dispatch"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_the_managed_file_is_never_touched(host):
    managed = host["etc"] / "cron.d" / "hermes-pacer"
    text = f"* * * * * root HOME={host['home']} BOARD=default {SCRIPT}\n"
    managed.write_text(text)
    assert _adopt(host, "default")["adopted"] == []
    assert managed.read_text() == text


def test_check_reports_and_changes_nothing(host):
    text = f"HOME={host['home']}\n* * * * * hermes kanban dispatch\n"
    crontab = _user_crontab(host, "hermes", text)
    report = _adopt(host, "default", check=True)
    assert report["changed"] and len(report["adopted"]) == 1
    assert crontab.read_text() == text and not host["backups"].exists()


def test_a_crontab_that_is_a_link_or_a_fifo_is_not_read(host, tmp_path):
    os.chown(host["spool"], NOBODY, NOBODY)  # a spool another user could write
    secret = tmp_path / "secret"
    secret.write_text(f"HOME={host['home']}\n* * * * * hermes kanban dispatch\n")
    (host["spool"] / "hermes").symlink_to(secret)
    os.lchown(host["spool"] / "hermes", NOBODY, NOBODY)
    os.mkfifo(host["spool"] / "fifo")
    report = _adopt(host, "default")
    assert report["adopted"] == [] and len(report["refused"]) == 2
    why = " ".join(report["refused"])
    assert "symbolic link" in why and "not a regular file" in why
    assert "removed" not in secret.read_text()
