"""The benchmark: its arithmetic on made-up series, and one short run of the real harness.

The figures themselves belong to `./tasks.sh bench` and docs/benchmark.md; here only that the harness
works end to end (every strategy ran to the end, every output was written).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import hermes_install
import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import figures, report, store  # noqa: E402
from bench.__main__ import _arguments, _plan, _workloads  # noqa: E402
from bench.harness import pacer_endpoint_env, pacer_fleet_env, static_shares  # noqa: E402
from bench.namespace import PidNamespace  # noqa: E402
from bench.strategies import catalogue  # noqa: E402

pytestmark = pytest.mark.slow


def test_step_series_and_peak_count_overlaps():
    intervals = [(0, 4), (1, 3), (3, 5)]
    assert figures.step_series(intervals) == [(0, 1), (1, 2), (3, 2), (4, 1), (5, 0)]
    assert figures.peak(intervals) == 2
    assert figures.peak([]) == 0


def test_time_weighted_mean_counts_only_the_window():
    assert figures.time_weighted_mean([(0, 10), (5, 20)], 0, 10) == pytest.approx(1.5)
    assert figures.time_weighted_mean([(0, 10)], 5, 5) == 0.0


def test_board_figures_of_a_perfectly_paced_board():
    # Cap 2, four cards of 10 s, back to back: every slot busy while work waits.
    workers = [(0, 10), (0, 10), (10, 20), (10, 20)]
    requests = [(1, 9), (1, 9), (11, 19), (11, 19)]
    got = figures.board_figures(requests, workers, cap=2)
    assert got["peak_workers"] == 2 and got["peak_in_flight"] == 2
    assert got["slot_utilisation"] == pytest.approx(1.0)
    assert got["endpoint_bound"] == pytest.approx(0.8)
    assert got["makespan_vs_ideal"] == pytest.approx(1.0)
    assert got["pipelined_bound"] == pytest.approx(16.0)


def test_nothing_waited_gives_no_utilisation():
    got = figures.board_figures([(1, 9)] * 4, [(0, 10)] * 4, cap=2)
    assert got["slot_utilisation"] is None and got["peak_workers"] == 4


def test_percentile_is_the_nearest_rank():
    assert figures.percentile([], 0.95) is None
    assert figures.percentile([3.0], 0.95) == 3.0
    assert figures.percentile([float(n) for n in range(1, 21)], 0.95) == 19.0
    assert figures.percentile([5.0, 1.0, 2.0], 0.5) == 2.0


def test_refill_counts_exits_at_a_full_cap_while_cards_wait():
    # Cap 2. At 10 both run and one exits: the next spawn is at 10.5 (0.5 s). At 12 the other exits
    # with two live: the spawn at 14 follows (2 s). The exits at 20.5 and 24 leave no card waiting
    # (nothing starts after them): not counted.
    workers = [(0.0, 10.0), (0.0, 12.0), (10.5, 20.5), (14.0, 24.0)]
    assert figures.refill_delays(workers, cap=2) == [0.5, 2.0]
    # Below the cap nothing was full: an exit then is not a refill.
    assert figures.refill_delays([(0.0, 10.0), (11.0, 20.0)], cap=2) == []
    # Everything started at once (uncapped): no spawn after any exit.
    assert figures.refill_delays([(0.0, 10.0)] * 4, cap=2) == []


def test_outage_counts_failed_cards_hung_workers_and_the_burst_at_recovery():
    raw = {
        "outage": [10.0, 70.0],
        "hang_after": 30.0,
        # a: blocked; b: a crashed run then done; c: done cleanly; d: done, still running at the end
        "statuses": {"a": "blocked", "b": "done", "c": "done", "d": "done"},
        "runs": {"a": ["crashed", "blocked"], "b": ["crashed", "completed"], "c": ["completed"], "d": [None]},
        "cards": {
            # alive through the outage and 30 s past it, no request since: hung
            "a": [5.0, 120.0, "x"],
            # alive past it but asked the endpoint again after it came back: not hung
            "b": [5.0, 120.0, "x"],
            # spawned 3 s and 9 s after recovery: the burst
            "c": [73.0, 90.0, "x"],
            "d": [79.0, 95.0, "x"],
        },
        "requests": [
            [6.0, 10.0, "x", "a"],
            [6.0, 10.0, "x", "b"],
            [71.0, 75.0, "x", "b"],
            [80.0, 82.0, "x", ""],
        ],
    }
    got = figures.outage_figures(raw)
    assert got == {"failed_cards": 2, "hung_workers": 1, "recovery_spawns": 2}
    # No outage: only the failures count.
    raw["outage"] = None
    assert figures.outage_figures(raw) == {"failed_cards": 2, "hung_workers": None, "recovery_spawns": None}


def test_trial_figures_judge_the_endpoint_not_each_board():
    # Two boards of 3 cards (board cap 2) on an endpoint of 2, paced as one: 3 rounds of 10 s, each
    # started 0.5 s after the last ended.
    cards = {f"{board}{i}": [10.5 * i, 10.5 * i + 10, board] for board in "ab" for i in range(3)}
    raw = {
        "boards": ["a", "b"],
        "endpoint_cap": 2,
        "foreign": 0,
        "outage": None,
        "completed": True,
        "requests": [[first + 1, last - 1, board, card] for card, (first, last, board) in cards.items()],
        "cards": cards,
        "driver": {"burst_cpu": 0.0, "burst_passes": 0, "idle_cpu": 0.0, "idle_seconds": 0.0},
    }
    got = figures.trial_figures(raw, cap=2)
    assert got["endpoint_peak_total"] == 2 and got["peak_workers"] == 1
    assert got["makespan_vs_ideal"] == pytest.approx(31 / 30)
    # Until the last round started (21 s): two rounds of two 8 s requests, on 2 slots.
    assert got["endpoint_utilisation"] == pytest.approx(32 / 21 / 2)
    assert got["refill_p95"] == pytest.approx(0.5)
    # The same cards beside one foreign request on an endpoint of 3: the share for workers is 2.
    raw.update(boards=["a"], endpoint_cap=3, foreign=1)
    raw["cards"] = {card: [first, last, "a"] for card, (first, last, _) in cards.items()}
    raw["requests"] = [[s, e, "a", c] for s, e, _, c in raw["requests"]] + [[0.0, 31.0, "foreign", ""]]
    got = figures.trial_figures(raw, cap=3)
    assert got["endpoint_peak_total"] == 3 and got["endpoint_peak_ours"] == 2
    assert got["makespan_vs_ideal"] == pytest.approx(31 / 30)
    assert got["refills"] == 4  # the exits at 10 and 20.5 s, two live each time and cards waiting


def test_a_cell_is_summarised_by_its_median_and_range():
    runs = [
        {"figures": {"makespan": m, "completed": True, "refill_p95": r}}
        for m, r in ((50, None), (70, 2.0), (55, 1.0))
    ]
    got = figures.cell_summary(runs)
    assert got["makespan"] == {"median": 55, "min": 50, "max": 70, "n": 3}
    assert got["refill_p95"] == {"median": 1.5, "min": 1.0, "max": 2.0, "n": 2}
    assert "completed" not in got
    assert report.spread(got["makespan"], lambda v: f"{v:.0f} s") == "55 s (50 s-70 s)"
    assert report.spread({"median": 2, "min": 2, "max": 2, "n": 3}, str) == "2"
    assert report.spread(None, str) == "-"


def _run(strategy: str, repeat: int, peak: int, makespan: float) -> dict:
    """A made-up run of one cell, raw series and all, for the table."""
    workers = [(0.0, 10.0), (0.0, 10.0), (10.2, 20.0), (10.4, makespan)]
    raw = {
        "boards": ["b"],
        "cap": 2,
        "endpoint_cap": 2,
        "foreign": 0,
        "outage": None,
        "completed": True,
        "requests": [[start + 1, end - 1, "b", f"c{i}"] for i, (start, end) in enumerate(workers)]
        + [[0.5, 9.0, "b", "x"]] * (peak - 2),
        "cards": {f"c{i}": [start, end, "b"] for i, (start, end) in enumerate(workers)},
        "statuses": {f"c{i}": "done" for i in range(4)},
        "runs": {},
        "driver": {"burst_cpu": 1.0, "burst_passes": 10, "idle_cpu": 0.0, "idle_seconds": 0.0},
    }
    return {
        "version": "0.19.0",
        "workload": "one-board",
        "workload_label": "4 cards, one board",
        "strategy": strategy,
        "label": strategy,
        "repeat": repeat,
        "cap": 2,
        "figures": figures.trial_figures(raw, 2),
        "raw": raw,
    }


def test_the_table_has_a_row_a_cell_with_the_median_and_range_of_its_runs():
    results = [_run("pacer-12", 0, 2, 20.0), _run("uncapped", 0, 4, 20.0), _run("pacer-12", 1, 2, 24.0)]
    results.append(_run("pacer-12", 2, 2, 30.0))
    text = report.table(results)
    rows = [line for line in text.splitlines() if line.startswith("| 0.19.0")]
    assert len(rows) == 2
    assert rows[0].startswith("| 0.19.0 | 4 cards, one board | pacer-12 | 3 | 2 / 2 | 2 / 2 |")
    assert "24 s (20 s-30 s)" in rows[0]
    assert "| 0.2 s |" in rows[0]  # refill p95: both exits at 10 s were followed within 0.4 s
    assert rows[1].startswith("| 0.19.0 | 4 cards, one board | uncapped | 1 | 4 / 2 |")
    assert "stayed at or under the caps" in report.findings(results)


def test_the_docs_block_links_the_plot_and_the_series_from_docs(tmp_path):
    meta = {
        "command": "./tasks.sh bench",
        "date": "2026-11-30",
        "machine": "2 cores",
        "duration": "the whole run took 17 min",
        "cap": 2,
        "hold": 8.0,
        "final_hold": 8.0,
        "json_path": "bench/results/bench.json",
    }
    block = report.section([], meta, "bench/results/requests-in-flight.png", "docs")
    assert "[`bench/results/bench.json`](../bench/results/bench.json)" in block
    assert "(../bench/results/requests-in-flight.png)" in block
    page = tmp_path / "benchmark.md"
    page.write_text(f"# Benchmark\n\n{report.BEGIN}\nold\n{report.END}\n\nAfter.\n")
    report.splice(page, block)
    assert page.read_text() == f"# Benchmark\n\n{block}\n\nAfter.\n"


def test_the_docs_page_carries_the_block_a_full_run_replaces():
    text = (REPO / "docs" / "benchmark.md").read_text()
    assert text.count(report.BEGIN) == 1 and text.count(report.END) == 1
    assert "(../bench/results/requests-in-flight.png)" in text
    assert report.BEGIN not in (REPO / "README.md").read_text()


def test_two_hosts_share_one_endpoint_and_bring_their_one_host_yardstick():
    args = _arguments(["--workloads", "two-hosts", "--versions", "0.19.0"])
    two = _workloads(args)["two-hosts"]
    # Issue #15: 4 cards on each host, the endpoint's cap 2 for the fleet, each host's loop alone in
    # its own PID namespace.
    assert (two.hosts, two.boards, two.cards, two.endpoint_cap, two.pid_namespaces) == (2, 1, 4, 2, True)
    one = _workloads(args)[two.yardstick]
    assert (one.hosts, one.boards, one.cards, one.cap, one.endpoint_cap) == (1, 1, 8, 2, 2)
    assert _plan(args) == [
        ("0.19.0", "two-hosts", "alone-12"),
        ("0.19.0", "two-hosts", "fleet-12"),
        ("0.19.0", "two-hosts", "fleet-static-12"),
        ("0.19.0", "one-host", "pacer-12"),
    ]
    # Naming the workloads makes the run join the stored results; the whole plan replaces them.
    assert args.partial and not _arguments([]).partial
    # A quick run proves the fleet's plumbing: its fleet cell, no yardstick.
    quick = _plan(_arguments(["--quick", "--versions", "0.19.0"]))
    assert [cell for cell in quick if cell[1] in ("two-hosts", "one-host")] == [
        ("0.19.0", "two-hosts", "fleet-12")
    ]


def test_fleet_strategies_and_the_settings_each_host_gets():
    known = catalogue(15)
    assert known["alone-12"].fleet is None and known["alone-12"].endpoint_metrics
    assert known["fleet-12"].fleet == "sliced" and known["fleet-12"].endpoint_metrics
    assert known["fleet-static-12"].fleet == "static" and not known["fleet-static-12"].endpoint_metrics
    two = _workloads(_arguments([]))["two-hosts"]
    assert pacer_fleet_env(two, 1) == {
        "PACER_FLEET": "bench-fleet",
        "PACER_FLEET_HOSTS": "2",
        "PACER_FLEET_INDEX": "1",
        "PACER_FLEET_SHARE": "1",
    }

    class Lab:
        url = "http://127.0.0.1:1/v1"

    # Each host names only its own boards; without metrics the endpoint is a plain OpenAI server.
    env = pacer_endpoint_env(Lab(), two, ["t1b"], metrics=False)
    assert env["PACER_ENDPOINT_BOARDS"] == "t1b" and env["PACER_ENDPOINT_KIND"] == "openai"
    assert env["PACER_ENDPOINT_MAX_PARALLEL"] == "2"


def test_static_shares_split_the_cap_as_the_role_does():
    assert static_shares(2, 2) == [1, 1]
    assert static_shares(5, 3) == [2, 2, 1]
    assert static_shares(4, 1) == [4]
    # More hosts than the cap: at least 1 each, over the cap (the role says so).
    assert static_shares(1, 2) == [1, 1]


@pytest.mark.skipif(os.geteuid() != 0, reason="a PID namespace needs root")
def test_a_host_namespace_sees_only_its_own_processes_and_keeps_its_orphans():
    namespace = PidNamespace()
    try:
        # An orphan the command leaves behind (as the dispatcher leaves its workers) stays alive in
        # the namespace after the command ended; the command saw only the namespace's few processes.
        ran = subprocess.run(
            namespace.command(["sh", "-c", "setsid sleep 300 </dev/null >/dev/null 2>&1 & ls /proc"]),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        pids = sorted(int(name) for name in ran.stdout.split() if name.isdigit())
        assert pids[0] == 1 and len(pids) <= 6, pids  # not the machine's hundreds
        orphans = Path(f"/proc/{namespace.init}/task/{namespace.init}/children").read_text().split()
        assert len(orphans) == 1 and b"sleep" in Path(f"/proc/{orphans[0]}/cmdline").read_bytes()
    finally:
        namespace.close()
    # Closing the namespace ends everything in it (the kernel kills the rest as its init ends: a
    # moment later, not at once).
    deadline = time.monotonic() + 30
    while b"sleep" in _cmdline(int(orphans[0])) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert b"sleep" not in _cmdline(int(orphans[0]))


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _fleet_run(workload: str, strategy: str, repeat: int, makespan: float, peak: int) -> dict:
    """A made-up run of a fleet cell: two hosts (a board each) or the one-host yardstick."""
    result = _run(strategy, repeat, peak, makespan)
    hosts = [["a"], ["b"]] if workload == "two-hosts" else [["b"]]
    result["raw"].update(hosts=hosts, yardstick="one-host" if workload == "two-hosts" else None)
    label = "8 cards over two hosts, one endpoint" if workload == "two-hosts" else "8 cards, one host"
    result.update(workload=workload, workload_label=label)
    return result


def test_the_fleet_table_sets_each_makespan_against_the_one_host_yardstick():
    results = [
        _fleet_run("two-hosts", "alone-12", 0, 20.0, 4),
        _fleet_run("two-hosts", "fleet-12", 0, 30.0, 2),
        _fleet_run("two-hosts", "fleet-12", 1, 40.0, 2),
        _fleet_run("one-host", "pacer-12", 0, 20.0, 2),
        _fleet_run("one-host", "pacer-12", 1, 30.0, 2),
    ]
    ratios = report.versus_yardstick(results)
    # Each run against the yardstick's median (25 s).
    assert ratios[("0.19.0", "two-hosts", "fleet-12")] == {"median": 1.4, "min": 1.2, "max": 1.6, "n": 2}
    assert ratios[("0.19.0", "two-hosts", "alone-12")]["median"] == pytest.approx(0.8)
    assert ratios[("0.19.0", "one-host", "pacer-12")] is None
    text = report.table(results)
    fleet = text.split("Several hosts on one endpoint")[1].splitlines()
    rows = [line for line in fleet if line.startswith("| 0.19.0")]
    assert rows[0].startswith("| 0.19.0 | 8 cards over two hosts, one endpoint | alone-12 | 1 | 4 / 2 |")
    assert rows[0].endswith("| 20 s | 0.80x |")
    assert rows[1].endswith("| 35 s (30 s-40 s) | 1.40 (1.20-1.60)x |")
    assert rows[2].startswith("| 0.19.0 | 8 cards, one host | pacer-12 |") and rows[2].endswith(
        "the yardstick |"
    )
    # Without the yardstick (a quick run) there is nothing to set the makespan against.
    alone = report.table(results[1:2]).split("Several hosts on one endpoint")[1]
    assert "| 30 s | - |" in alone and "x |" not in alone
    said = report.findings(results)
    # The fleet is the pacer and held the cap; the hosts alone are its baseline, not counted.
    assert "stayed at or under the caps (live workers per board, requests in flight at the endpoint, " in said
    assert "in 4 of its 4 runs." in said
    assert "two-hosts, fleet-12: peak in flight at the endpoint 2 (cap 2)" in said
    assert "1.40 (1.20-1.60)x the one host's." in said


def test_a_partial_run_joins_the_stored_results(tmp_path):
    old = [
        _run("uncapped", 0, 4, 20.0),
        _run("pacer-12", 0, 2, 20.0),
        _fleet_run("two-hosts", "fleet-12", 0, 40, 2),
    ]
    meta = {"command": "./tasks.sh bench", "date": "2026-11-30", "hold": 4.0, "final_hold": 4.0, "cap": 2}
    saved = {"meta": meta, "results": old}
    new_meta = {
        "command": "./tasks.sh bench --workloads two-hosts",
        "date": "2026-12-01",
        "machine": "2 cores",
        "seconds": 1200.0,
        "repeats": 3,
        "hold": 4.0,
        "final_hold": 4.0,
        "cap": 2,
    }
    new = [_fleet_run("two-hosts", "fleet-12", r, 30.0, 2) for r in range(2)]
    got_meta, got = store.merge(saved, new_meta, new)
    # The stored cells it did not measure stay, in their order; its own cell replaces the stored one.
    assert [(r["strategy"], r["repeat"]) for r in got] == [
        ("uncapped", 0),
        ("pacer-12", 0),
        ("fleet-12", 0),
        ("fleet-12", 1),
    ]
    assert got_meta["command"] == "./tasks.sh bench"
    assert got_meta["later_runs"][0]["cells"] == [["0.19.0", "two-hosts", "fleet-12"]]
    assert (
        "The rows of 8 cards over two hosts, one endpoint came from `./tasks.sh bench --workloads two-hosts`"
        in (report._later_runs(got_meta, got))
    )
    # Nothing stored: the run is the whole store.
    assert store.merge(None, new_meta, new) == (new_meta, new)
    # A store made with other holds cannot take the run's rows.
    path = tmp_path / "bench.json"
    path.write_text(json.dumps({"meta": {**meta, "hold": 1.0}, "results": old}))
    with pytest.raises(SystemExit, match="hold 4"):
        store.load(path, {"hold": 4.0, "final_hold": 4.0, "cap": 2})
    assert store.load(tmp_path / "missing.json", new_meta) is None


@pytest.mark.slow
def test_quick_bench_runs_every_strategy_and_workload_to_the_end(tmp_path):
    page = (REPO / "docs" / "benchmark.md").read_text()
    newest = hermes_install.versions()[-1]
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--versions", newest, "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "bench.json").read_text())["results"]
    ran = {(r["workload"], r["strategy"]) for r in results}
    assert {("one-board", "uncapped"), ("one-board", "recipe"), ("one-board", "pacer-30")} <= ran
    assert {("two-boards", "pacer-30"), ("foreign", "pacer-30"), ("outage", "pacer-30")} <= ran
    assert ("outage", "uncapped") in ran
    for result in results:
        assert result["figures"]["completed"], result["label"]
        assert result["raw"]["requests"] and result["raw"]["cards"], result["label"]
        assert result["figures"]["cpu_per_pass"] is not None, result["label"]
        assert result["repeat"] == 0
    by_workload = {r["workload"]: r for r in results if r["strategy"] == "pacer-30"}
    assert len(by_workload["two-boards"]["raw"]["boards"]) == 2
    assert by_workload["two-boards"]["figures"]["endpoint_cap"] == 2
    assert by_workload["foreign"]["figures"]["endpoint_cap"] == 3
    assert any(board == "foreign" for _, _, board, *_ in by_workload["foreign"]["raw"]["requests"])
    down, up = by_workload["outage"]["raw"]["outage"]
    assert up > down
    assert by_workload["outage"]["figures"]["hung_workers"] is not None
    fleet = next(r for r in results if r["workload"] == "two-hosts")
    assert fleet["raw"]["hosts"] == [[board] for board in fleet["raw"]["boards"]] and fleet["raw"]["fleet"]
    assert not any(r["workload"] == "one-host" for r in results)  # its yardstick is the full run's
    assert (tmp_path / "requests-in-flight.png").read_bytes().startswith(b"\x89PNG")
    table = (tmp_path / "table.md").read_text()
    assert (
        "| hermes-pacer, 30 passes/min" in table and "The endpoint down in the middle of the burst" in table
    )
    assert "in flight" in proc.stderr  # progress lines while it runs
    # --redraw makes the same table again from the raw series.
    (tmp_path / "table.md").unlink()
    redraw = [sys.executable, "-m", "bench", "--quick", "--redraw", "--out", str(tmp_path)]
    subprocess.run(redraw, cwd=REPO, capture_output=True, timeout=300, check=True)
    assert (tmp_path / "table.md").read_text() == table
    assert (REPO / "docs" / "benchmark.md").read_text() == page  # --quick leaves the docs alone
