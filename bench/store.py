"""bench.json across runs: a run of part of the plan joins the stored results instead of replacing them.

A full run (`./tasks.sh bench`) measures every cell and replaces what is stored. A run that names
its workloads, strategies or releases measures only those cells: they replace the stored runs of
the same cells (release x workload x strategy), every other stored cell stays, and the stored meta
keeps the run it came from, with each later run that added cells listed after it (`later_runs`).
Only runs with the same call holds and cap join: figures of different holds do not compare.
"""

from __future__ import annotations

import json
from pathlib import Path

# What must agree for two runs' figures to sit in one table.
SAME = ("hold", "final_hold", "cap")


def cell(result: dict) -> tuple[str, str, str]:
    return (result["version"], result["workload"], result["strategy"])


def load(path: Path, meta: dict) -> dict | None:
    """The stored run a partial run joins (None when nothing is stored); SystemExit naming what
    differs when the two cannot share a table."""
    if not path.is_file():
        return None
    saved = json.loads(path.read_text())
    stored = saved.get("meta", {})
    differ = [
        f"{key} {meta[key]:g} (stored: {stored.get(key)})" for key in SAME if stored.get(key) != meta[key]
    ]
    if differ:
        raise SystemExit(
            f"invoke bench: this run cannot join {path}: {', '.join(differ)}; "
            "run the whole plan, or give it another --out"
        )
    return saved


def merge(saved: dict | None, meta: dict, results: list[dict]) -> tuple[dict, list[dict]]:
    """The meta and results to store after a partial run: the stored cells it did not measure, in
    their order, then its own; its meta among the stored meta's later runs."""
    if saved is None:
        return meta, results
    ours = {cell(result) for result in results}
    kept = [result for result in saved["results"] if cell(result) not in ours]
    if not kept:
        return meta, results
    later = []
    for run in saved["meta"].get("later_runs", []):
        cells = [list(c) for c in run["cells"] if tuple(c) not in ours]
        if cells:
            later.append({**run, "cells": cells})
    later.append(
        {
            "command": meta["command"],
            "date": meta["date"],
            "machine": meta["machine"],
            "seconds": meta["seconds"],
            "repeats": meta["repeats"],
            "cells": [list(c) for c in dict.fromkeys(cell(result) for result in results)],
        }
    )
    return {**saved["meta"], "later_runs": later}, kept + results
