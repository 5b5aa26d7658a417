"""The budget of one LLM endpoint, shared by every board of the host that names it.

The GPU does not care which board a request comes from: a pass of any board of the endpoint
counts what holds the endpoint (live workers and running cards of all its boards, and the
requests at the endpoint that are none of theirs), under one lock per endpoint, and gives the
free slots card by card, oldest ready card first, whatever its board.

Foreign load is what the endpoint reports running beyond this host's live workers. A worker is
between two requests for a moment (a tool call), so one reading would count a foreign request as
ours; the estimate is the largest seen over the last FOREIGN_WINDOW seconds, and what the endpoint
runs while no worker of ours lives is all foreign.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from . import atomicfile, workers
from . import board as boards

if TYPE_CHECKING:
    from .endpoint import Reading

FOREIGN_WINDOW = 60.0
STATE_LIMIT = 64 << 10


@dataclass(frozen=True)
class BoardLoad:
    """What one board of the endpoint holds now, and how long its oldest ready card has waited."""

    board: str
    db: Path
    snapshot: boards.Snapshot
    live: workers.LiveWorkers
    ready_created: tuple[float, ...] = ()  # creation times of its oldest ready cards, oldest first

    @property
    def occupied(self) -> int:
        return len(self.snapshot.running | self.live.tasks) + self.live.unattributed


@dataclass
class State:
    """What the passes remember of the endpoint (a file in the lock directory, ours alone)."""

    kind: str | None = None  # what `auto` resolved to
    down_since: float | None = None  # the endpoint has not answered normally since
    up_since: float | None = None  # answering again since, after an outage: the ramp runs
    foreign: list[list[float]] = field(default_factory=list)  # [time, estimate] of recent passes


@dataclass(frozen=True)
class Budget:
    cap: int
    ours: int  # live workers and running cards of all the endpoint's boards on this host
    foreign: int  # requests at the endpoint that are not this host's workers (estimate)
    waiting: int  # requests queued at the endpoint
    free: int  # what may start now on all boards together
    ramp: bool  # recovering from an outage: at most one start a pass


def load_board(board: str, db: Path, cards: int) -> BoardLoad:
    """Count one board of the endpoint (and the ages of its `cards` oldest ready cards);
    BoardUnreadable/OSError when its state cannot be known."""
    return BoardLoad(board, db, boards.snapshot(db), workers.scan(board, db), boards.ready_created(db, cards))


def read_state(path: Path) -> State:
    """The endpoint's state; a fresh one when there is none or it cannot be read (it is a cache:
    the worst a lost state costs is one probe of kind `auto` or a ramp that starts over)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as handle:
            raw = json.loads(handle.read(STATE_LIMIT))
        state = State(
            kind=raw.get("kind") if isinstance(raw.get("kind"), str) else None,
            down_since=_number(raw.get("down_since")),
            up_since=_number(raw.get("up_since")),
            foreign=[
                [float(t), float(n)]
                for t, n in raw.get("foreign", [])
                if isinstance(t, (int, float)) and isinstance(n, (int, float))
            ],
        )
    except (OSError, ValueError, TypeError, AttributeError):
        return State()
    return state


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


def write_state(path: Path, state: State) -> None:
    """Write the state atomically (the lock directory is the pacer's own, checked by locking)."""
    data = json.dumps(
        {
            "kind": state.kind,
            "down_since": state.down_since,
            "up_since": state.up_since,
            "foreign": state.foreign,
        }
    ).encode()
    atomicfile.write(path, data, 0o600)


def health(state: State, reading: Reading, now: float, ramp_seconds: int) -> bool:
    """Record the probe in the state; whether the ramp holds (at most one start a pass)."""
    if not reading.up:
        state.down_since = state.down_since or now
        state.up_since = None
        return True
    if state.down_since is not None:
        state.down_since = None
        state.up_since = now
    if state.up_since is not None and now - state.up_since >= ramp_seconds:
        state.up_since = None
    return state.up_since is not None


def foreign_estimate(
    state: State, reading: Reading | None, our_workers: int, now: float, fleet: bool = False
) -> int:
    """Requests at the endpoint that are none of this host's workers. With no worker of ours alive,
    what the endpoint runs is all foreign: that reading replaces what was remembered. Otherwise
    (running - our live workers) is only a lower bound (a worker of ours may be starting or in a
    tool call), so the estimate is the largest lower bound of the last FOREIGN_WINDOW seconds.
    In a fleet the other hosts' workers are foreign and have their tool calls too: a reading taken
    while none of ours lives is a lower bound as well, and replaces nothing.
    0 when the endpoint reports no count."""
    state.foreign = [sample for sample in state.foreign if 0 <= now - sample[0] <= FOREIGN_WINDOW]
    if reading is not None and reading.running is not None:
        sample = [now, float(max(0, reading.running - our_workers))]
        state.foreign = [sample] if our_workers == 0 and not fleet else [*state.foreign, sample]
    return int(max((n for _, n in state.foreign), default=0))


def budget(
    cap: int,
    loads: list[BoardLoad],
    reading: Reading | None,
    state: State,
    now: float,
    ramp: bool,
    fleet: bool = False,
) -> Budget:
    ours = sum(load.occupied for load in loads)
    live = sum(len(load.live.tasks) + load.live.unattributed for load in loads)
    foreign = foreign_estimate(state, reading, live, now, fleet)
    waiting = (reading.waiting or 0) if reading is not None else 0
    free = 0 if waiting else max(0, cap - ours - foreign)
    return Budget(cap=cap, ours=ours, foreign=foreign, waiting=waiting, free=free, ramp=ramp)


def share(board: str, free: int, wants: dict[str, int], loads: list[BoardLoad]) -> int:
    """How many of `free` slots `board` may start now. The slots go card by card to the oldest ready
    card of all the boards, each board up to what it wants (its ready cards, its own cap): first
    come, first served across the boards of the endpoint."""
    queue = sorted(
        (created, load.board) for load in loads for created in load.ready_created[: wants.get(load.board, 0)]
    )
    return sum(1 for _, name in queue[:free] if name == board)
