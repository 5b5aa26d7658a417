"""cron scenario: the sub-minute loop paces a board of hermes-agent 0.14.0 (no native caps)."""

import os
import subprocess
from pathlib import Path

from paced_host import (
    HERMES_HOME,
    HERMES_USER,
    LOCK_DIR,
    LOG_DIR,
    SCRIPTS,
    SETTINGS_DIR,
    board_settings,
    check_gateway_dispatch_off,
    check_installed,
    check_verify,
    pace_and_measure,
)

REPO = Path(os.environ["HERMES_PACER_REPO"])


def test_installed(host):
    check_installed(host)
    assert not host.file("/etc/systemd/system/hermes-pacer-default.timer").exists


def test_gateway_dispatch_off(host):
    check_gateway_dispatch_off(host, [f"{HERMES_HOME}/.hermes", f"{HERMES_HOME}/.hermes/profiles/worker"])


def test_the_cron_file_runs_the_sub_minute_loop_as_hermes(host):
    cron = host.file("/etc/cron.d/hermes-pacer")
    assert cron.user == "root" and cron.mode == 0o644
    line = next(line for line in cron.content_string.splitlines() if line.startswith("* * * * *"))
    assert line.split() == [
        *("*", "*", "*", "*", "*", "hermes"),
        f"{SCRIPTS}/hermes-kanban-dispatch-subminute.sh",
        *("--settings", f"{SETTINGS_DIR}/default.env"),
        *(">>", f"{LOG_DIR}/kanban-dispatch-default.log", "2>&1"),
    ]
    settings = board_settings(host, "default")
    assert settings["BOARD"] == "default" and settings["MAX_PARALLEL"] == "2"
    assert settings["HERMES_BIN"] == "/opt/hermes/venv/bin/hermes" and settings["PACER_SCHEDULER"] == "cron"
    assert settings["PACER_LOG_FILE"] == f"{LOG_DIR}/kanban-dispatch-default.log"
    # No endpoint named: the board is on `local`, at model.base_url of the Hermes config.
    assert settings["PACER_ENDPOINT"] == "local" and settings["PACER_ENDPOINT_BOARDS"] == "default:2"
    assert "PACER_ENDPOINT_URL" not in settings
    assert host.service("cron").is_running


def test_cron_holds_the_cap_at_the_endpoint(host):
    pace_and_measure(host, [{"name": "default", "cap": 2, "assignee": "worker", "port": 18080}])


def test_verify_says_the_host_is_safe(host):
    check_verify(host)


ROOT_FILE = "/root/pacer-attack-secret"
ROOT_DIR = "/root/pacer-attack-dir"


def _plant(host, target: str, link: str) -> None:
    """As the Hermes user, replace `link` with a symbolic link to `target`. The sub-minute loop may
    make its lock directory again between the removal and the link: try again."""
    for _ in range(20):
        planted = host.run(f"runuser -u {HERMES_USER} -- sh -c 'rm -rf {link} && ln -sT {target} {link}'")
        if planted.rc == 0 and host.file(link).is_symlink:
            return
    raise AssertionError(f"could not plant {link} -> {target}: {planted.stderr}")


