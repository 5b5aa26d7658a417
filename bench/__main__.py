"""invoke bench: what the GPU sees under each pacing strategy, side by side.

python -m bench [--quick] [--cards 8] [--cap 2] [--versions 0.14.0,0.19.0] [--no-docs]
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

from . import figures, report
from .harness import REPO, Lab, Settings, Workload, hermes_install, run_trial
from .strategies import catalogue

# The page whose benchmark block a full run replaces.
DOC = REPO / "docs" / "benchmark.md"

# The full run: every strategy on the newest release; on the oldest, the baselines it has and the
# pacer at the role's default cadence; the two-board burst paced on both.
ONE_BOARD = ["uncapped", "native", "recipe", "pacer-4", "pacer-12", "pacer-30"]
OLDEST_ONE_BOARD = ["uncapped", "recipe", "pacer-12"]
TWO_BOARDS = ["pacer-12"]
QUICK_ONE_BOARD = ["uncapped", "native", "recipe", "pacer-30"]
QUICK_TWO_BOARDS = ["pacer-30"]


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="invoke bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run: newest Hermes, 3 cards, 1 s calls")
    parser.add_argument("--cards", type=int, help="cards of the burst (default 8; quick 3)")
    parser.add_argument("--cap", type=int, default=2, help="the cap every strategy is given (default 2)")
    parser.add_argument(
        "--hold", type=float, help="seconds the endpoint holds each call (default 8; quick 1)"
    )
    parser.add_argument(
        "--versions", help="hermes-agent releases, comma-separated (default: the pinned ones)"
    )
    parser.add_argument(
        "--strategies", help=f"one-board strategies, comma-separated, of: {', '.join(catalogue(15))}"
    )
    parser.add_argument("--baseline-cadence", type=float, help="seconds between baseline passes (default 15)")
    parser.add_argument(
        "--idle-seconds",
        type=float,
        help="idle spell measured after each one-board trial (default: one period of its driver, "
        "at least 15 s; quick 5)",
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
    args.cards = args.cards or (3 if quick else 8)
    args.hold = args.hold or (1.0 if quick else 8.0)
    args.baseline_cadence = args.baseline_cadence or (3.0 if quick else 15.0)
    if args.idle_seconds is None and quick:
        args.idle_seconds = 5.0
    args.out = args.out or REPO / "bench" / "results" / ("quick" if quick else "")
    chosen = args.versions.split(",") if args.versions else list(hermes_install.versions())
    args.versions = chosen[-1:] if quick and not args.versions else chosen
    known = catalogue(args.baseline_cadence)
    args.strategies = args.strategies.split(",") if args.strategies else None
    unknown = [key for key in args.strategies or [] if key not in known]
    if unknown or args.cards < 1 or args.cap < 1 or args.hold <= 0:
        parser.error(
            f"unknown strategy {', '.join(unknown)} (known: {', '.join(known)})"
            if unknown
            else "--cards and --cap must be 1 or more, --hold more than 0"
        )
    return args


def _plan(args: argparse.Namespace) -> list[tuple[str, str, str]]:
    """(release, workload, strategy) of every trial, in the order they run."""
    trials = []
    for version in args.versions:
        if args.strategies:
            one = args.strategies
        elif args.quick:
            one = QUICK_ONE_BOARD
        else:
            one = ONE_BOARD if version == args.versions[-1] else OLDEST_ONE_BOARD
        two = QUICK_TWO_BOARDS if args.quick else TWO_BOARDS
        trials += [(version, "one-board", key) for key in one] + [(version, "two-boards", key) for key in two]
    return trials


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    if args.redraw:
        return _redraw(args)
    known = catalogue(args.baseline_cadence)
    workloads = {
        "one-board": Workload("one-board", f"{args.cards} cards, one board", 1, args.cards),
        "two-boards": Workload(
            "two-boards", f"{args.cards} cards over two boards", 2, max(1, args.cards // 2), idle=False
        ),
    }
    settings = Settings(
        cap=args.cap,
        hold=args.hold,
        final_hold=args.hold,
        idle_seconds=args.idle_seconds,
        timeout=max(300.0, 20 * args.cards * (2 * args.hold + 5)),
    )
    trials = [
        (version, workloads[workload], known[key])
        for version, workload, key in _plan(args)
        if known[key].available(version)
    ]
    started = time.monotonic()
    results = []
    with tempfile.TemporaryDirectory(prefix="hermes-pacer-bench-") as scratch:
        labs: dict[str, Lab] = {}
        try:
            for index, (version, workload, strategy) in enumerate(trials, 1):
                prefix = f"[{index}/{len(trials)}] hermes {version} · {workload.label} · {strategy.label}"
                print(prefix, file=sys.stderr, flush=True)
                if version not in labs:
                    labs[version] = Lab(version, Path(scratch), settings)

                def say(text: str) -> None:
                    print(f"    {text}", file=sys.stderr, flush=True)

                raw = run_trial(labs[version], strategy, workload, say)
                result = {
                    "version": version,
                    "workload": workload.key,
                    "workload_label": workload.label,
                    "strategy": strategy.key,
                    "label": strategy.label,
                    "cap": args.cap,
                    "figures": figures.trial_figures(raw, args.cap),
                    "raw": raw,
                }
                f = result["figures"]
                say(
                    f"peak in flight {f['peak_in_flight']}, peak workers {f['peak_workers']}, "
                    f"slot use {report.pct(f['slot_utilisation'])}, makespan {f['makespan']:.0f} s "
                    f"({report.num(f['makespan_vs_ideal'])}x ideal)"
                )
                results.append(result)
                # Kept as it goes: an interrupted run still leaves what it measured.
                args.out.mkdir(parents=True, exist_ok=True)
                (args.out / "bench.partial.json").write_text(json.dumps({"results": results}) + "\n")
        finally:
            for lab in labs.values():
                lab.close()
    return _write(args, results, time.monotonic() - started)


def _write(args: argparse.Namespace, results: list[dict], seconds: float) -> int:
    meta = {
        "command": shlex.join(["./tasks.sh", "bench", *args.argv]),
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "machine": f"{os.cpu_count()} cores, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}",
        "duration": f"the whole run took {seconds / 60:.0f} min",
        "cap": args.cap,
        "hold": args.hold,
        "final_hold": args.hold,
        "json_path": _relative(args.out / "bench.json"),
        "seconds": seconds,
    }
    _outputs(args, meta, results)
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
