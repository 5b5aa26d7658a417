"""A fleet's share of one endpoint: which host may admit new workers now, and how many (docs/fleet.md).

Pure logic, no I/O: the pass brings the time, the fleet's settings and what it counted.

Time is cut into cycles of n * S seconds from the Unix epoch, so every host with a synchronised
clock cuts them alike. Host i owns the slice [i*S, i*S + S) of each cycle and admits new workers
only in its first S - G seconds (its window): a worker started at the end of a window has sent its
first request before the next host's window opens, so that host sees it in the endpoint's load.
A fleet of one host has no one to take turns with: its window is always open.

While the endpoint reports no running count (Ollama, a plain OpenAI-compatible server, metrics
switched off) no host can see the others' load: each works to its static share, at any time. An
endpoint of a kind that reports its load but whose reading this pass has none (its /metrics failed)
is not one of those: the host cannot tell what the others run, and fills only its own floor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .settings import Fleet

SLICED = "sliced"
STATIC = "static"
# Kinds that never report a running count: their fleets always work to static shares.
UNREPORTED_KINDS = ("ollama", "openai")


@dataclass(frozen=True)
class Window:
    inside: bool  # the host may admit beyond its floor now
    opens_at: float  # Unix time its next window opens (the current one's start while inside)


@dataclass(frozen=True)
class Admission:
    free: int  # what this host may start now, on all its boards of the endpoint together
    mode: str  # SLICED or STATIC
    inside: bool  # in its window (always, in static mode)
    opens_at: float | None  # outside its window: Unix time it opens; else None


def slot(fleet: Fleet) -> str:
    """`k/n`, the host's place as the log line names it: k counts from 1, as the converge, `status`
    and `verify` say it (PACER_FLEET_INDEX counts from 0)."""
    return f"{fleet.index + 1}/{fleet.hosts}"


def window(now: float, fleet: Fleet) -> Window:
    """Whether `now` (Unix time) is inside host i's admission window, and when the window opens."""
    if fleet.hosts == 1:
        return Window(True, now)
    size = fleet.slice_seconds
    cycle = fleet.hosts * size
    cycle_start = math.floor(now / cycle) * cycle
    start = cycle_start + fleet.index * size
    if start <= now < start + size - fleet.startup_seconds:
        return Window(True, start)
    return Window(False, start if now < start else start + cycle)


def seconds_until(opens_at: float, now: float) -> float:
    """The log's `fleet_next`: seconds until the window opens, rounded up to a tenth, so a pass a
    hair before it never reads as "opens in 0.0 s" while it admitted nothing."""
    return max(0.1, math.ceil(round((opens_at - now) * 10, 6)) / 10)


def load_unknown(kind: str | None, running: int | None) -> bool:
    """The endpoint is of a kind that reports its load, but this reading has no running count."""
    return running is None and kind is not None and kind not in UNREPORTED_KINDS


def floor_only(fleet: Fleet, ours: int, waiting: int, now: float) -> Admission:
    """What a host may start while it cannot tell the endpoint's load: its own floor, which every
    other host leaves free, and nothing while requests queue."""
    current = window(now, fleet)
    free = 0 if waiting else max(0, fleet.min_share - ours)
    return Admission(free, SLICED, current.inside, None if current.inside else current.opens_at)


def reports_load(kind: str | None, running: int | None) -> bool:
    """Whether the endpoint's reading gives a running count the fleet can slice against."""
    return running is not None and kind not in UNREPORTED_KINDS


def admit(
    fleet: Fleet,
    cap: int,
    ours: int,
    foreign: int,
    waiting: int,
    now: float,
    reported: bool,
) -> Admission:
    """What the host may start now. `cap` is the endpoint's max_parallel (the fleet's total), `ours`
    this host's live workers and running cards on it, `foreign` what the endpoint runs beyond them
    (the other hosts and any other client), `waiting` the endpoint's queue, `reported` whether the
    endpoint reports its load at all."""
    if not reported:
        # The static share is the host's whole budget: nothing foreign is known.
        free = 0 if waiting else max(0, fleet.share - ours)
        return Admission(free, STATIC, True, None)
    if waiting:
        # A queue at the endpoint stops every host's admission until it drains, floors included.
        inside = window(now, fleet)
        return Admission(0, SLICED, inside.inside, None if inside.inside else inside.opens_at)
    room = cap - ours - foreign
    current = window(now, fleet)
    if current.inside:
        # The other hosts' floors stay free, as far as they do not already hold them.
        free = room - max(0, fleet.reserve - foreign)
        return Admission(max(0, free), SLICED, True, None)
    # Outside the window only the host's own floor: every other host leaves it free.
    return Admission(max(0, min(fleet.min_share - ours, room)), SLICED, False, current.opens_at)


# The record key (not logged) of the Unix time a host's window opens, left by a pass outside it with
# work waiting: the sub-minute loop and a timer-run pass pass again then (subminute.refill).
OPENS = "_fleet_opens"
