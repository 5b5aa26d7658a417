"""What a pass leaves for operators: the status file of its board and endpoint and, when metrics are
on, their Prometheus textfiles (docs/metrics.md is the contract: names, shapes, labels).

The board's counters (passes, failed passes, spawned, reclaimed) and its failing streak live in its
status file from one pass to the next: each pass reads the previous file under a lock of its own,
so two passes of a board that end at once both count, and writes the new one atomically (a
temporary file beside it, then a rename), so a reader never sees half a file.

Writing is never part of what the pass did: a directory that is missing, not writable or full adds
`state_unwritten:<why>` or `metrics_unwritten:<why>` to the record's warning, and the pass's rc
stays. A board's first pass starts its counters at 0; a previous file that is too large, a link,
not a regular file or not ours to parse starts them again at 0 (Prometheus' rate() takes that as a
counter reset), said once as `counters_reset:<why>`. The directories belong to the Hermes user,
whose workers are hostile: nothing here follows a link, and root reads these files as hostile input
(`hermes-pacer status`).
"""

from __future__ import annotations

import errno
import json
import math
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from . import __version__, atomicfile, host, locking, passlog, safefile, textfile
from . import board as boards
from .settings import SettingError, Settings, output_dir

VERSION = 1
# Record keys (not logged) of what a pass's count found: the cards by status (running, ready, todo,
# blocked) and the creation time (Unix) of the oldest ready card.
CARDS = "_cards"
OLDEST_READY = "_oldest_ready_created"
LIMIT = 64 * 1024  # a status file is about 1 KiB; a larger one is not ours
TEXT_LIMIT = 2000  # error and warning as a status file keeps them
COUNTERS = ("passes", "failed_passes", "spawned", "reclaimed")
CARD_STATES = ("ready", "running", "todo", "blocked")
# How long a pass waits for another pass of its board to finish writing (a write takes ~1 ms).
LOCK_WAIT = 2.0


@dataclass(frozen=True)
class Target:
    """Where a board's files go and the labels they carry."""

    state_dir: Path
    metrics_dir: Path | None
    board: str
    home: str
    endpoint: str
    cap: int | None
    interval: float | None


def record_pass(settings: Settings, record: dict, home: Path | str) -> None:
    """Leave the board's status (and metrics) for the pass's record, which has its `rc`; problems
    are warnings in the record. A `locked` pass leaves nothing: the pass holding the lock writes."""
    board = record.get("board")
    if settings.state_dir is None or record.get("reason") == "locked":
        return
    if not isinstance(board, str) or not host.SLUG.match(board):
        return
    target = Target(
        state_dir=settings.state_dir,
        metrics_dir=settings.metrics_dir,
        board=board,
        home=str(home),
        endpoint=settings.endpoint.name if settings.endpoint else "",
        cap=settings.max_parallel,
        interval=60.0 / settings.runs_per_minute,
    )
    _record(target, record)


