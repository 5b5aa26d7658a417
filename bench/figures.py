"""The figures of one trial, computed from its raw series (pure functions, no Hermes needed).

Times are seconds since the trial's start (the moment its dispatch driver starts, with every card
already ready). A trial's raw series:
- requests: [start, end, board] for every LLM request the endpoint saw;
- cards: {card id: [first seen, last seen, board]} of every worker process seen by the sampler;
- driver: CPU seconds and passes of whatever started the dispatch passes, during the burst and
  while idle afterwards.
"""

from __future__ import annotations

import math


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
        requests = [(start, end) for start, end, owner in raw["requests"] if owner == board]
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
    return {
        "boards": boards,
        "peak_in_flight": worst("peak_in_flight"),
        "peak_workers": worst("peak_workers"),
        "endpoint_peak_total": peak([(start, end) for start, end, _ in raw["requests"]]),
        "slot_utilisation": mean("slot_utilisation"),
        "endpoint_utilisation": mean("endpoint_utilisation"),
        "endpoint_bound": mean("endpoint_bound"),
        "makespan": worst("makespan"),
        "makespan_vs_ideal": worst("makespan_vs_ideal"),
        "makespan_vs_pipelined": worst("makespan_vs_pipelined"),
        "passes": driver["burst_passes"],
        "cpu_per_pass": driver["burst_cpu"] / driver["burst_passes"] if driver["burst_passes"] else None,
        "idle_cpu_per_minute": driver["idle_cpu"] / idle_minutes if idle_minutes else None,
        "idle_core_share": driver["idle_cpu"] / driver["idle_seconds"] if driver["idle_seconds"] else None,
        "completed": raw["completed"],
    }
