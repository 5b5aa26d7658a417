"""migration scenario: a host of the manual recipe converges to exactly one managed path."""

import yaml
from paced_host import HERMES_HOME, as_hermes, board_settings, check_installed, check_verify, pace_and_measure

ROOT_CONFIG = f"{HERMES_HOME}/.hermes/config.yaml"


def test_hermes_installed_by_hand_is_left_as_it_is(host):
    assert not host.file("/opt/hermes/venv").exists
    assert board_settings(host, "default")["HERMES_BIN"] == "/usr/local/bin/hermes"


def test_installed_over_the_recipe(host):
    check_installed(host)


def test_the_config_keeps_every_comment_and_unrelated_key(host):
    text = host.file(ROOT_CONFIG).content_string
    for kept in (
        "# Hermes config, tuned by hand (keep these notes)",
        "default: fake-model   # the local endpoint",
        "# the gateway dispatches every 60 s",
        "failure_limit: 3",
        "skin: dark",
    ):
        assert kept in text
    data = yaml.safe_load(text)
    assert data["kanban"] == {"dispatch_in_gateway": False, "failure_limit": 3}
    assert host.file(ROOT_CONFIG).user == "hermes"
    # The backup holds the API key: root-only, outside the Hermes home.
    name = f"{HERMES_HOME}/.hermes/config.yaml".strip("/").replace("/", "_")
    backups = host.run(f"ls /var/backups/hermes-pacer/ | grep -c '^{name}\\..*~$'").stdout.strip()
    assert int(backups) >= 1
    assert host.run(f"ls {HERMES_HOME}/.hermes/ | grep -c '^config.yaml.*~$'").stdout.strip() == "0"
    for backup in host.check_output(f"ls /var/backups/hermes-pacer/{name}.*").split():
        assert host.file(backup).user == "root" and host.file(backup).mode == 0o600


def test_the_profile_config_has_the_dispatcher_off_too(host):
    data = yaml.safe_load(host.file(f"{HERMES_HOME}/.hermes/profiles/worker/config.yaml").content_string)
    assert data["kanban"]["dispatch_in_gateway"] is False
    assert data["model"]["base_url"] == "http://127.0.0.1:18080/v1"


def test_hand_made_dispatch_lines_are_adopted_and_the_rest_kept(host):
    crontab = host.check_output("crontab -u hermes -l")
    active = [line for line in crontab.splitlines() if line.strip() and not line.startswith("#")]
    assert not any("hermes-kanban-dispatch" in line for line in active)
    assert "0 3 * * * echo nightly-unrelated-job" in active
    cron_d = host.file("/etc/cron.d/hermes-dispatch").content_string
    assert "17 * * * * root echo unrelated" in cron_d
    assert not any("kanban dispatch" in line for line in cron_d.splitlines() if not line.startswith("#"))
    crontab_backups = host.run("ls /var/backups/hermes-pacer/ | grep -vc config.yaml").stdout.strip()
    assert crontab_backups == "2"


def test_one_dispatcher_path_holds_the_cap(host):
    assert host.service("hermes-pacer-default.timer").is_running
    assert as_hermes(host, "--version").rc == 0
    pace_and_measure(host, [{"name": "default", "cap": 2, "assignee": "worker", "port": 18080}])


def test_verify_says_the_host_is_safe(host):
    check_verify(host)