def record_invalid(env: dict[str, str], record: dict) -> None:
    """Best effort for a pass whose settings are invalid: when the raw environment still names a
    usable state directory and the record a valid board, the board shows up as failing."""
    try:
        state_dir = output_dir(env, "PACER_STATE_DIR")
        board = record.get("board")
        if state_dir is None or not isinstance(board, str) or not host.SLUG.match(board):
            return
        try:
            metrics_dir = output_dir(env, "PACER_METRICS_DIR")
        except SettingError:
            metrics_dir = None
        cap = env.get("MAX_PARALLEL", "").strip() or "2"
        runs = env.get("RUNS_PER_MINUTE", "").strip() or "4"
        endpoint = env.get("PACER_ENDPOINT", "").strip()
        target = Target(
            state_dir=state_dir,
            metrics_dir=metrics_dir,
            board=board,
            home=str(boards.hermes_root(env)),
            endpoint=endpoint if host.SLUG.match(endpoint) else "",
            cap=int(cap) if cap.isdigit() and 1 <= int(cap) <= 1000 else None,
            interval=60.0 / int(runs) if runs.isdigit() and 1 <= int(runs) <= 60 else None,
        )
        _record(target, record)
    except Exception as exc:  # the settings are already wrong: this must not make it worse
        passlog.warn(record, f"state_unwritten:{type(exc).__name__}: {exc}")


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _record(target: Target, record: dict) -> None:
    path = host.status_file(target.state_dir, target.board)
    try:
        lock = locking.lock_within(target.state_dir / f".{path.name}.lock", LOCK_WAIT)
    except OSError as exc:
        passlog.warn(record, f"state_unwritten:{_why(exc)}")
        return
    if lock is None:
        passlog.warn(record, f"state_unwritten:its lock was held over {LOCK_WAIT:g}s")
        return
    try:
        previous, reset = read_status(path, target.board)
        status = update(previous, target, record, time.time())
        try:
            write_atomic(path, (json.dumps(status, separators=(",", ":")) + "\n").encode())
        except OSError as exc:
            passlog.warn(record, f"state_unwritten:{_why(exc)}")
        else:
            if reset:
                passlog.warn(record, f"counters_reset:{reset}")
        if target.metrics_dir is not None:
            try:
                text = textfile.render(board_families(target, status))
                write_atomic(host.metrics_file(target.metrics_dir, target.board), text.encode())
            except (OSError, ValueError) as exc:
                passlog.warn(record, f"metrics_unwritten:{_why(exc)}")
    finally:
        os.close(lock)


# ---------------------------------------------------------------------------------------------------
# The status file


def read_status(path: Path, board: str) -> tuple[dict | None, str]:
    """The previous status of the board, or (None, why the counters start again at 0)."""
    try:
        data = read_bounded(path, LIMIT)
    except FileNotFoundError:
        return None, ""  # the board's first pass here: nothing was lost, nothing to say
    except OSError as exc:
        return None, _why(exc) if isinstance(exc, safefile.UnsafeFile) else f"unreadable: {_why(exc)}"
    try:
        status = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None, "the status file is not JSON"
    problem = _invalid(status, board)
    return (None, problem) if problem else (status, "")


