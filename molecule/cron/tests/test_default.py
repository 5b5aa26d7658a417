"""cron scenario: the sub-minute loop paces a board of hermes-agent 0.14.0 (no native caps)."""

import os
import subprocess
from pathlib import Path

from paced_host import (
    HERMES_HOME,
    SCRIPTS,
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
    assert " hermes " in line and "BOARD=default" in line and "MAX_PARALLEL=2" in line
    assert "HERMES_BIN=/opt/hermes/venv/bin/hermes" in line
    assert line.split(">>")[0].strip().endswith("/opt/hermes/scripts/hermes-kanban-dispatch-subminute.sh")
    assert host.service("cron").is_running


def test_cron_holds_the_cap_at_the_endpoint(host):
    pace_and_measure(host, [{"name": "default", "cap": 2, "assignee": "worker", "port": 18080}])


def test_verify_says_the_host_is_safe(host):
    check_verify(host)


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
        "/etc/logrotate.d/hermes-pacer",
        "/etc/tmpfiles.d/hermes-pacer.conf",
        f"{SCRIPTS}/hermes-kanban-dispatch-capped.sh",
        f"{SCRIPTS}/hermes-kanban-dispatch-subminute.sh",
        f"{SCRIPTS}/hermes_pacer",
        "/run/lock/hermes-pacer",
    ):
        assert not host.file(gone).exists, gone
    # Kept: Hermes, its configs (the gateway dispatcher stays off), the boards and the logs.
    assert host.file("/opt/hermes/venv/bin/hermes").exists
    assert "dispatch_in_gateway: false" in host.file(f"{HERMES_HOME}/.hermes/config.yaml").content_string
    assert host.file(f"{HERMES_HOME}/.hermes/kanban.db").exists
    assert host.file("/var/log/hermes/kanban-dispatch-default.log").exists
