"""The benchmark: its arithmetic on made-up series, and one short run of the real harness.

The figures themselves belong to `./tasks.sh bench` and docs/benchmark.md; here only that the harness
works end to end (every strategy ran to the end, every output was written).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import hermes_install
import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import figures, report  # noqa: E402


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


@pytest.mark.hermes
def test_quick_bench_runs_every_strategy_to_the_end(tmp_path):
    page = (REPO / "docs" / "benchmark.md").read_text()
    newest = hermes_install.versions()[-1]
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--versions", newest, "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "bench.json").read_text())["results"]
    ran = {(r["workload"], r["strategy"]) for r in results}
    assert {("one-board", "uncapped"), ("one-board", "recipe"), ("one-board", "pacer-30")} <= ran
    assert ("two-boards", "pacer-30") in ran
    for result in results:
        assert result["figures"]["completed"], result["label"]
        assert result["raw"]["requests"] and result["raw"]["cards"], result["label"]
        assert result["figures"]["cpu_per_pass"] is not None, result["label"]
    assert (tmp_path / "requests-in-flight.png").read_bytes().startswith(b"\x89PNG")
    assert "| hermes-pacer, 30 passes/min" in (tmp_path / "table.md").read_text()
    assert "in flight" in proc.stderr  # progress lines while it runs
    assert (REPO / "docs" / "benchmark.md").read_text() == page  # --quick leaves the docs alone
