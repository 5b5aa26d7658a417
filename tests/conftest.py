from __future__ import annotations

import os
from pathlib import Path

import hermes_install
import pytest
from fake_llm import serve
from hermes_host import HermesHost

# The tiers (docs/development.md, "Tiers"). Every test is in exactly one, by the closest of these
# marks (a test's own, else its class's, else its module's pytestmark):
#   fast: starts no Hermes worker, no container and no network server (./tasks.sh test --fast);
#   slow: everything else.
TIERS = ("fast", "slow")
# Fixtures that start a Hermes home, a fake endpoint or a fetched tool: never in the fast tier.
SLOW_FIXTURES = frozenset({"hermes_bin", "host", "paced_host", "llm", "fake_endpoint", "promtool"})
TIER_PROBLEMS = pytest.StashKey[list]()


def tier_of(item) -> str | None:
    return next((mark.name for mark in item.iter_markers() if mark.name in TIERS), None)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Before -m deselects anything: every collected test's tier problems, for test_tiers.py."""
    problems = []
    for item in items:
        tier = tier_of(item)
        if tier is None:
            problems.append(f"{item.nodeid}: no tier (mark it fast or slow)")
        elif tier == "fast" and SLOW_FIXTURES & set(item.fixturenames):
            slow = ", ".join(sorted(SLOW_FIXTURES & set(item.fixturenames)))
            problems.append(f"{item.nodeid}: marked fast, uses {slow}")
    config.stash[TIER_PROBLEMS] = problems


@pytest.fixture(scope="session", params=hermes_install.versions(), ids=lambda v: f"hermes-{v}")
def hermes_bin(request):
    return hermes_install.ensure(request.param)


class Endpoints:
    """Fake LLM endpoints started by a test, each in a thread of the test process."""

    def __init__(self):
        self.servers = []

    def start(self, hold: float = 1.0, final_hold: float = 8.0, **shape):
        """`shape`: fake_llm.serve's flavour, slots and metrics."""
        import threading

        server = serve(hold, final_hold, **shape)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        self.servers.append(server)
        return server

    def stop(self):
        for server in self.servers:
            server.set_state("down")  # cut the requests still held: shutdown waits for its handlers
            server.shutdown()
            server.server_close()


@pytest.fixture
def llm():
    endpoints = Endpoints()
    yield endpoints
    endpoints.stop()


@pytest.fixture
def fake_endpoint(llm):
    """Quick fake endpoints (requests held 0.05 s): fake_endpoint(flavour=..., slots=...) ->
    (server, its root URL http://127.0.0.1:PORT)."""

    def start(**shape):
        server = llm.start(0.05, 0.05, **shape)
        return server, f"http://127.0.0.1:{server.server_address[1]}"

    return start


@pytest.fixture
def host(tmp_path, hermes_bin):
    home = tmp_path / "home"
    home.mkdir()
    hermes_host = HermesHost(home, hermes_bin)
    yield hermes_host
    hermes_host.kill_everything()


@pytest.fixture
def paced_host(host, llm):
    """A Hermes home whose profile `worker` talks to a fake LLM (1 s tool call, 8 s final reply)."""
    endpoint = llm.start(hold=1.0, final_hold=8.0)
    port = endpoint.server_address[1]
    host.configure(port, {"worker": port})
    host.endpoint = endpoint
    return host


@pytest.fixture(scope="session")
def promtool() -> Path:
    """Debian's promtool (tests/prometheus_tools.py); skipped where a non-root user cannot fetch it."""
    import prometheus_tools

    try:
        return prometheus_tools.tool("promtool")
    except prometheus_tools.Unavailable as exc:
        if os.geteuid() == 0:
            raise  # root can fetch it (CI): a skip there would hide every rule test
        pytest.skip(str(exc))
