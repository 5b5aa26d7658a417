"""The figures of one trial, computed from its raw series (pure functions, no Hermes needed).

Times are seconds since the trial's start (the moment its dispatch driver starts, with every card
already ready). A trial's raw series:
- requests: [start, end, board, card] for every LLM request the endpoint saw (board "foreign" and
  no card: someone else's request; runs before the card was recorded have no fourth field);
- cards: {card id: [first seen, last seen, board]} of every worker process seen by the sampler;
- driver: CPU seconds and passes of whatever started the dispatch passes, during the burst and
  while idle afterwards;
- statuses and runs: every card's status at the end and the outcome of each of its runs;
- outage: [down, up] when the endpoint was switched off, or None.
A trial's figures are per run; `summary` makes the median and the range of the runs of one cell.
"""

from __future__ import annotations

import math
import statistics

# A run that ended in one of these did not fail (None: still open when the trial ended).
CLEAN_OUTCOMES = (None, "completed")
# Spawns counted as the burst at recovery: within this many seconds after the endpoint came back.
RECOVERY_WINDOW = 10.0


def step_series(intervals: list[tuple[float, float]]) -> list[tuple[float, int]]:
    """How many intervals are open at each change point: [(time, count)], sorted by time."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    series, count = [], 0
    for time, delta in events:
        count += delta
        if series and series[-1][0] == time:
            series[-1] = (time, count)
        else:
            series.append((time, count))
    return series


def peak(intervals: list[tuple[float, float]]) -> int:
    return max((count for _, count in step_series(intervals)), default=0)


def time_weighted_mean(intervals: list[tuple[float, float]], begin: float, end: float) -> float:
    """Mean number of open intervals over [begin, end]: the overlap of each with the window."""
    if end <= begin:
        return 0.0
    covered = sum(max(0.0, min(stop, end) - max(start, begin)) for start, stop in intervals)
    return covered / (end - begin)


def percentile(values: list[float], share: float) -> float | None:
    """The nearest-rank percentile: the smallest value with at least `share` of them at or below it."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def live_at(workers: list[tuple[float, float]], moment: float) -> int:
    return sum(first <= moment <= last for first, last in workers)


def refill_delays(workers: list[tuple[float, float]], cap: int) -> list[float]:
    """For every worker exit while the cap was full and a card still waited for a worker: the time
    to the next spawn. A worker's exit is its last sighting, a spawn its first (100 ms samples); a
    card waited if a worker started after the exit (every card of a finished trial gets one)."""
    starts = sorted(first for first, _ in workers)
    delays = []
    for _, exit_ in workers:
        later = [start for start in starts if start > exit_]
        if later and live_at(workers, exit_) >= cap:
            delays.append(later[0] - exit_)
    return delays


def outage_figures(raw: dict) -> dict:
    """Cards that failed, workers that hung, and the burst when the endpoint came back."""
    statuses, runs = raw.get("statuses", {}), raw.get("runs", {})
    failed = [
        card
        for card in statuses.keys() | runs.keys()
        if statuses.get(card) in ("blocked", "failed")
        or any(outcome not in CLEAN_OUTCOMES for outcome in runs.get(card, []))
    ]
    window = raw.get("outage")
    if not window or len(window) < 2:
        return {"failed_cards": len(failed), "hung_workers": None, "recovery_spawns": None}
    back, hang_after = window[1], raw.get("hang_after", 30.0)
    asked = {}
    for request in raw["requests"]:
        if len(request) > 3 and request[3] and request[0] >= back:
            asked[request[3]] = True
    hung = [
        card
        for card, (first, last, _) in raw["cards"].items()
        if first <= back and last >= back + hang_after and not asked.get(card)
    ]
    spawns = [first for first, _, _ in raw["cards"].values() if back <= first <= back + RECOVERY_WINDOW]
    return {"failed_cards": len(failed), "hung_workers": len(hung), "recovery_spawns": len(spawns)}


def board_figures(requests: list[tuple[float, float]], workers: list[tuple[float, float]], cap: int) -> dict:
    """Figures of one board: its requests and its workers (each card's first and last sighting)."""
    lifetimes = [end - start for start, end in workers]
    mean_lifetime = sum(lifetimes) / len(lifetimes) if lifetimes else 0.0
    llm_time = sum(end - start for start, end in requests)
    # Work waits from the start until the last card's worker has started.
    waiting_until = max((start for start, _ in workers), default=0.0)
    waited = waiting_until >= mean_lifetime / 4 and waiting_until > 0
    makespan = max((end for _, end in workers), default=0.0)
    ideal = math.ceil(len(workers) / cap) * mean_lifetime
    pipelined = llm_time / cap
    return {
        "cards": len(workers),
        "peak_in_flight": peak(requests),
        "peak_workers": peak(workers),
        "mean_worker_lifetime": mean_lifetime,
        "llm_seconds": llm_time,
        "waiting_seconds": waiting_until,
        "slot_utilisation": time_weighted_mean(workers, 0.0, waiting_until) / cap if waited else None,
        "endpoint_utilisation": time_weighted_mean(requests, 0.0, waiting_until) / cap if waited else None,
        "endpoint_bound": llm_time / sum(lifetimes) if lifetimes else None,
        "makespan": makespan,
        "ideal_makespan": ideal,
        "pipelined_bound": pipelined,
        "makespan_vs_ideal": makespan / ideal if ideal else None,
        "makespan_vs_pipelined": makespan / pipelined if pipelined else None,
    }


