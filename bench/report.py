"""The benchmark's outputs: a markdown table (also spliced into docs/benchmark.md), JSON and a PNG plot."""

from __future__ import annotations

import os
import re
from pathlib import Path

from . import figures
from .figures import step_series

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def pct(value) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.1f}%" if value < 0.1 else f"{100 * value:.0f}%"


def num(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def cells(results: list[dict]) -> list[list[dict]]:
    """The runs of each cell (release x workload x strategy), cells in the order they first ran."""
    grouped: dict[tuple, list[dict]] = {}
    for result in results:
        grouped.setdefault((result["version"], result["workload"], result["strategy"]), []).append(result)
    return list(grouped.values())


def spread(summary: dict | None, show) -> str:
    """A figure over the runs of a cell: its median, and its range when the runs differ."""
    if summary is None:
        return "-"
    if summary["n"] < 2 or show(summary["min"]) == show(summary["max"]):
        return show(summary["median"])
    return f"{show(summary['median'])} ({show(summary['min'])}-{show(summary['max'])})"


def _integer(value) -> str:
    return f"{value:g}" if value == int(value) else f"{value:.1f}"


def _seconds(value) -> str:
    return f"{value:.0f} s" if value >= 10 else f"{value:.1f} s"


def table(results: list[dict]) -> str:
    head = (
        "| Hermes | workload | strategy | runs | peak in flight at the endpoint / its cap "
        "| peak workers per board / board cap | slot use while work waits | endpoint use (bound) "
        "| makespan (x ideal) | refill p95 | CPU per pass | idle CPU per minute |\n"
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n"
    )
    rows = []
    for runs in cells(results):
        first, s = runs[0], figures.cell_summary(runs)
        missed = sum(not run["figures"]["completed"] for run in runs)
        done = f" ({missed} not finished)" if missed else ""
        endpoint_cap = first["figures"].get("endpoint_cap", first["cap"])
        rows.append(
            f"| {first['version']} | {first['workload_label']} | {first['label']}{done} | {len(runs)} "
            f"| {spread(s.get('endpoint_peak_total'), _integer)} / {endpoint_cap} "
            f"| {spread(s['peak_workers'], _integer)} / {first['cap']} "
            f"| {spread(s['slot_utilisation'], pct)} "
            f"| {spread(s['endpoint_utilisation'], pct)} ({spread(s['endpoint_bound'], pct)}) "
            f"| {spread(s['makespan'], _seconds)} ({spread(s['makespan_vs_ideal'], num)}x) "
            f"| {spread(s.get('refill_p95'), _seconds)} "
            f"| {spread(s['cpu_per_pass'], lambda v: num(v, 3) + ' s')} "
            f"| {_idle(s)} |"
        )
    return head + "\n".join(rows) + "\n" + _outage_table(results) + _fleet_table(results)


def _idle(s: dict) -> str:
    if s["idle_cpu_per_minute"] is None:
        return "-"
    per_minute = spread(s["idle_cpu_per_minute"], lambda v: num(v, 2) + " s")
    return f"{per_minute} ({spread(s['idle_core_share'], pct)} of a core)"


def _outage_table(results: list[dict]) -> str:
    outage = [runs for runs in cells(results) if runs[0]["raw"].get("outage")]
    if not outage:
        return ""
    rows = []
    for runs in outage:
        first, s = runs[0], figures.cell_summary(runs)
        down = first["raw"]["outage"]
        rows.append(
            f"| {first['version']} | {first['label']} | {len(runs)} "
            f"| {_seconds(down[0])}, {_seconds(down[-1] - down[0])} "
            f"| {spread(s['failed_cards'], _integer)} / {len(first['raw']['cards']) or '-'} "
            f"| {spread(s['hung_workers'], _integer)} "
            f"| {spread(s['recovery_spawns'], _integer)} "
            f"| {spread(s['makespan'], _seconds)} |"
        )
    return (
        "\nThe endpoint down in the middle of the burst:\n\n"
        "| Hermes | strategy | runs | down at, for | cards that failed | workers that hung "
        f"| spawns within {figures.RECOVERY_WINDOW:g} s of recovery | makespan |\n"
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n" + "\n".join(rows) + "\n"
    )


def is_pacer(result: dict) -> bool:
    """A strategy that is hermes-pacer as the role sets it up (a fleet's hosts as a fleet); "alone-"
    is the pacer on several hosts without a fleet, the baseline of the fleet workload."""
    return result["strategy"].startswith(("pacer", "fleet"))


def versus_yardstick(results: list[dict]) -> dict[tuple, dict | None]:
    """Each cell's makespan against its workload's yardstick (the same cards on one host): every
    run's makespan over the median of the yardstick cell of its release; by cell."""
    medians = {}
    for runs in cells(results):
        first = runs[0]
        key = (first["version"], first["workload"])
        medians.setdefault(key, figures.summary([run["figures"]["makespan"] for run in runs]))
    ratios = {}
    for runs in cells(results):
        first = runs[0]
        yardstick = medians.get((first["version"], first["raw"].get("yardstick")))
        ratios[(first["version"], first["workload"], first["strategy"])] = (
            figures.summary([run["figures"]["makespan"] / yardstick["median"] for run in runs])
            if yardstick and yardstick["median"]
            else None
        )
    return ratios


def _fleet_table(results: list[dict]) -> str:
    """The workloads of several hosts on one endpoint, beside their one-host yardstick."""
    fleet = [runs for runs in cells(results) if len(runs[0]["raw"].get("hosts") or []) > 1]
    if not fleet:
        return ""
    yardsticks = {(runs[0]["version"], runs[0]["raw"].get("yardstick")) for runs in fleet}
    shown = fleet + [
        runs for runs in cells(results) if (runs[0]["version"], runs[0]["workload"]) in yardsticks
    ]
    ratios = versus_yardstick(results)
    yardstick_workloads = {workload for _, workload in yardsticks}
    rows = []
    for runs in shown:
        first, s = runs[0], figures.cell_summary(runs)
        ratio = ratios[(first["version"], first["workload"], first["strategy"])]
        # No yardstick ran (a quick run): no ratio.
        versus = "the yardstick" if first["workload"] in yardstick_workloads else spread(ratio, num)
        rows.append(
            f"| {first['version']} | {first['workload_label']} | {first['label']} | {len(runs)} "
            f"| {spread(s['endpoint_peak_total'], _integer)} / {first['figures']['endpoint_cap']} "
            f"| {spread(s['peak_workers'], _integer)} "
            f"| {spread(s['endpoint_utilisation'], pct)} "
            f"| {spread(s['makespan'], _seconds)} "
            f"| {versus}{'' if ratio is None else 'x'} |"
        )
    return (
        "\nSeveral hosts on one endpoint, beside the same cards on one host:\n\n"
        "| Hermes | workload | strategy | runs | peak in flight at the endpoint / its cap "
        "| peak workers a host | endpoint use while work waits | makespan | makespan x one host |\n"
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n" + "\n".join(rows) + "\n"
    )


def findings(results: list[dict]) -> str:
    """What the table says, in sentences: the caps, the baselines' peaks, the new workloads."""
    pacer = [r for r in results if is_pacer(r)]
    over = [
        r
        for r in pacer
        if r["figures"]["peak_workers"] > r["cap"]
        or r["figures"].get("endpoint_peak_total", 0) > r["figures"].get("endpoint_cap", r["cap"])
    ]
    lines = [
        f"- hermes-pacer stayed at or under the caps (live workers per board, requests in flight at "
        f"the endpoint, foreign ones included) in {len(pacer) - len(over)} of its {len(pacer)} runs"
        + (
            "."
            if not over
            else "; over in: " + ", ".join(f"{r['version']} {r['workload']} {r['label']}" for r in over) + "."
        )
    ]
    ratios = versus_yardstick(results)
    for runs in cells(results):
        first, s = runs[0], figures.cell_summary(runs)
        name = f"Hermes {first['version']}, {first['workload']}, {first['label']}"
        cap = first["figures"].get("endpoint_cap", first["cap"])
        ratio = ratios[(first["version"], first["workload"], first["strategy"])]
        if len(first["raw"].get("hosts") or []) > 1:
            lines.append(
                f"- {name}: peak in flight at the endpoint {spread(s['endpoint_peak_total'], _integer)} "
                f"(cap {cap}), endpoint use {spread(s['endpoint_utilisation'], pct)} while work waited, "
                f"makespan {spread(s['makespan'], _seconds)}"
                + ("." if ratio is None else f", {spread(ratio, num)}x the one host's.")
            )
        elif first["workload"] == "outage":
            lines.append(
                f"- {name}: {spread(s['failed_cards'], _integer)} cards failed, "
                f"{spread(s['hung_workers'], _integer)} workers hung, "
                f"{spread(s['recovery_spawns'], _integer)} spawns within "
                f"{figures.RECOVERY_WINDOW:g} s of recovery."
            )
        elif is_pacer(first):
            lines.append(
                f"- {name}: peak in flight at the endpoint {spread(s['endpoint_peak_total'], _integer)} "
                f"(cap {cap}), slot use {spread(s['slot_utilisation'], pct)} while work waited, "
                f"makespan {spread(s['makespan_vs_ideal'], num)}x the ideal, refill p95 "
                f"{spread(s.get('refill_p95'), _seconds)}"
                + (
                    "."
                    if s["idle_cpu_per_minute"] is None
                    else f", {spread(s['idle_cpu_per_minute'], lambda v: num(v, 2))} s of CPU a minute "
                    "when idle."
                )
            )
        else:
            lines.append(
                f"- {name}: up to {spread(s['endpoint_peak_total'], _integer)} requests in flight at "
                f"the endpoint (cap {cap}) and {spread(s['peak_workers'], _integer)} live workers a "
                f"board (cap {first['cap']})."
            )
    return "\n".join(lines) + "\n"


def section(results: list[dict], meta: dict, plot_path: str, page_dir: str = ".") -> str:
    """The benchmark block of a page in `page_dir` (repository-relative): how it was made, the table,
    the plot. Links are made relative to that page, so the plot shows wherever the block goes."""
    json_path = meta["json_path"]
    return (
        f"{BEGIN}\n"
        f"Produced by `{meta['command']}` on {meta['date']} ({meta['machine']}); {meta['duration']}. "
        f"{_runs_sentence(meta.get('repeats', 1), meta.get('outage_repeats', 1))} "
        f"The endpoint held each call "
        f"{meta['hold']:g} s (the final reply {meta['final_hold']:g} s).{_later_runs(meta, results)} "
        f"Raw series of every run: [`{json_path}`]({link(json_path, page_dir)}).\n\n"
        f"{table(results)}\n"
        f"{findings(results)}\n"
        f"![requests in flight at the endpoint over time, one line per strategy]"
        f"({link(plot_path, page_dir)})\n"
        f"{END}"
    )


def _later_runs(meta: dict, results: list[dict]) -> str:
    """A sentence for each later run that added or measured again some cells (bench/store.py)."""
    labels = {(r["version"], r["workload"], r["strategy"]): r for r in results}
    sentences = []
    for run in meta.get("later_runs", []):
        workloads = list(
            dict.fromkeys(labels[tuple(c)]["workload_label"] for c in run["cells"] if tuple(c) in labels)
        )
        sentences.append(
            f" The rows of {_and(workloads)} came from `{run['command']}` on {run['date']} "
            f"({run['machine']}), each cell {_times(run['repeats'])}; that run took "
            f"{run['seconds'] / 60:.0f} min."
        )
    return "".join(sentences)


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _runs_sentence(repeats: int, outage_repeats: int) -> str:
    if repeats == 1:
        return "Each cell ran once."
    outage = "" if outage_repeats == repeats else f" (the outage cells {_times(outage_repeats)})"
    return (
        f"Each cell ran {_times(repeats)}{outage}: a figure is the median, its range (min-max) beside "
        "it when the runs differ."
    )


def _times(count: int) -> str:
    return "once" if count == 1 else f"{count} times"


def link(path: str, page_dir: str) -> str:
    """A repository-relative path as a link from a page in page_dir; an absolute one stays."""
    return path if os.path.isabs(path) else os.path.relpath(path, page_dir)


def splice(page: Path, block: str) -> None:
    """Replace the page's benchmark block (between the markers) with a new one."""
    text = page.read_text()
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise SystemExit(f"{page}: no {BEGIN} … {END} block to replace")
    page.write_text(pattern.sub(lambda _: block, text))


def plot(results: list[dict], path: Path) -> None:
    """Requests in flight at the endpoint over time (foreign ones included): one panel per Hermes
    release and workload, a line per strategy (its first run), the endpoint's cap dashed, each run's
    outage shaded in its colour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    firsts = [runs[0] for runs in cells(results)]
    panels = list(dict.fromkeys((r["version"], r["workload"], r["workload_label"]) for r in firsts))
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 3.2 * len(panels)), squeeze=False)
    for axis, (version, workload, label) in zip(axes[:, 0], panels, strict=True):
        limit = 0
        for result in (r for r in firsts if (r["version"], r["workload"]) == (version, workload)):
            series = step_series([(request[0], request[1]) for request in result["raw"]["requests"]])
            times = [0.0] + [t for t, _ in series]
            counts = [0] + [c for _, c in series]
            (line,) = axis.step(times, counts, where="post", label=result["label"], linewidth=1.4)
            limit = result["figures"].get("endpoint_cap", result["cap"])
            # Each run's outage starts from its own first request: shaded in its line's colour.
            outage = result["raw"].get("outage")
            if outage and len(outage) == 2:
                axis.axvspan(outage[0], outage[1], color=line.get_color(), alpha=0.12)
        axis.axhline(limit, color="black", linestyle="--", linewidth=1, label=f"endpoint cap ({limit})")
        axis.set_title(f"Hermes {version}, {label}")
        axis.set_xlabel("seconds since the burst")
        axis.set_ylabel("requests in flight")
        axis.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
