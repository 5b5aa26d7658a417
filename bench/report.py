"""The benchmark's outputs: a markdown table (also spliced into docs/benchmark.md), JSON and a PNG plot."""

from __future__ import annotations

import os
import re
from pathlib import Path

from .figures import step_series

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def pct(value) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.1f}%" if value < 0.1 else f"{100 * value:.0f}%"


def num(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(results: list[dict]) -> str:
    head = (
        "| Hermes | workload | strategy | peak in flight | peak workers | slot use while work waits "
        "| endpoint use (bound) | makespan (x ideal, x pipelined) | CPU per pass | idle CPU per minute |\n"
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n"
    )
    rows = []
    for result in results:
        f, cap = result["figures"], result["cap"]
        done = "" if f["completed"] else " (not finished)"
        idle = (
            "-"
            if f["idle_cpu_per_minute"] is None
            else f"{f['idle_cpu_per_minute']:.2f} s ({pct(f['idle_core_share'])} of a core)"
        )
        rows.append(
            f"| {result['version']} | {result['workload_label']} | {result['label']}{done} "
            f"| {f['peak_in_flight']} / {cap} | {f['peak_workers']} / {cap} | {pct(f['slot_utilisation'])} "
            f"| {pct(f['endpoint_utilisation'])} ({pct(f['endpoint_bound'])}) "
            f"| {f['makespan']:.0f} s ({num(f['makespan_vs_ideal'])}x, {num(f['makespan_vs_pipelined'])}x) "
            f"| {num(f['cpu_per_pass'], 3)} s | {idle} |"
        )
    return head + "\n".join(rows) + "\n"


def findings(results: list[dict]) -> str:
    """What the table says, in sentences: the cap, the cadence, the baselines' peaks."""
    pacer = [r for r in results if r["strategy"].startswith("pacer")]
    over = [r for r in pacer if max(r["figures"]["peak_in_flight"], r["figures"]["peak_workers"]) > r["cap"]]
    held = len(pacer) - len(over)
    lines = [
        f"- hermes-pacer stayed at or under the cap, in flight and in live workers, in {held} of its "
        f"{len(pacer)} trials"
        + ("." if not over else f"; over it in: {', '.join(r['version'] + ' ' + r['label'] for r in over)}.")
    ]
    for result in (r for r in results if r["workload"] == "one-board"):
        f, name = result["figures"], f"Hermes {result['version']}, {result['label']}"
        if result in pacer:
            lines.append(
                f"- {name}: slot use {pct(f['slot_utilisation'])} while work waited, makespan "
                f"{num(f['makespan_vs_ideal'])}x the ideal, "
                f"{num(f['idle_cpu_per_minute'], 2)} s of CPU a minute when idle."
            )
        else:
            lines.append(
                f"- {name}: up to {f['peak_in_flight']} requests in flight and {f['peak_workers']} live "
                f"workers against a cap of {result['cap']}."
            )
    return "\n".join(lines) + "\n"


def section(results: list[dict], meta: dict, plot_path: str, page_dir: str = ".") -> str:
    """The benchmark block of a page in `page_dir` (repository-relative): how it was made, the table,
    the plot. Links are made relative to that page, so the plot shows wherever the block goes."""
    json_path = meta["json_path"]
    return (
        f"{BEGIN}\n"
        f"Produced by `{meta['command']}` on {meta['date']} ({meta['machine']}); {meta['duration']}. "
        f"Peaks are per board against the cap of {meta['cap']}; the endpoint held each call "
        f"{meta['hold']:g} s (the final reply {meta['final_hold']:g} s). Raw series: "
        f"[`{json_path}`]({link(json_path, page_dir)}).\n\n"
        f"{table(results)}\n"
        f"{findings(results)}\n"
        f"![requests in flight at the endpoint over time, one line per strategy]"
        f"({link(plot_path, page_dir)})\n"
        f"{END}"
    )


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
    """Requests in flight over time: one panel per Hermes release and workload, a line per strategy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(r["version"], r["workload"], r["workload_label"]) for r in results})
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 3.2 * len(panels)), squeeze=False)
    for axis, (version, workload, label) in zip(axes[:, 0], panels, strict=True):
        limit, label_cap = 0, ""
        for result in (r for r in results if (r["version"], r["workload"]) == (version, workload)):
            series = step_series([(start, end) for start, end, _ in result["raw"]["requests"]])
            times = [0.0] + [t for t, _ in series]
            counts = [0] + [c for _, c in series]
            axis.step(times, counts, where="post", label=result["label"], linewidth=1.4)
            boards = len(result["raw"]["boards"])
            limit = result["cap"] * boards
            label_cap = f"cap ({result['cap']})" if boards == 1 else f"{boards} boards x cap {result['cap']}"
        axis.axhline(limit, color="black", linestyle="--", linewidth=1, label=label_cap)
        axis.set_title(f"Hermes {version}, {label}")
        axis.set_xlabel("seconds since the burst")
        axis.set_ylabel("requests in flight")
        axis.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
