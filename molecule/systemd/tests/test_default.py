"""systemd scenario: timers pace two boards with different caps on hermes-agent 0.19.0."""

import json
import os
import subprocess
from pathlib import Path

from paced_host import (
    HERMES_HOME,
    SCRIPTS,
    as_hermes,
    check_gateway_dispatch_off,
    check_installed,
    check_verify,
    pace_and_measure,
)

REPO = Path(os.environ["HERMES_PACER_REPO"])
BOARDS = [
    {"name": "default", "cap": 2, "assignee": "worker", "port": 18080},
    {"name": "ops", "cap": 1, "assignee": "ops-worker", "port": 18081},
]


def test_installed(host):
    check_installed(host)
    assert not host.file("/etc/cron.d/hermes-pacer").exists


def test_gateway_dispatch_off_in_every_home(host):
    check_gateway_dispatch_off(
        host,
        [
            f"{HERMES_HOME}/.hermes",
            *(f"{HERMES_HOME}/.hermes/profiles/{p}" for p in ("worker", "ops-worker")),
        ],
    )


def test_one_timer_per_board(host):
    for board in BOARDS:
        timer = host.service(f"hermes-pacer-{board['name']}.timer")
        assert timer.is_enabled and timer.is_running
        unit = host.file(f"/etc/systemd/system/hermes-pacer-{board['name']}.service").content_string
        assert f"MAX_PARALLEL={board['cap']}" in unit and f"BOARD={board['name']}" in unit


def test_the_flow_is_on_its_board_with_its_parents(host):
    flow_file = host.file("/etc/hermes-pacer/flows/nightly-report.yml")
    assert flow_file.user == "root" and flow_file.group == "hermes" and flow_file.mode == 0o640
    cards = json.loads(as_hermes(host, "kanban --board flows list --json").stdout)
    by_title = {card["title"]: card["id"] for card in cards}
    assert sorted(by_title) == ["Ingest the logs", "Publish the report", "Write the report"]
    expected = {
        "Ingest the logs": [],
        "Write the report": ["Ingest the logs"],
        "Publish the report": ["Write the report"],
    }
    for title, parents in expected.items():
        shown = json.loads(as_hermes(host, f"kanban --board flows show {by_title[title]} --json").stdout)
        assert shown["parents"] == [by_title[p] for p in parents], shown
    # The script the role ran, run again as the Hermes user: every card is found by its key.
    again = host.run(
        f"runuser -u hermes -- env HOME={HERMES_HOME} HERMES_BIN=/opt/hermes/venv/bin/hermes "
        f"{SCRIPTS}/hermes-kanban-flow.sh --json /etc/hermes-pacer/flows/nightly-report.yml"
    )
    assert again.rc == 0, again.stderr
    assert json.loads(again.stdout)["created"] == 0 and json.loads(again.stdout)["exists"] == 3


def test_the_timers_hold_each_cap_at_the_endpoint(host):
    pace_and_measure(host, BOARDS)


def test_verify_says_the_host_is_safe(host):
    check_verify(host)


def test_invoke_verify_reports_the_host(host):
    """The operator's command, through Ansible, against this container."""
    result = subprocess.run(
        [
            str(REPO / "tasks.sh"),
            "verify",
            "--inventory",
            os.environ["MOLECULE_INVENTORY_FILE"],
            "--hosts",
            "all",
            "--json",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(result.stdout)["hermes-pacer-systemd"]
    assert report["ok"] and sorted(b["board"] for b in report["boards"]) == ["default", "flows", "ops"]
