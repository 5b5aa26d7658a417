"""trixie scenario: Debian 13 picks systemd timers by itself (scheduler auto) and holds the cap."""

from paced_host import (
    HERMES_HOME,
    check_gateway_dispatch_off,
    check_installed,
    check_verify,
    pace_and_measure,
)


def test_debian_13(host):
    assert host.system_info.distribution == "debian" and host.system_info.release.startswith("13")


def test_installed_with_timers(host):
    check_installed(host)
    assert host.service("hermes-pacer-default.timer").is_running
    assert not host.file("/etc/cron.d/hermes-pacer").exists
    check_gateway_dispatch_off(host, [f"{HERMES_HOME}/.hermes", f"{HERMES_HOME}/.hermes/profiles/worker"])


def test_the_timer_holds_the_cap_at_the_endpoint(host):
    pace_and_measure(host, [{"name": "default", "cap": 2, "assignee": "worker", "port": 18080}])


def test_verify_says_the_host_is_safe(host):
    check_verify(host)
