"""The one rule for crontab lines (cronrules): what dispatches, which board, which Hermes home.

verify and adopt-cron both apply it, so these lines are judged the same way by both.
"""

from __future__ import annotations

import pwd

import pytest
from hermes_pacer import cronrules

pytestmark = pytest.mark.fast

ROOT_HOME = pwd.getpwnam("root").pw_dir


def _one(crontab: str, owner: str | None = "root") -> cronrules.Dispatch:
    found = [d for _, dispatches in cronrules.crontab_dispatches(crontab, owner) for d in dispatches]
    assert len(found) == 1, found
    return found[0]


def _none(crontab: str, owner: str | None = "root") -> None:
    assert cronrules.crontab_dispatches(crontab, owner) == []


# --- what dispatches ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        "/opt/hermes/scripts/hermes-kanban-dispatch-capped.sh",
        "MAX_PARALLEL=2 BOARD=default /opt/hermes/scripts/hermes-kanban-dispatch-subminute.sh >> /l 2>&1",
        "cd /opt/hermes/scripts && ./hermes-kanban-dispatch-capped.sh",
        "flock -n /tmp/pacer.lock /opt/hermes/scripts/hermes-kanban-dispatch-capped.sh",
        "flock -w 5 /tmp/l -c '/opt/hermes/scripts/hermes-kanban-dispatch-capped.sh'",
        "sh -c 'timeout 50 nice -n 5 /usr/bin/env MAX_PARALLEL=2 hermes-kanban-dispatch-capped.sh'",
        '/bin/bash -lc "cd /tmp; hermes kanban dispatch --max 2"',
        "hermes kanban dispatch",
        "/home/hermes/.local/bin/hermes kanban dispatch --max 4 --json",
        "hermes -p coder kanban dispatch",
        "hermes --profile coder kanban --board ops dispatch",
        "hermes --profile=coder kanban --board=ops dispatch",
        "hermes kanban daemon --force",
        "/opt/venv/bin/python3 -m hermes_cli.main kanban dispatch",
        "timeout -s KILL 50 hermes kanban dispatch",
        "/opt/hermes/scripts/hermes-pacer subminute",
        "sudo -u root hermes kanban dispatch",
        "true; hermes kanban dispatch || echo failed | logger",
    ],
)
def test_these_commands_dispatch(command):
    _one(f"* * * * * {command}\n")


@pytest.mark.parametrize(
    "command",
    [
        "tail -n 50 /var/log/hermes/kanban-dispatch-default.log",
        "grep hermes-kanban-dispatch- /etc/crontab",
        "cat /opt/hermes/scripts/hermes-kanban-dispatch-capped.sh | mail root",
        "hermes kanban list --json",
        "hermes kanban stats --json > /tmp/stats",
        "hermes chat -q 'run hermes kanban dispatch'",
        "/opt/hermes/scripts/hermes-pacer verify",
        "logrotate /etc/logrotate.d/hermes-pacer",
        "echo hermes kanban dispatch",
    ],
)
def test_these_commands_do_not(command):
    _none(f"* * * * * {command}\n")


def test_comments_and_env_lines_are_not_commands():
    _none("# * * * * hermes kanban dispatch\nHERMES_KANBAN_BOARD=ops\n\n")


# --- the rows of issue #10 -----------------------------------------------------------------------


def test_profile_form_is_seen_and_names_its_profile():
    found = _one("* * * * * hermes -p coder kanban dispatch\n")
    assert (found.board, found.profile) == ("default", "coder")
    # Boards are shared by profiles: the root stays the root home's.
    assert found.home == f"{ROOT_HOME}/.hermes"


def test_profile_and_board_form_is_seen():
    found = _one("* * * * * hermes --profile coder kanban --board ops dispatch\n")
    assert (found.board, found.profile, found.home) == ("ops", "coder", f"{ROOT_HOME}/.hermes")


def test_board_on_its_own_env_line_applies_to_the_lines_below():
    crontab = (
        "* * * * * /opt/hermes/scripts/hermes-kanban-dispatch-capped.sh\n"
        "BOARD=ops\n"
        "* * * * * /opt/hermes/scripts/hermes-kanban-dispatch-capped.sh\n"
    )
    boards = [d.board for _, found in cronrules.crontab_dispatches(crontab, "root") for d in found]
    assert boards == ["default", "ops"]


