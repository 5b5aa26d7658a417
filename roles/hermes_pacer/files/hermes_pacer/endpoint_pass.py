"""The part of a pass that holds the endpoint's budget: lock, health gate, ramp, the shared count.

Under the endpoint's lock (held across the count and the dispatch, so no two boards take the same
free slot) the pass probes the endpoint: down, loading or silent, nothing is dispatched
(`reason=endpoint_down`, rc 0: the pacer did its job). After an outage it starts at most one worker
a pass until the endpoint has answered for PACER_ENDPOINT_RAMP_SECONDS, so the queue that built up
during the outage does not land on a server that has just come back. Then it counts every board of
the endpoint, reads the endpoint's own load, and hands the board its share of what is free. A host
of a fleet (PACER_FLEET) first takes what the fleet admits it now (fleet.admit, docs/fleet.md).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from . import board as boards
from . import budget, fleet, hermes_config, host, locking, pass_state, passlog, settings, workers
from .settings import Settings

# How long a pass waits for another board's pass of the same endpoint (a dispatch takes ~1 s).
LOCK_WAIT = 10.0


@dataclass(frozen=True)
class Allowance:
    slots: int  # what this board may start now: its share of the endpoint's free slots
    board_occupied: int  # what the board held when counted
    pids: list[int]  # live workers of every board of the endpoint: a loop watches them for a free slot
    opens_at: float | None = None  # a fleet host outside its window: Unix time the window opens


Dispatch = Callable[[boards.Snapshot, workers.LiveWorkers, Allowance], int]


def run(
    settings_: Settings, env: dict[str, str], root: Path, db: Path, record: dict, dispatch: Dispatch
) -> int:
    point = settings_.endpoint
    assert point is not None
    record.update(endpoint=point.name, endpoint_cap=point.max_parallel)
    try:
        fd = locking.lock_within(host.endpoint_lock(settings_.lock_dir, point.name), LOCK_WAIT)
    except OSError as exc:
        record.update(reason="lock_unavailable", error=f"endpoint {point.name}: {exc}")
        return 1
    if fd is None:
        record.update(reason="locked", error=f"endpoint {point.name}: its lock was held over {LOCK_WAIT:g}s")
        return 0
    try:
        return _locked(settings_, env, root, db, record, dispatch)
    finally:
        os.close(fd)


def _locked(
    settings_: Settings, env: dict[str, str], root: Path, db: Path, record: dict, dispatch: Dispatch
) -> int:
    point = settings_.endpoint
    board = record["board"]
    state_path = host.endpoint_state(settings_.lock_dir, point.name)
    state = budget.read_state(state_path)
    url = point.url or hermes_config.model_base_url(boards.config_path(env))
    reading = None
    status = None  # the endpoint's status file, for a pass that probed it
    if url:
        # Imported here: http.client and ssl cost more than an idle pass, and only a pass with
        # work to start probes.
        from . import endpoint

        kind = state.kind if point.kind == "auto" and state.kind else point.kind
        started = time.monotonic()
        reading = endpoint.probe(url, kind, point.timeout)
        probe_ms = round((time.monotonic() - started) * 1000)
        if reading.up and point.kind == "auto" and _remembered(point, reading.kind):
            state.kind = reading.kind
        status = _status(point, url, reading, probe_ms)
    else:
        passlog.warn(record, "endpoint_unprobed:no_url")
    now = time.time()
    ramp = budget.health(state, reading, now, point.ramp_seconds) if reading else False
    if reading is not None and not reading.up:
        _save(state_path, state, record)
        record.update(
            reason="endpoint_down", error=f"{settings.url_without_credentials(url)}: {reading.detail}"
        )
        pass_state.record_endpoint(settings_, status, record)
        return 0
    loads = []
    for peer in point.boards or (board,):
        peer_db = db if peer == board else boards.db_path(root, peer, {})
        try:
            loads.append(_load(peer, peer_db, point.max_parallel, own=peer == board))
        except (boards.BoardUnreadable, OSError) as exc:
            record.update(reason="count_unknown", error=f"board {peer} of endpoint {point.name}: {exc}")
            if status is not None:
                pass_state.record_endpoint(settings_, status, record)
            return 1
    held = budget.budget(point.max_parallel, loads, reading, state, now, ramp, fleet=point.fleet is not None)
    admission = None
    if point.fleet is not None:
        held, admission = _fleet(point, held, reading, now, record)
    _save(state_path, state, record)
    if status is not None:
        status.update(
            workers=sum(len(load.live.tasks) + load.live.unattributed for load in loads),
            foreign=held.foreign,
            used=held.ours + held.foreign,
            ramp=ramp,
        )
        if admission is not None:
            status.update(fleet_static=admission.mode == fleet.STATIC)
        pass_state.record_endpoint(settings_, status, record)
    own = next(load for load in loads if load.board == board)
    wants = {
        load.board: _wants(load, settings_.max_parallel if load is own else point.caps.get(load.board))
        for load in loads
    }
    share = budget.share(board, held.free, wants, loads)
    opens_at = admission.opens_at if admission is not None else None
    if opens_at is not None and own.snapshot.ready:
        # Work waits for the window: the loop (or a timer-run pass) passes again when it opens.
        record[fleet.OPENS] = opens_at
    if ramp:
        share = min(share, 1)
        passlog.warn(record, "endpoint_ramp")
    if held.waiting:
        passlog.warn(record, f"endpoint_queue:{held.waiting}")
    if reading is not None and reading.running is not None and reading.running > point.max_parallel:
        # Over its cap: clients beyond the pacer's reach, or (in a fleet) an assumption of
        # docs/fleet.md that failed. The pass admits nothing then; the line says so.
        passlog.warn(record, f"endpoint_over_cap:{reading.running}")
    record.update(endpoint_used=held.ours + held.foreign, foreign=held.foreign)
    pids = sorted(pid for load in loads for pid in load.live.pids)
    allowance = Allowance(slots=share, board_occupied=own.occupied, pids=pids, opens_at=opens_at)
    return dispatch(own.snapshot, own.live, allowance)


def _fleet(
    point: settings.Endpoint, held: budget.Budget, reading, now: float, record: dict
) -> tuple[budget.Budget, fleet.Admission]:
    """The endpoint's budget as the fleet admits it to this host now (docs/fleet.md)."""
    member = point.fleet
    reported = reading is not None and fleet.reports_load(reading.kind, reading.running)
    foreign = held.foreign if reported else 0  # static: the share is the host's whole budget
    if reading is not None and fleet.load_unknown(reading.kind, reading.running):
        # Working to the static share now could add it to a cap the other hosts have filled.
        passlog.warn(record, "endpoint_load_unknown")
        admission = fleet.floor_only(member, held.ours, held.waiting, now)
    else:
        admission = fleet.admit(member, point.max_parallel, held.ours, foreign, held.waiting, now, reported)
    record.update(fleet=member.name, fleet_mode=admission.mode, fleet_slot=fleet.slot(member))
    if admission.opens_at is not None:
        record["fleet_next"] = fleet.seconds_until(admission.opens_at, now)
    # The ramp and the board shares work on what the fleet admits, as on the endpoint's free slots.
    return replace(held, foreign=foreign, free=admission.free), admission


