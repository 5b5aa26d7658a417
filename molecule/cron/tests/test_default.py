"""cron scenario: the sub-minute loop paces a board of hermes-agent 0.14.0 (no native caps)."""

from paced_host import HERMES_HOME, check_gateway_dispatch_off, check_installed, pace_and_measure


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