def _converge_again(tags: str, *extra: str) -> subprocess.CompletedProcess:
    """This scenario's converge again, as Molecule runs it, limited to the tasks that touched
    these paths as root before."""
    env = {
        **os.environ,
        "ANSIBLE_ROLES_PATH": os.environ.get("ANSIBLE_ROLES_PATH", str(REPO / "roles")),
        "ANSIBLE_LIBRARY": os.environ.get("ANSIBLE_LIBRARY", str(REPO / "plugins" / "modules")),
    }
    return subprocess.run(
        [
            "ansible-playbook",
            "-i",
            os.environ["MOLECULE_INVENTORY_FILE"],
            str(REPO / "molecule" / "cron" / "converge.yml"),
            "--tags",
            tags,
            *extra,
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_a_converge_never_follows_a_link_the_hermes_user_planted(host):
    """The Hermes user points its log file at a root-only file and the lock directory at a
    root-only directory, then root converges: both stay root's, untouched."""
    log_file = f"{LOG_DIR}/kanban-dispatch-default.log"
    host.run(f"install -m 0600 /dev/null {ROOT_FILE} && echo root-only > {ROOT_FILE}")
    host.run(f"install -d -m 0700 {ROOT_DIR}")
    # This image's /run/lock is root-only (1755); many hosts' is world-writable, as here.
    lock_parent_mode = host.check_output("stat -c %a /run/lock")
    host.run("chmod 1777 /run/lock")
    try:
        _plant(host, ROOT_FILE, log_file)
        _plant(host, ROOT_DIR, LOCK_DIR)
        play = _converge_again("logs,scheduler,smoke")
        output = play.stdout + play.stderr
        secret, directory = host.file(ROOT_FILE), host.file(ROOT_DIR)
        assert (secret.user, secret.group, secret.mode) == ("root", "root", 0o600)
        assert secret.content_string == "root-only\n"
        assert (directory.user, directory.group, directory.mode) == ("root", "root", 0o700)
        # Either nothing touched them, or the run stopped naming the link.
        assert play.returncode == 0 or LOCK_DIR in output, output[-3000:]
    finally:
        host.run(f"runuser -u {HERMES_USER} -- rm -f {log_file} {LOCK_DIR}")
        host.run(f"runuser -u {HERMES_USER} -- touch {log_file}")
        host.run(f"chmod {lock_parent_mode} /run/lock")
        host.run(f"install -d -m 0700 -o {HERMES_USER} -g {HERMES_USER} {LOCK_DIR}")
        host.run(f"rm -rf {ROOT_FILE} {ROOT_DIR}")


FAKE_HERMES = """#!/bin/sh
id -u >> /tmp/hermes-ran-as
exec /opt/hermes/venv/bin/hermes "$@"
"""


def test_discovery_runs_a_hermes_the_hermes_user_can_write_only_as_that_user(host):
    """A hermes binary in the Hermes user's home (as found on its PATH): the role asks it for
    its version, as that user, never as root."""
    fake = f"{HERMES_HOME}/bin/hermes"
    host.run("install -m 0666 /dev/null /tmp/hermes-ran-as")
    host.run(f"runuser -u {HERMES_USER} -- mkdir -p {HERMES_HOME}/bin")
    host.run(
        f"runuser -u {HERMES_USER} -- sh -c 'cat > {fake} && chmod 0755 {fake}' <<'EOF'\n{FAKE_HERMES}EOF"
    )
    try:
        play = _converge_again("preflight", "-e", f"hermes_pacer_hermes_bin={fake}")
        assert play.returncode == 0, (play.stdout + play.stderr)[-3000:]
        ran_as = host.file("/tmp/hermes-ran-as").content_string.split()
        hermes_uid = host.check_output(f"id -u {HERMES_USER}")
        assert ran_as and set(ran_as) == {hermes_uid}, f"{fake} ran as uids {ran_as}"
    finally:
        host.run(f"rm -rf /tmp/hermes-ran-as {HERMES_HOME}/bin")


def test_uninstall_removes_what_the_roles_installed_and_nothing_else(host):
    """Last: playbooks/uninstall.yml against this container, then what is left."""
    playbook = subprocess.run(
        [
            "ansible-playbook",
            "-i",
            os.environ["MOLECULE_INVENTORY_FILE"],
            "-e",
            "hermes_pacer_hosts=all",
            str(REPO / "playbooks" / "uninstall.yml"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert playbook.returncode == 0, playbook.stdout[-3000:] + playbook.stderr[-2000:]
    for gone in (
        "/etc/cron.d/hermes-pacer",
        f"{SETTINGS_DIR}/default.env",
        "/etc/logrotate.d/hermes-pacer",
        "/etc/tmpfiles.d/hermes-pacer.conf",
        f"{SCRIPTS}/hermes-kanban-dispatch-capped.sh",
        f"{SCRIPTS}/hermes-kanban-dispatch-subminute.sh",
        f"{SCRIPTS}/hermes_pacer",
        "/usr/local/bin/hermes-pacer",
        "/run/lock/hermes-pacer",
    ):
        assert not host.file(gone).exists, gone
    # Kept: Hermes, its configs (the gateway dispatcher stays off), the boards and the logs.
    assert host.file("/opt/hermes/venv/bin/hermes").exists
    assert "dispatch_in_gateway: false" in host.file(f"{HERMES_HOME}/.hermes/config.yaml").content_string
    assert host.file(f"{HERMES_HOME}/.hermes/kanban.db").exists
    assert host.file("/var/log/hermes/kanban-dispatch-default.log").exists