def trial_figures(raw: dict, cap: int) -> dict:
    """Per-board figures, the worst board's peaks, and the driver's CPU cost."""
    boards = {}
    for board in raw["boards"]:
        requests = [(start, end) for start, end, owner, *_ in raw["requests"] if owner == board]
        workers = [(first, last) for first, last, owner in raw["cards"].values() if owner == board]
        boards[board] = board_figures(requests, workers, cap)
    driver = raw["driver"]

    def worst(key: str):
        values = [figures[key] for figures in boards.values() if figures[key] is not None]
        return max(values) if values else None

    def mean(key: str):
        values = [figures[key] for figures in boards.values() if figures[key] is not None]
        return sum(values) / len(values) if values else None

    idle_minutes = driver["idle_seconds"] / 60 if driver["idle_seconds"] else None
    everything = [(request[0], request[1]) for request in raw["requests"]]
    ours = [(request[0], request[1]) for request in raw["requests"] if request[2] in raw["boards"]]
    workers = [(first, last) for first, last, _ in raw["cards"].values()]
    endpoint_cap = raw.get("endpoint_cap", cap)
    foreign = raw.get("foreign", 0)
    # Work waited at the endpoint until the last card of any board got its worker.
    waited = max((figures["waiting_seconds"] for figures in boards.values()), default=0.0)
    waited = waited if any(f["slot_utilisation"] is not None for f in boards.values()) else 0.0
    # What the endpoint leaves for workers: its cap less the foreign stream, at most the boards' caps.
    share = max(1, min(endpoint_cap - foreign, cap * len(raw["boards"])))
    refills = refill_delays(workers, share)
    lifetimes = [last - first for first, last in workers]
    ideal = math.ceil(len(workers) / share) * sum(lifetimes) / len(lifetimes) if workers else 0.0
    makespan = max((last for _, last in workers), default=0.0)
    return {
        "boards": boards,
        "peak_in_flight": worst("peak_in_flight"),
        "peak_workers": worst("peak_workers"),
        "endpoint_cap": endpoint_cap,
        "endpoint_peak_total": peak(everything),
        "endpoint_peak_ours": peak(ours),
        "slot_utilisation": mean("slot_utilisation"),
        # Everything in flight at the endpoint (ours and foreign) while work waited, per endpoint slot.
        "endpoint_utilisation": (time_weighted_mean(everything, 0.0, waited) / endpoint_cap)
        if waited
        else None,
        "refill_p95": percentile(refills, 0.95),
        "refills": len(refills),
        **outage_figures(raw),
        "endpoint_bound": mean("endpoint_bound"),
        "makespan": makespan,
        # Against every card of the trial through the endpoint's share, back to back.
        "ideal_makespan": ideal,
        "makespan_vs_ideal": makespan / ideal if ideal else None,
        "makespan_vs_pipelined": worst("makespan_vs_pipelined"),
        "passes": driver["burst_passes"],
        "cpu_per_pass": driver["burst_cpu"] / driver["burst_passes"] if driver["burst_passes"] else None,
        "idle_cpu_per_minute": driver["idle_cpu"] / idle_minutes if idle_minutes else None,
        "idle_core_share": driver["idle_cpu"] / driver["idle_seconds"] if driver["idle_seconds"] else None,
        "completed": raw["completed"],
    }


def summary(values: list) -> dict | None:
    """Median, min and max of one figure over the runs of a cell (runs without it left out)."""
    present = [value for value in values if value is not None]
    if not present:
        return None
    return {"median": statistics.median(present), "min": min(present), "max": max(present), "n": len(present)}


def cell_summary(runs: list[dict]) -> dict:
    """Every numeric figure of the runs of one cell (release x workload x strategy) summarised."""
    first = runs[0]["figures"]
    keys = [key for key, value in first.items() if key != "boards" and not isinstance(value, bool)]
    return {key: summary([run["figures"].get(key) for run in runs]) for key in keys}