def read_bounded(path: Path, limit: int) -> bytes:
    """A regular file of at most `limit` bytes, reached as safefile walks, its own name never a
    link (not even root's: nothing in these directories is one); UnsafeFile otherwise."""
    folder, name = safefile.open_parent(os.path.abspath(path))
    try:
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
        try:
            fd = os.open(name, flags, dir_fd=folder)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise safefile.UnsafeFile(errno.ELOOP, f"{path} is a symbolic link: not followed") from None
            raise
    finally:
        os.close(folder)
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise safefile.UnsafeFile(errno.EINVAL, f"{path} is not a regular file: not read")
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise safefile.UnsafeFile(errno.EFBIG, f"{path} is larger than {limit} bytes: not read")
    return data


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _time(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _invalid(status: object, board: str) -> str:
    if not isinstance(status, dict) or status.get("version") != VERSION:
        return f"the status file is not version {VERSION}"
    if status.get("board") != board:
        return "the status file is another board's"
    counters = status.get("counters")
    if not isinstance(counters, dict) or not all(_count(counters.get(name)) for name in COUNTERS):
        return "the status file's counters are invalid"
    if not _time(status.get("counting_since")):
        return "the status file's counting_since is invalid"
    for name in ("last_spawn", "failing_since"):
        if status.get(name) is not None and not _time(status.get(name)):
            return f"the status file's {name} is invalid"
    return ""


def _ids(value: object) -> int | None:
    return len(value) if isinstance(value, (list, tuple)) else None


def _text(value: object) -> str:
    return str(value)[:TEXT_LIMIT] if value else ""


def update(previous: dict | None, target: Target, record: dict, now: float) -> dict:
    """The board's new status: the last pass from `record`, the counters and streak carried on."""
    counters = dict.fromkeys(COUNTERS, 0) if previous is None else dict(previous["counters"])
    rc = record.get("rc")
    failed = rc == 1
    spawned = _ids(record.get("spawned"))
    reclaimed = _ids(record.get("reclaimed"))
    counters["passes"] += 1
    counters["failed_passes"] += int(failed)
    counters["spawned"] += spawned or 0
    counters["reclaimed"] += reclaimed or 0
    cards = record.get(CARDS) if isinstance(record.get(CARDS), dict) else {}
    last = {
        "time": now,
        "reason": record.get("reason") or "",
        "rc": rc,
        "ms": record.get("ms"),
        # A count the pass did not make is null; `spawned` and `reclaimed` are card ids in the record.
        **{state: cards.get(state) for state in ("running", "ready", "todo", "blocked")},
        "workers": record.get("workers"),
        "lingering": record.get("lingering"),
        "slots": record.get("slots"),
        "oldest_ready_created": record.get(OLDEST_READY),
        "spawned": spawned,
        "reclaimed": reclaimed,
        "endpoint_cap": record.get("endpoint_cap"),
        "endpoint_used": record.get("endpoint_used"),
        "foreign": record.get("foreign"),
        "error": _text(record.get("error")),
        "warning": _text(record.get("warning")),
    }
    last_spawn = previous.get("last_spawn") if previous else None
    failing_since = previous.get("failing_since") if previous else None
    return {
        "version": VERSION,
        "board": target.board,
        "home": target.home,
        "endpoint": target.endpoint,
        "cap": target.cap,
        "interval": target.interval,
        "last": last,
        "counters": counters,
        "counting_since": previous["counting_since"] if previous else now,
        "last_spawn": now if spawned else last_spawn,
        "failing_since": (failing_since or now) if failed else None,
    }


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data`, 0644 whatever the umask: node_exporter and `status` read it."""
    atomicfile.write(path, data, 0o644)


# ---------------------------------------------------------------------------------------------------
# The board's textfile


def _family(name: str, kind: str, help_: str) -> textfile.Family:
    return textfile.Family(f"hermes_pacer_{name}", kind, help_)


def board_families(target: Target, status: dict) -> list[textfile.Family]:
    """The board's metrics (docs/metrics.md, per board) for its new status."""
    labels = {"board": target.board, "home": target.home, "endpoint": target.endpoint}
    last = status["last"]
    counters = status["counters"]

    def gauge(name: str, help_: str, value: float | None, extra: dict | None = None) -> textfile.Family:
        family = _family(name, "gauge", help_)
        if value is not None:
            family.add({**labels, **(extra or {})}, value)
        return family

    info = gauge("info", "1; version is the pacer's", 1, {"version": __version__})
    cards = _family("cards", "gauge", "cards of the board by status")
    for state in CARD_STATES:
        if last.get(state) is not None:
            cards.add({**labels, "state": state}, last[state])
    oldest = last.get("oldest_ready_created")
    age = None  # not counted
    if last.get("ready") is not None:
        age = max(0.0, last["time"] - oldest) if _time(oldest) and last["ready"] else 0.0
    reason = _family("last_pass_reason", "gauge", "1 for the last pass's reason, 0 for every other")
    for name in passlog.REASONS:
        reason.add({**labels, "reason": name}, int(name == last["reason"]))
    families = [
        info,
        gauge("cap", "the board's cap on live workers", target.cap),
        gauge("pass_interval_seconds", "60 / passes a minute: the cadence", target.interval),
        cards,
        gauge("live_workers", "live worker processes of the board", last.get("workers")),
        gauge("lingering_workers", "live workers whose card is no longer running", last.get("lingering")),
        gauge("free_slots", "slots this pass could fill (board cap and endpoint budget)", last.get("slots")),
        gauge("oldest_ready_age_seconds", "age of the oldest ready card, 0 when none is ready", age),
    ]
    for name, help_ in (
        ("spawned", "workers the pacer started"),
        ("reclaimed", "cards handed back after an overrun"),
        ("passes", "passes"),
        ("failed_passes", "passes that failed closed (rc 1)"),
    ):
        family = _family(f"{name}_total", "counter", help_)
        family.add(labels, counters[name])
        families.append(family)
    ms = last.get("ms")
    families += [
        gauge("last_pass_timestamp_seconds", "end of the last pass, Unix time", last["time"]),
        gauge("last_pass_duration_seconds", "how long the last pass took", ms / 1000 if _count(ms) else None),
        gauge("last_pass_failed", "1 when the last pass failed closed", int(last["rc"] == 1)),
        reason,
        gauge("last_spawn_timestamp_seconds", "the last pass that started a worker", status["last_spawn"]),
        gauge(
            "failing_since_timestamp_seconds",
            "first failed pass of the current failing streak, 0 when the last pass succeeded",
            status["failing_since"] or 0,
        ),
    ]
    return families


# ---------------------------------------------------------------------------------------------------
# The endpoint's status and textfile


def record_endpoint(settings: Settings, status: dict, record: dict) -> None:
    """Leave the endpoint's status (docs/metrics.md) as this pass probed it; problems are warnings."""
    if settings.state_dir is None or settings.endpoint is None:
        return
    name = settings.endpoint.name
    status = {"version": VERSION, "endpoint": name, **status}
    status["detail"] = _text(status.get("detail"))
    try:
        write_atomic(
            host.endpoint_status_file(settings.state_dir, name),
            (json.dumps(status, separators=(",", ":")) + "\n").encode(),
        )
    except OSError as exc:
        passlog.warn(record, f"state_unwritten:endpoint {name}: {_why(exc)}")
    if settings.metrics_dir is None:
        return
    try:
        text = textfile.render(endpoint_families(status))
        write_atomic(host.endpoint_metrics_file(settings.metrics_dir, name), text.encode())
    except (OSError, ValueError) as exc:
        passlog.warn(record, f"metrics_unwritten:endpoint {name}: {_why(exc)}")


def endpoint_families(status: dict) -> list[textfile.Family]:
    labels = {"endpoint": status["endpoint"], "kind": status.get("kind") or ""}

    def gauge(name: str, help_: str, value: float | None) -> textfile.Family:
        family = _family(f"endpoint_{name}", "gauge", help_)
        if value is not None:
            family.add(labels, value)
        return family

    requests = _family("endpoint_requests", "gauge", "requests the endpoint reports, by state")
    for state in ("running", "waiting"):
        if status.get(state) is not None:
            requests.add({**labels, "state": state}, status[state])
    probe_ms = status.get("probe_ms")
    probe_seconds = probe_ms / 1000 if _count(probe_ms) else None
    return [
        gauge("up", "1 when the last probe found it answering and ready", int(bool(status.get("up")))),
        gauge("cap", "the endpoint's max_parallel", status.get("cap")),
        requests,
        gauge("workers", "this host's live workers on it, every board", status.get("workers")),
        gauge("foreign_requests", "requests not of this host's workers (estimate)", status.get("foreign")),
        gauge("used_slots", "workers and foreign requests: what the budget took", status.get("used")),
        gauge("ramp", "1 while the pacer ramps up after an outage", int(bool(status.get("ramp")))),
        gauge("last_probe_timestamp_seconds", "when it was probed", status.get("time")),
        gauge("probe_duration_seconds", "how long the probe took", probe_seconds),
        *_fleet_families(status, labels),
    ]


def _fleet_families(status: dict, labels: dict[str, str]) -> list[textfile.Family]:
    """The host's place in the fleet that shares the endpoint (docs/fleet.md); none without a fleet."""
    if not isinstance(status.get("fleet"), str):
        return []
    labels = {**labels, "fleet": status["fleet"]}
    families = []
    for name, help_, value in (
        ("hosts", "hosts of the fleet that shares the endpoint", status.get("fleet_hosts")),
        ("index", "this host's place in the fleet, 0 to hosts-1", status.get("fleet_index")),
        ("share", "this host's static share, while the endpoint reports no load", status.get("fleet_share")),
        ("static", "1 while this host works to its static share", status.get("fleet_static")),
    ):
        family = _family(f"endpoint_fleet_{name}", "gauge", help_)
        if value is not None:
            family.add(labels, int(value))
        families.append(family)
    return families
