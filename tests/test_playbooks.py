"""The playbooks and the tasks that run them, against this machine with the real ansible-playbook:
every tag of site.yml alone, verify.yml with the inventory's scripts directory, `./tasks.sh verify`
with a host that cannot be reached, `./tasks.sh provision` options, and cron adoption's `changed`."""

from __future__ import annotations

import json
import pwd
import re
import subprocess
from pathlib import Path

import pytest
from ansible_run import (
    LOCAL_HOST,
    REPO,
    UNREACHABLE_HOST,
    environment,
    invoke,
    stub_verify_scripts,
    write_inventory,
)

pytestmark = pytest.mark.slow

# Every tag the roles define (`always` aside). A new tag fails the first test until it is listed.
TAGS = [
    "adopt",
    "backups",
    "boards",
    "config",
    "configure",
    "flows",
    "hermes_agent",
    "hermes_pacer",
    "install",
    "keeper",
    "logs",
    "metrics",
    "preflight",
    "scheduler",
    "scripts",
    "settings",
    "smoke",
]


def _run(*args, timeout: int = 300, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(a) for a in args],
        cwd=REPO,
        env=environment(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _recap(output: str, host: str = "localhost") -> dict[str, int]:
    line = re.search(rf"^{re.escape(host)}\s+:(.*)$", output.split("PLAY RECAP", 1)[1], re.M)[1]
    return {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", line)}


def test_every_tag_is_listed():
    listing = _run("ansible-playbook", "site.yml", "--list-tags")
    assert listing.returncode == 0, listing.stderr
    tags = re.search(r"TASK TAGS: \[(.*)\]", listing.stdout)[1].split(", ")
    assert sorted(set(tags) - {"always"}) == TAGS


@pytest.mark.parametrize("tag", TAGS)
def test_each_tag_runs_alone(tag):
    """A tag alone, in check mode on this machine: the facts its tasks read (the preflights' and
    discovery's) are there, nothing is undefined, nothing fails."""
    play = _run("ansible-playbook", "site.yml", "--tags", tag, "--check")
    assert play.returncode == 0, play.stdout[-3000:] + play.stderr[-2000:]
    assert "is undefined" not in play.stdout
    assert _recap(play.stdout)["failed"] == 0


def test_verify_reads_the_scripts_dir_of_the_inventory(tmp_path):
    scripts = stub_verify_scripts(tmp_path / "elsewhere", {"ok": True, "from": "the stub"})
    inventory = write_inventory(
        tmp_path / "hosts.yml",
        {"localhost": LOCAL_HOST},
        group_vars={"hermes_pacer_scripts_dir": str(scripts)},
    )
    reports = tmp_path / "reports"
    reports.mkdir()
    play = _run(
        "ansible-playbook",
        "playbooks/verify.yml",
        "-i",
        inventory,
        "-e",
        f"hermes_pacer_verify_dir={reports}",
    )
    assert play.returncode == 0, play.stdout[-3000:]
    assert json.loads((reports / "localhost.json").read_text()) == {"ok": True, "from": "the stub"}


@pytest.mark.parametrize("report_only", [False, True], ids=["fails", "report-only"])
def test_verify_fails_the_play_where_a_host_is_not_safe(tmp_path, report_only):
    """A host whose verify exits 1 fails the play with its report (unless the play only reports),
    and its report is kept on the controller either way."""
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    stub = scripts / "hermes-pacer-verify.sh"
    stub.write_text(
        "#!/bin/sh\n"
        'if [ "${1:-}" = --json ]; then echo \'{"ok": false}\'\n'
        "else echo 'verdict: NOT SAFE (the stub)'; fi\n"
        "exit 1\n"
    )
    stub.chmod(0o755)
    inventory = write_inventory(
        tmp_path / "hosts.yml",
        {"localhost": {**LOCAL_HOST, "hermes_pacer_scripts_dir": str(scripts)}},
    )
    reports = tmp_path / "reports"
    reports.mkdir()
    extra = ["-e", f"hermes_pacer_verify_dir={reports}"]
    if report_only:
        extra += ["-e", "hermes_pacer_verify_report_only=true"]
    play = _run("ansible-playbook", "playbooks/verify.yml", "-i", inventory, *extra)
    assert json.loads((reports / "localhost.json").read_text()) == {"ok": False}
    if report_only:
        assert play.returncode == 0, play.stdout[-3000:]
    else:
        assert play.returncode != 0
        assert "verdict: NOT SAFE (the stub)" in play.stdout, play.stdout[-3000:]


def test_tasks_verify_reports_every_host_of_the_inventory(tmp_path):
    """One host verified, one whose scripts are not there, one that cannot be reached: three reports,
    and the task fails."""
    scripts = stub_verify_scripts(tmp_path / "scripts", {"ok": True, "from": "the stub"})
    inventory = write_inventory(
        tmp_path / "hosts.yml",
        {
            "localhost": {**LOCAL_HOST, "hermes_pacer_scripts_dir": str(scripts)},
            "bare": {**LOCAL_HOST, "hermes_pacer_scripts_dir": str(tmp_path / "none")},
            "down": UNREACHABLE_HOST,
        },
    )
    run = invoke("verify", "--inventory", inventory, "--json")
    assert run.returncode == 1, run.stderr
    printed = json.loads(run.stdout)
    assert printed["fleets"] == []  # no host reports a fleet
    reports = printed["hosts"]
    assert sorted(reports) == ["bare", "down", "localhost"]
    assert reports["localhost"] == {"ok": True, "from": "the stub"}
    assert reports["bare"] == {"ok": False, "error": "hermes-pacer is not installed here: run site.yml"}
    assert reports["down"]["ok"] is False
    assert reports["down"]["error"].startswith(
        "unreachable or failed, no report: fatal: [down]: UNREACHABLE!"
    )

    limited = invoke("verify", "--inventory", inventory, "--limit", "localhost", "--json")
    assert limited.returncode == 0, limited.stderr
    assert sorted(json.loads(limited.stdout)["hosts"]) == ["localhost"]


def test_tasks_provision_takes_an_inventory_tags_and_check(tmp_path):
    inventory = write_inventory(tmp_path / "hosts.yml", {"this-machine": LOCAL_HOST})
    run = invoke("provision", "--inventory", inventory, "--tags", "preflight", "--check")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert _recap(run.stdout, "this-machine")["failed"] == 0
    # site.yml names the roles by FQCN (playbooks/site.yml): the task line carries the collection.
    assert "TASK [hermes_pacer.pacer.hermes_pacer : Check the scheduler]" in run.stdout
    assert "Install the dispatch scripts" not in run.stdout  # --tags preflight: no other task


# --- cron adoption through the role's task file --------------------------------------------------


@pytest.fixture
def adoption(tmp_path):
    """The role's adopt.yml, run by a play on this machine against a private /etc and spool: its
    hermes-pacer is the checkout's, told where those are."""
    etc, spool = tmp_path / "etc", tmp_path / "spool"
    (etc / "cron.d").mkdir(parents=True)
    spool.mkdir()
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    shim = scripts / "hermes-pacer"
    shim.write_text(f'#!/bin/sh\nexec {REPO / "scripts" / "hermes-pacer"} "$@" --etc {etc} --spool {spool}\n')
    shim.chmod(0o755)
    home = tmp_path / "home"
    crontab = etc / "cron.d" / "hand-made"
    crontab.write_text(f"HOME={home}\n* * * * * root hermes kanban dispatch\n")
    playbook = tmp_path / "adopt.yml"
    playbook.write_text(
        json.dumps(
            [
                {
                    "name": "Adopt",
                    "hosts": "localhost",
                    "gather_facts": False,
                    "vars": {
                        "ansible_python_interpreter": "/usr/bin/python3",
                        "hermes_pacer_scripts_dir": str(scripts),
                        "hermes_pacer_user_home": str(home),
                        "hermes_pacer_backup_dir": str(tmp_path / "backups"),
                    },
                    "tasks": [
                        {
                            "name": "Adopt",
                            "ansible.builtin.include_role": {"name": "hermes_pacer", "tasks_from": "adopt"},
                        }
                    ],
                }
            ]
        )
    )

    def play(adopt: bool) -> dict[str, int]:
        run = _run(
            "ansible-playbook",
            "-i",
            "localhost,",
            "-c",
            "local",
            playbook,
            "-e",
            json.dumps({"hermes_pacer_adopt_cron": adopt}),
            ANSIBLE_ROLES_PATH=str(REPO / "roles"),
        )
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
        return _recap(run.stdout)

    play.crontab = crontab
    return play


def test_adoption_is_changed_once_then_never(adoption):
    assert adoption(True)["changed"] == 1
    assert "# removed by hermes-pacer" in adoption.crontab.read_text()
    assert adoption(True)["changed"] == 0


def test_adoption_turned_off_only_reports(adoption):
    before = adoption.crontab.read_text()
    assert adoption(False)["changed"] == 0
    assert adoption(False)["changed"] == 0
    assert adoption.crontab.read_text() == before


# --- uninstall where the Hermes user is gone ---------------------------------------------------

NO_HERMES_USER = "There is no user hermes on this host (hermes_pacer_user)"
# A Hermes user no host has: the real uninstall below runs on a provisioned machine too.
GONE_USER = "hermes-pacer-gone"


def _hermes_user_exists() -> bool:
    try:
        pwd.getpwnam("hermes")
    except KeyError:
        return False
    return True


def test_uninstall_checks_without_the_hermes_user():
    """playbooks/uninstall.yml in check mode on this machine: no Hermes user is no failure."""
    play = _run("ansible-playbook", "playbooks/uninstall.yml", "--check")
    assert play.returncode == 0, play.stdout[-3000:] + play.stderr[-2000:]
    assert _recap(play.stdout)["failed"] == 0
    # An uninstall needs no hermes: the search for it is skipped.
    assert re.search(
        r"TASK \[(?:hermes_pacer\.pacer\.)?hermes_pacer : Look for hermes on the Hermes user's PATH\] \**"
        r"\nskipping",
        play.stdout,
    )
    if not _hermes_user_exists():
        assert NO_HERMES_USER in play.stdout


def _installed_layout(root: Path) -> dict[str, Path]:
    """What a converge leaves, under a private root: the role's paths, each a variable."""
    where = {
        "hermes_pacer_systemd_dir": root / "systemd",
        "hermes_pacer_cron_file": root / "cron.d" / "hermes-pacer",
        "hermes_pacer_board_backup_cron_file": root / "cron.d" / "hermes-board-backup",
        "hermes_pacer_logrotate_file": root / "logrotate.d" / "hermes-pacer",
        "hermes_pacer_tmpfiles_file": root / "tmpfiles.d" / "hermes-pacer.conf",
        "hermes_pacer_settings_dir": root / "hermes-pacer",
        "hermes_pacer_flows_dir": root / "hermes-pacer" / "flows",
        "hermes_pacer_scripts_dir": root / "scripts",
        "hermes_pacer_lock_dir": root / "lock" / "hermes-pacer",
        "hermes_pacer_log_dir": root / "log",
        "hermes_pacer_backup_dir": root / "backups",
        "hermes_pacer_board_backup_dir": root / "board-copies",
        "hermes_pacer_command_link": root / "bin" / "hermes-pacer",
    }
    units = where["hermes_pacer_systemd_dir"]
    scripts = where["hermes_pacer_scripts_dir"]
    for folder in (
        units,
        where["hermes_pacer_flows_dir"],
        scripts / "hermes_pacer",
        where["hermes_pacer_lock_dir"],
    ):
        folder.mkdir(parents=True)
    for board in ("default", "ops"):
        (units / f"hermes-pacer-{board}.service").write_text("[Service]\nType=oneshot\n")
        (units / f"hermes-pacer-{board}.timer").write_text("[Timer]\nOnUnitActiveSec=5000ms\n")
        (where["hermes_pacer_settings_dir"] / f"{board}.env").write_text(f"BOARD={board}\n")
    for name in ("hermes-board-keeper.service", "hermes-board-backup.service", "hermes-board-backup.timer"):
        (units / name).write_text("[Service]\n")
    # The keeper as hermes-pacer before 0.2.0 named it.
    (units / "hermes-pacer-keeper.service").write_text(
        f"[Service]\nExecStart={scripts}/hermes-pacer keep-open\n"
    )
    for key in (
        "hermes_pacer_cron_file",
        "hermes_pacer_board_backup_cron_file",
        "hermes_pacer_logrotate_file",
        "hermes_pacer_tmpfiles_file",
    ):
        where[key].parent.mkdir(parents=True, exist_ok=True)
        where[key].write_text("# hermes-pacer\n")
    for name in (
        "hermes-kanban-dispatch-capped.sh",
        "hermes-kanban-dispatch-subminute.sh",
        "hermes-pacer-verify.sh",
        "hermes-kanban-flow.sh",
        "hermes-pacer",
        "hermes_pacer/__init__.py",
    ):
        (scripts / name).write_text("#\n")
    (where["hermes_pacer_flows_dir"] / "nightly.yml").write_text("{}\n")
    where["hermes_pacer_command_link"].parent.mkdir()
    where["hermes_pacer_command_link"].symlink_to(scripts / "hermes-pacer")
    return where


@pytest.mark.skipif(
    Path("/run/systemd/system").is_dir(),
    reason="systemd runs here: the uninstall would stop this machine's units of the pacer's names",
)
def test_uninstall_without_the_hermes_user_removes_what_is_there(tmp_path):
    """A real uninstall against a private root on this machine, for a Hermes user it does not have
    (and no systemd, so no unit is stopped): everything the role installs goes, other files stay,
    and a second run changes nothing."""
    where = _installed_layout(tmp_path / "root")
    units = where["hermes_pacer_systemd_dir"]
    (units / "other.service").write_text("[Service]\n")  # not the role's
    other_command = where["hermes_pacer_command_link"].parent / "hermes-pacer-other"
    other_command.symlink_to(where["hermes_pacer_scripts_dir"] / "hermes-pacer")  # not the role's
    extra = json.dumps({"hermes_pacer_user": GONE_USER} | {key: str(path) for key, path in where.items()})

    checked = _run("ansible-playbook", "playbooks/uninstall.yml", "--check", "-e", extra)
    assert checked.returncode == 0, checked.stdout[-3000:] + checked.stderr[-2000:]
    assert _recap(checked.stdout)["changed"] > 0
    assert (units / "hermes-pacer-keeper.service").exists()  # check mode removed nothing

    play = _run("ansible-playbook", "playbooks/uninstall.yml", "-e", extra)
    assert play.returncode == 0, play.stdout[-3000:] + play.stderr[-2000:]
    assert NO_HERMES_USER.replace("user hermes", f"user {GONE_USER}") in play.stdout
    assert sorted(p.name for p in units.iterdir()) == ["other.service"]
    assert not where["hermes_pacer_command_link"].is_symlink() and other_command.is_symlink()
    for key in (
        "hermes_pacer_cron_file",
        "hermes_pacer_board_backup_cron_file",
        "hermes_pacer_logrotate_file",
        "hermes_pacer_tmpfiles_file",
        "hermes_pacer_settings_dir",
        "hermes_pacer_lock_dir",
    ):
        assert not where[key].exists(), key
    assert sorted(p.name for p in where["hermes_pacer_scripts_dir"].iterdir()) == []

    again = _run("ansible-playbook", "playbooks/uninstall.yml", "-e", extra)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-2000:]
    assert _recap(again.stdout)["changed"] == 0
