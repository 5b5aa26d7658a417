"""invoke bench: what the GPU sees under each pacing strategy, side by side.

python -m bench [--quick] [--repeats 3] [--cards 8] [--cap 2] [--versions 0.14.0,0.19.0] [--no-docs]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

from . import figures, report, store
from .harness import REPO, Lab, Settings, Workload, hermes_install, run_trial
from .strategies import catalogue

# The page whose benchmark block a full run replaces.
DOC = REPO / "docs" / "benchmark.md"

# The full run, per workload: the strategies on the newest release, then on the oldest (only the
# one-board burst: the new workloads measure the pacer's endpoint budget, the same code on both).
# Trimmed to stay near 35 minutes on 2 cores (docs/benchmark.md says what and why): 4 passes a
# minute is left out (--strategies pacer-4 runs it), and the manual recipe runs only on the newest
# release's one board, where it counts cards as native does everywhere.
# The two-hosts workload is a fleet of two Hermes hosts on one endpoint; one-host is its yardstick
# (the same cards on one host) and runs whenever two-hosts does, but in a quick run.
NEWEST = {
    "one-board": ["uncapped", "native", "recipe", "pacer-12", "pacer-30"],
    "two-boards": ["uncapped", "native", "pacer-12"],
    "foreign": ["uncapped", "native", "pacer-12"],
    "outage": ["uncapped", "native", "pacer-12"],
    "two-hosts": ["alone-12", "fleet-12", "fleet-static-12"],
    "one-host": ["pacer-12"],
}
OLDEST = {"one-board": ["uncapped", "pacer-12"]}
QUICK = {
    "one-board": ["uncapped", "native", "recipe", "pacer-30"],
    "two-boards": ["native", "pacer-30"],
    "foreign": ["pacer-30"],
    "outage": ["uncapped", "pacer-30"],
    # The fleet's plumbing (two hosts, each in its PID namespace, taking turns on one endpoint); the
    # comparison with one host is the full run's.
    "two-hosts": ["fleet-12"],
}
# Cards on each host of the two-hosts workload (issue #15's figure: 4 a host, 8 in all); quick: 2.
FLEET_CARDS = 4


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="invoke bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="a short run: newest Hermes, one run a cell, 3 cards, 1 s calls"
    )
    parser.add_argument("--repeats", type=int, help="runs of every cell (default 3; quick 1)")
    parser.add_argument(
        "--outage-repeats",
        type=int,
        help="runs of every outage cell (default 1, at most --repeats: a run takes a minute and a half, "
        "and its figures are counts)",
    )
    parser.add_argument("--cards", type=int, help="cards of the burst (default 6; quick 3)")
    parser.add_argument(
        "--cap",
        type=int,
        default=2,
        help="each board's cap and the endpoint's (default 2; the foreign workload: one more)",
    )
    parser.add_argument(
        "--hold", type=float, help="seconds the endpoint holds each call (default 4; quick 1)"
    )
    parser.add_argument(
        "--outage-seconds",
        type=float,
        help="how long the endpoint is down in the outage workload (default 60)",
    )
    parser.add_argument(
        "--versions", help="hermes-agent releases, comma-separated (default: the pinned ones)"
    )
    parser.add_argument("--workloads", help=f"workloads, comma-separated, of: {', '.join(NEWEST)}")
    parser.add_argument(
        "--strategies",
        help=f"strategies of every workload, comma-separated, of: {', '.join(catalogue(15))}",
    )
    parser.add_argument("--baseline-cadence", type=float, help="seconds between baseline passes (default 15)")
    parser.add_argument(
        "--idle-seconds",
        type=float,
        help="idle spell measured after each one-board trial's first run (default: one period of its "
        "driver, at least 15 s; quick 5)",
    )
    parser.add_argument("--out", type=Path, help="where the JSON, table and plot go (default bench/results)")
    parser.add_argument(
        "--no-docs",
        "--no-readme",  # its name before the table moved out of the README
        dest="no_docs",
        action="store_true",
        help=f"leave the benchmark block of {DOC.relative_to(REPO)} alone",
    )
    parser.add_argument(
        "--redraw",
        action="store_true",
        help="run no trial: draw the plot and the table again from the last run's bench.json",
    )
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    quick = args.quick
    # A run of part of the plan joins the stored results (bench/store.py); a full run replaces them.
    args.partial = not quick and bool(args.workloads or args.strategies or args.versions)
    args.repeats = args.repeats or (1 if quick else 3)
    args.outage_repeats = min(args.repeats, args.outage_repeats or 1)
    args.cards = args.cards or (3 if quick else 6)
    args.hold = args.hold or (1.0 if quick else 4.0)
    args.outage_seconds = args.outage_seconds or (10.0 if quick else 60.0)
    args.baseline_cadence = args.baseline_cadence or (3.0 if quick else 15.0)
    if args.idle_seconds is None and quick:
        args.idle_seconds = 5.0
    args.out = args.out or REPO / "bench" / "results" / ("quick" if quick else "")
    chosen = args.versions.split(",") if args.versions else list(hermes_install.versions())
    args.versions = chosen[-1:] if quick and not args.versions else chosen
    known = catalogue(args.baseline_cadence)
    args.strategies = args.strategies.split(",") if args.strategies else None
    args.workloads = args.workloads.split(",") if args.workloads else None
    unknown = [key for key in args.strategies or [] if key not in known]
    unknown += [key for key in args.workloads or [] if key not in NEWEST]
    if unknown:
        parser.error(
            f"unknown strategy or workload {', '.join(unknown)} "
            f"(strategies: {', '.join(known)}; workloads: {', '.join(NEWEST)})"
        )
    if (
        min(args.cards, args.cap, args.repeats, args.outage_repeats) < 1
        or min(args.hold, args.outage_seconds) <= 0
    ):
        parser.error(
            "--cards, --cap, --repeats and --outage-repeats must be 1 or more, --hold and --outage-seconds "
            "more than 0"
        )
    return args


def _plan(args: argparse.Namespace) -> list[tuple[str, str, str]]:
    """(release, workload, strategy) of every cell, in the order they run."""
    cells = []
    for version in args.versions:
        table = QUICK if args.quick else NEWEST if version == args.versions[-1] else OLDEST
        # A workload asked for by name runs even on a release whose default plan leaves it out.
        chosen = list(args.workloads or table)
        for workload in chosen:
            strategies = args.strategies or table.get(workload) or NEWEST[workload]
            cells += [(version, workload, key) for key in strategies]
        # A workload's yardstick runs beside it (with its own strategies) even when not named; a quick
        # run proves the harness, not the figures, and leaves it out.
        yardsticks = set() if args.quick else {_workloads(args)[workload].yardstick for workload in chosen}
        yardsticks -= {None, *chosen}
        for yardstick in sorted(yardsticks):
            cells += [(version, yardstick, key) for key in table.get(yardstick) or NEWEST[yardstick]]
    return cells


def _workloads(args: argparse.Namespace) -> dict[str, Workload]:
    cap, cards = args.cap, args.cards
    # At least two a board: with one, nothing waits for a slot.
    per_board = max(2, cards // 2)
    per_host = 2 if args.quick else FLEET_CARDS
    return {
        "one-board": Workload("one-board", f"{cards} cards, one board", 1, cards, cap, cap),
        "two-boards": Workload(
            "two-boards",
            f"{2 * per_board} cards over two boards, one endpoint",
            2,
            per_board,
            cap,
            cap,
            idle=False,
        ),
        "foreign": Workload(
            "foreign", f"{cards} cards beside 1 foreign request", 1, cards, cap + 1, cap + 1, False, foreign=1
        ),
        "outage": Workload(
            "outage",
            f"{cards} cards, endpoint down {args.outage_seconds:g} s",
            1,
            cards,
            cap,
            cap,
            idle=False,
            outage=True,
        ),
        # Two Hermes hosts, each a board of its own and a PID namespace of its own, on one endpoint.
        "two-hosts": Workload(
            "two-hosts",
            f"{2 * per_host} cards over two hosts, one endpoint",
            1,
            per_host,
            cap,
            cap,
            idle=False,
            hosts=2,
            pid_namespaces=True,
            yardstick="one-host",
        ),
        # The same cards on one host, paced the same way: what the fleet's makespan compares with.
        "one-host": Workload(
            "one-host",
            f"{2 * per_host} cards, one host",
            1,
            2 * per_host,
            cap,
            cap,
            idle=False,
            pid_namespaces=True,
        ),
    }


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    if args.redraw:
        return _redraw(args)
    # Before any trial: a run that cannot join the stored results says so at once.
    saved = (
        store.load(args.out / "bench.json", {"hold": args.hold, "final_hold": args.hold, "cap": args.cap})
        if args.partial
        else None
    )
    known = catalogue(args.baseline_cadence)
    workloads = _workloads(args)
    settings = Settings(
        cap=args.cap,
        hold=args.hold,
        final_hold=args.hold,
        idle_seconds=args.idle_seconds,
        timeout=max(300.0, 20 * args.cards * (2 * args.hold + 5)) + 2 * args.hold + args.outage_seconds,
        outage_at=2 * args.hold,
        outage_seconds=args.outage_seconds,
        hang_after=10.0 if args.quick else 30.0,
    )
    cells = [
        (version, workloads[workload], known[key])
        for version, workload, key in _plan(args)
        if known[key].available(version)
    ]
    # Repeat after repeat of the whole plan, so a slow spell of the machine spreads over every cell.
    trials = [
        (repeat, *cell)
        for repeat in range(args.repeats)
        for cell in cells
        if repeat < (args.outage_repeats if cell[1].outage else args.repeats)
    ]
    started = time.monotonic()
    results = []
    with tempfile.TemporaryDirectory(prefix="hermes-pacer-bench-") as scratch:
        labs: dict[str, Lab] = {}
        try:
            for index, (repeat, version, workload, strategy) in enumerate(trials, 1):
                prefix = (
                    f"[{index}/{len(trials)}] run {repeat + 1}/{args.repeats} · hermes {version} · "
                    f"{workload.label} · {strategy.label}"
                )
                print(prefix, file=sys.stderr, flush=True)
                if version not in labs:
                    labs[version] = Lab(version, Path(scratch), settings)

                def say(text: str) -> None:
                    print(f"    {text}", file=sys.stderr, flush=True)

                # The idle cost hardly varies from run to run: measured on the first only.
                raw = run_trial(labs[version], strategy, workload, say, idle=repeat == 0)
                result = {
                    "version": version,
                    "workload": workload.key,
                    "workload_label": workload.label,
                    "strategy": strategy.key,
                    "label": strategy.label,
                    "repeat": repeat,
                    "cap": workload.cap,
                    "figures": figures.trial_figures(raw, workload.cap),
                    "raw": raw,
                }
                f = result["figures"]
                say(
                    f"peak at the endpoint {f['endpoint_peak_total']} (cap {f['endpoint_cap']}), "
                    f"peak workers {f['peak_workers']}, slot use {report.pct(f['slot_utilisation'])}, "
                    f"makespan {f['makespan']:.0f} s ({report.num(f['makespan_vs_ideal'])}x ideal), "
                    f"refill p95 {report.num(f['refill_p95'], 1)} s"
                    + (
                        f"; failed cards {f['failed_cards']}, hung workers {f['hung_workers']}, "
                        f"spawns after recovery {f['recovery_spawns']}"
                        if workload.outage
                        else ""
                    )
                )
                results.append(result)
                # Kept as it goes: an interrupted run still leaves what it measured.
                args.out.mkdir(parents=True, exist_ok=True)
                (args.out / "bench.partial.json").write_text(json.dumps({"results": results}) + "\n")
        finally:
            for lab in labs.values():
                lab.close()
    return _write(args, results, time.monotonic() - started, saved)


def _write(args: argparse.Namespace, results: list[dict], seconds: float, saved: dict | None = None) -> int:
    meta = {
        "command": shlex.join(["./tasks.sh", "bench", *args.argv]),
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "machine": f"{os.cpu_count()} cores, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}",
        "duration": f"the whole run took {seconds / 60:.0f} min",
        "cap": args.cap,
        "repeats": args.repeats,
        "outage_repeats": args.outage_repeats,
        "outage_seconds": args.outage_seconds,
        "hold": args.hold,
        "final_hold": args.hold,
        "json_path": _relative(args.out / "bench.json"),
        "seconds": seconds,
    }
    stored_meta, stored = store.merge(saved, meta, results)
    _outputs(args, stored_meta, stored)
    (args.out / "bench.partial.json").unlink(missing_ok=True)
    missed = [r for r in results if not r["figures"]["completed"]]
    return 1 if missed else 0


def _redraw(args: argparse.Namespace) -> int:
    """The outputs of the last run again, from its raw series (after a change to the report)."""
    json_path = args.out / "bench.json"
    if not json_path.is_file():
        raise SystemExit(f"invoke bench: --redraw needs a finished run's {json_path}")
    saved = json.loads(json_path.read_text())
    for result in saved["results"]:
        result["figures"] = figures.trial_figures(result["raw"], result["cap"])
    _outputs(args, saved["meta"], saved["results"])
    return 0


def _outputs(args: argparse.Namespace, meta: dict, results: list[dict]) -> None:
    """bench.json, the plot, table.md, the table on stdout and, unless told not to, the docs' block."""
    args.out.mkdir(parents=True, exist_ok=True)
    json_path, plot_path = args.out / "bench.json", args.out / "requests-in-flight.png"
    json_path.write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
    report.plot(results, plot_path)
    plot = _relative(plot_path)
    (args.out / "table.md").write_text(report.section(results, meta, plot, _relative(args.out)) + "\n")
    print(report.table(results))
    print(f"written: {json_path}, {plot_path}, {args.out / 'table.md'}", file=sys.stderr)
    if not args.no_docs and not args.quick:
        report.splice(DOC, report.section(results, meta, plot, str(DOC.parent.relative_to(REPO))))
        print(f"{DOC.relative_to(REPO)}: benchmark block replaced", file=sys.stderr)


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    sys.exit(main())
