"""A fleet on one GPU (docs/fleet.md): two Hermes hosts that share one endpoint hold its cap together.

Each host is a Hermes home with its own settings, locks and state, its sub-minute loop in a PID
namespace of its own (tests/fleet_hosts.py), so neither sees the other's workers: all they share is
the endpoint and the clock. 4 ready cards on each host, the endpoint's cap 2:
- the endpoint reports its load (vLLM /metrics, llama.cpp /slots): time-sliced admission, the
  fake endpoint never has more than 2 requests in flight, and all 8 cards are done;
- it reports none (a plain OpenAI-compatible server, found by kind auto): static shares 1 + 1,
  never more than 1 in flight per host.

Fleet admission is the pacer's own logic above the same `hermes` calls every other test proves on
each release: the fleets run on the newest release only, which keeps the slowest test of the suite
once in a run.

The three fleets run side by side (each takes most of its time waiting for its turn). G must cover
a dispatching pass (2-7 s here) and a worker's start-up to its first request: about 3 s on a quiet
machine, 7 s beside a CI run on two cores, 5-27 s with the three fleets beside it too; S - G, the
window, is two passes long.
"""

from __future__ import annotations

import statistics
import threading

import fleet_hosts
import hermes_install
import pytest
from hermes_host import HermesHost

pytestmark = pytest.mark.slow

CAP = 2
CARDS = 4
SLICE = 36  # S
STARTUP = 32  # G: what a worker spawned at the end of a window has to send its first request
TIMEOUT = 330.0
VARIANTS = {
    # name: the endpoint's shape (tests/fake_llm.py), and the mode the hosts work in
    "vllm-metrics": ({"flavour": "vllm"}, "sliced"),
    "llamacpp-slots": ({"flavour": "llamacpp", "metrics": False}, "sliced"),
    "openai-static": ({"flavour": "openai"}, "static"),
}


def _settings(url: str, index: int, lock_dir, state_dir) -> dict[str, str]:
    return {
        "MAX_PARALLEL": str(CAP),
        "RUNS_PER_MINUTE": "30",
        "PACER_LOG_FORMAT": "json",
        "PACER_LOCK_DIR": str(lock_dir),
        "PACER_STATE_DIR": str(state_dir),
        "PACER_ENDPOINT": "gpu",
        "PACER_ENDPOINT_URL": url,
        "PACER_ENDPOINT_KIND": "auto",
        "PACER_ENDPOINT_MAX_PARALLEL": str(CAP),
        "PACER_FLEET": "gpu_fleet",
        "PACER_FLEET_HOSTS": "2",
        "PACER_FLEET_INDEX": str(index),
        "PACER_FLEET_SHARE": "1",
        "PACER_FLEET_SLICE_SECONDS": str(SLICE),
        "PACER_FLEET_STARTUP_SECONDS": str(STARTUP),
    }


def _fleet(root, hermes_bin, server) -> list[fleet_hosts.FleetHost]:
    port = server.server_address[1]
    hosts = []
    for index in range(2):
        home = root / f"host-{index}"
        home.mkdir(parents=True)
        hermes = HermesHost(home, hermes_bin)
        hermes.configure(port, {"worker": port})
        settings = _settings(f"http://127.0.0.1:{port}/v1", index, home / "locks", home / "state")
        host = fleet_hosts.FleetHost(hermes, f"host-{index}", settings)
        host.use_api_key()
        (home / "state").mkdir()
        hermes.create_cards(CARDS)
        hosts.append(host)
    return hosts


@pytest.fixture(scope="module")
def fleets(tmp_path_factory):
    """The three fleets, run side by side: variant -> its hosts, endpoint stats and makespan (or the
    error that ended it)."""
    try:
        fleet_hosts.check_unshare()
    except fleet_hosts.Unavailable as exc:
        pytest.skip(str(exc))
    from conftest import Endpoints

    hermes_bin = hermes_install.ensure(hermes_install.newest())
    endpoints = Endpoints()
    results: dict[str, dict] = {}
    # Made here, before the threads: pytest's first mktemp creates the base directory, not safely
    # from several threads at once.
    roots = {name: tmp_path_factory.mktemp(name) for name in VARIANTS}

    def run(name: str, shape: dict) -> None:
        result = results[name] = {}
        try:
            server = endpoints.start(hold=0.5, final_hold=1.0, **shape)
            hosts = result["hosts"] = _fleet(roots[name], hermes_bin, server)
            result["makespan"] = fleet_hosts.run_fleet(hosts, TIMEOUT)
            result["stats"] = server.recorder.stats()
        except BaseException as exc:  # reported by the variant's test
            result["error"] = exc

    threads = [
        threading.Thread(target=run, args=(name, shape), daemon=True) for name, (shape, _) in VARIANTS.items()
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        for result in results.values():
            for host in result.get("hosts", []):
                host.stop()
        endpoints.stop()
    _report(results)
    return results


def _report(results: dict[str, dict]) -> None:
    """What the run measured, for the benchmark's notes (shown with -s or on a failure)."""
    for name, result in results.items():
        if "stats" not in result:
            print(f"{name}: {result.get('error')!r}")
            continue
        starts = fleet_hosts.startups(result["hosts"], result["stats"]["requests"])
        dispatches = [r["ms"] / 1000 for h in result["hosts"] for r in h.records() if r.get("spawned")]
        print(
            f"{name}: makespan {result['makespan']:.0f} s, peak {result['stats']['peak_in_flight']},"
            f" per host {result['stats']['peak_by_client']}, worker start-up {_spread(starts)},"
            f" dispatching pass {_spread(dispatches)}"
        )


def _spread(values: list[float]) -> str:
    if not values:
        return "-"
    return f"min/median/max {min(values):.1f}/{statistics.median(values):.1f}/{max(values):.1f} s"


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_a_fleet_of_two_hosts_holds_the_endpoint_cap(fleets, variant):
    result = fleets[variant]
    if "error" in result:
        raise result["error"]
    hosts, stats = result["hosts"], result["stats"]
    logs = "\n".join(str(record) for host in hosts for record in host.records() if record.get("spawned"))
    finals = [request for request in stats["requests"] if request["kind"] == "final"]
    assert len(finals) == 2 * CARDS, logs
    assert stats["peak_in_flight"] <= CAP, logs
    mode = VARIANTS[variant][1]
    records = [record for host in hosts for record in host.records() if record.get("fleet_mode")]
    assert {record["fleet_mode"] for record in records} == {mode}, records[-5:]
    assert {record["fleet_slot"] for record in records} == {"1/2", "2/2"}
    # Both hosts started workers; each sends its own API key.
    assert set(stats["peak_by_client"]) == {"host-0", "host-1"}, stats["peak_by_client"]
    if mode == "static":
        assert max(stats["peak_by_client"].values()) <= 1, stats["peak_by_client"]
    else:
        slices = [record for record in records if record["reason"] == "fleet_slice"]
        assert slices and all(0 < record["fleet_next"] <= 2 * SLICE for record in slices), slices[:3]