def _remembered(point: settings.Endpoint, kind: str) -> bool:
    """Whether a kind `auto` found is kept for the next passes. In a fleet only one that reports its
    load: a vLLM whose /metrics failed at the first look passes for a plain OpenAI server, and a
    host kept on static shares by that would work beside hosts that slice."""
    return point.fleet is None or kind not in fleet.UNREPORTED_KINDS


def _status(point: settings.Endpoint, url: str, reading, probe_ms: int) -> dict:
    """The endpoint's status file as the probe found it (docs/metrics.md); the counts of this host
    are added once the boards are counted."""
    return {
        "kind": reading.kind,
        "url": settings.url_without_credentials(url),
        "cap": point.max_parallel,
        "time": time.time(),
        "up": reading.up,
        "detail": reading.detail,
        "running": reading.running,
        "waiting": reading.waiting,
        "workers": None,
        "foreign": None,
        "used": None,
        "ramp": False,
        "probe_ms": probe_ms,
        **_fleet_status(point.fleet),
    }


def _fleet_status(member: settings.Fleet | None) -> dict:
    """The fleet's fields of the endpoint's status (null for an endpoint of this host alone);
    `fleet_static` is set once the pass knows the mode."""
    if member is None:
        return dict.fromkeys(("fleet", "fleet_hosts", "fleet_index", "fleet_share", "fleet_static"))
    return {
        "fleet": member.name,
        "fleet_hosts": member.hosts,
        "fleet_index": member.index,
        "fleet_share": member.share,
        "fleet_static": None,
    }


def _load(board: str, db: Path, cards: int, own: bool) -> budget.BoardLoad:
    if not own and not db.exists():
        # A board named in the settings that Hermes has not made yet: nothing on it, but a worker
        # of it would still count.
        return budget.BoardLoad(board, db, boards.Snapshot(), workers.scan(board, db))
    return budget.load_board(board, db, cards)


def _wants(load: budget.BoardLoad, cap: int | None) -> int:
    ready = load.snapshot.ready
    return ready if cap is None else min(ready, max(0, cap - load.occupied))


def _save(path: Path, state: budget.State, record: dict) -> None:
    try:
        budget.write_state(path, state)
    except OSError as exc:
        passlog.warn(record, f"endpoint_state_unsaved:{exc.strerror or exc}")