def test_hermes_kanban_board_names_the_board():
    assert _one("* * * * * HERMES_KANBAN_BOARD=ops hermes kanban dispatch\n").board == "ops"
    assert _one("HERMES_KANBAN_BOARD=ops\n* * * * * hermes kanban dispatch\n").board == "ops"
    assert _one("* * * * * HERMES_KANBAN_BOARD=ops /s/hermes-kanban-dispatch-capped.sh\n").board == "ops"


def test_board_slugs_are_normalised_as_hermes_does():
    assert _one("* * * * * BOARD=OPS /s/hermes-kanban-dispatch-capped.sh\n").board == "ops"
    assert _one("* * * * * hermes kanban --board ' Ops ' dispatch\n").board == "ops"


def test_a_slug_hermes_refuses_is_reported_as_such():
    found = _one("* * * * * hermes kanban --board ../etc dispatch\n")
    assert found.refused and "refused by Hermes" in found.refused


def test_the_board_flag_beats_the_environment():
    found = _one("* * * * * HERMES_KANBAN_BOARD=ops hermes kanban --board dev dispatch\n")
    assert found.board == "dev"


def test_board_is_read_by_the_scripts_not_by_hermes():
    # `hermes kanban dispatch` never reads BOARD: that line dispatches the current board.
    assert _one("BOARD=ops\n* * * * * hermes kanban dispatch\n").board == "default"


def test_home_comes_from_the_line_then_the_env_lines_then_the_owner():
    assert _one("* * * * * HOME=/home/alice hermes kanban dispatch\n").home == "/home/alice/.hermes"
    assert _one("HOME=/home/alice\n* * * * * hermes kanban dispatch\n").home == "/home/alice/.hermes"
    assert _one("* * * * * HERMES_HOME=/srv/h hermes kanban dispatch\n").home == "/srv/h"
    assert _one("* * * * * HERMES_HOME=/srv/h/profiles/coder hermes kanban dispatch\n").home == "/srv/h"
    assert _one("* * * * * HERMES_KANBAN_HOME=/srv/k hermes kanban dispatch\n").home == "/srv/k"
    assert _one("* * * * * hermes kanban dispatch\n", "root").home == f"{ROOT_HOME}/.hermes"


def test_a_system_crontab_runs_as_its_user_field():
    nobody = pwd.getpwnam("nobody").pw_dir
    found = _one("*/5 * * * * nobody hermes kanban dispatch\n", None)
    assert found.home == f"{nobody}/.hermes"
    assert _one("@reboot root hermes kanban daemon\n", None).command == "hermes kanban daemon"


def test_an_unknown_user_has_an_unknown_home():
    assert _one("* * * * * hermes kanban dispatch\n", "no-such-user-h3").home == ""


def test_sudo_to_another_user_runs_in_that_users_home():
    nobody = pwd.getpwnam("nobody").pw_dir
    found = _one("* * * * * HOME=/home/alice sudo -u nobody hermes kanban dispatch\n")
    assert found.home == f"{nobody}/.hermes"


def test_a_percent_ends_the_command():
    _none("* * * * * cat %hermes kanban dispatch\n")
    _one("* * * * * hermes kanban dispatch%input\n")


def test_a_bom_and_crlf_line_ends_are_read():
    found = _one("\ufeffBOARD=ops\r\n* * * * * /s/hermes-kanban-dispatch-capped.sh\r\n")
    assert found.board == "ops"


# --- the role's own form: the board is in the settings file ----------------------------------------


def test_a_script_given_a_settings_file_dispatches_the_files_board(tmp_path):
    settings = tmp_path / "ops.env"
    settings.write_text("BOARD=ops\nMAX_PARALLEL=1\n")
    script = "/opt/hermes/scripts/hermes-kanban-dispatch-subminute.sh"
    assert _one(f"* * * * * {script} --settings {settings} >> /l 2>&1").board == "ops"
    assert _one(f"* * * * * {script} --settings={settings}").board == "ops"
    # The environment overrides the file, as in the pass.
    assert _one(f"* * * * * BOARD=web {script} --settings {settings}").board == "web"
    # A file that cannot be read: its name says the board the role wrote it for.
    assert _one(f"* * * * * {script} --settings {tmp_path}/gone.env").board == "gone"
