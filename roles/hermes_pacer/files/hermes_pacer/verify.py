"""`verify`: is this host safe? Exactly one dispatcher path per board, the cap holding, the config
wired, the managed pacer actually pacing. Reads the host only; changes nothing.

It runs as root and reads what the Hermes user can write (configs, logs, crontabs, Hermes cron
jobs, its processes): through safefile or a bounded read, with a timeout on journalctl. A file
that is refused (a link the Hermes user made, a FIFO, a device, too large) is itself a finding.
"""

from __future__ import annotations

import calendar
import glob
import json
import os
import pwd
import re
import stat
import subprocess
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import board as boards
from . import (
    board_health,
    capacity,
    clock,
    hermes_config,
    host,
    keeper,
    passlog,
    paths,
    safefile,
    settings,
    status,
    workers,
)
from .fleet import SLICED, STATIC
from .settings import url_without_credentials
from .terminal import clean

LOG_TAIL_BYTES = 64 * 1024
JOURNAL_LINES = 200
JOURNAL_TIMEOUT = 15
# A pass that failed closed (contract C2), or that found the lock held: a board whose every pass
# says `locked` is not being paced either.
FAILED_CLOSED = passlog.FAILED_CLOSED | {"locked"}
KV_FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


@dataclass
class BoardReport:
    board: str
    root: str
    cap: int | None
    paths: list[dict] = field(default_factory=list)
    verdict: str = ""
    problems: list[str] = field(default_factory=list)
    queue: dict = field(default_factory=dict)
    endpoint: dict = field(default_factory=dict)  # name, cap, url (credentials stripped), url_from


# --- the managed pacer's recent passes ---------------------------------------------------------


def parse_record(line: str) -> dict[str, str] | None:
    """One pass record (passlog: key=value or JSON) as strings; None for any other line."""
    line = line.strip()
    if line.startswith("{"):
        try:
            data = json.loads(line)
        except ValueError:
            return None
        if not isinstance(data, dict) or "time" not in data:
            return None
        return {k: "" if v is None else str(v) for k, v in data.items()}
    if not line.startswith("time="):
        return None
    record = {}
    for key, raw in KV_FIELD.findall(line):
        if raw.startswith('"'):
            try:
                raw = json.loads(raw)
            except ValueError:
                raw = raw.strip('"')
        record[key] = "" if raw == "-" else raw
    return record


def _stamp(record: dict[str, str]) -> float | None:
    try:
        return float(calendar.timegm(time.strptime(record.get("time", ""), "%Y-%m-%dT%H:%M:%SZ")))
    except ValueError:
        return None


def failed_closed(record: dict[str, str]) -> bool:
    return record.get("rc") == "1" or record.get("reason", "") in FAILED_CLOSED


class PassesUnreadable(Exception):
    """The passes could not be read: the message names the source and why."""


def _journal_lines(identifier: str) -> list[str]:
    command = ["journalctl", "-q", "--no-pager", "-o", "cat", "-t", identifier, "-n", str(JOURNAL_LINES)]
    try:
        result = subprocess.run(
            command, capture_output=True, timeout=JOURNAL_TIMEOUT, check=False, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PassesUnreadable(f"{' '.join(command)}: {exc}") from exc
    if result.returncode != 0:
        error = result.stderr.decode("utf-8", "replace").strip()[:200]
        raise PassesUnreadable(f"{' '.join(command)} exited {result.returncode}: {error}")
    return result.stdout[-LOG_TAIL_BYTES:].decode("utf-8", "replace").splitlines()


def recent_passes(pacer: paths.Pacer) -> tuple[str, list[dict[str, str]]]:
    """(where they were read, the pass records, oldest first): from the journal for a systemd
    pacer logging there (contract C3), else from the tail of its log file."""
    if pacer.scheduler == "systemd" and pacer.journal_id:
        where = f"journal {pacer.journal_id}"
        lines = _journal_lines(pacer.journal_id)
    else:
        log = pacer.env.get("PACER_LOG_FILE")
        if not log:
            raise PassesUnreadable("the managed pacer names no log file and no journal identifier")
        where = log
        try:
            lines = safefile.read_tail(log, LOG_TAIL_BYTES).splitlines()
        except FileNotFoundError:
            lines = []
        except OSError as exc:
            raise PassesUnreadable(paths.refusal(log, exc)) from exc
    records = [r for r in map(parse_record, lines) if r is not None and _stamp(r) is not None]
    return where, records


def judge_passes(records: list[dict[str, str]], now: float, cadence: float) -> tuple[float | None, str]:
    """(age of the last pass, a problem or ""): NOT SAFE when every pass of the last
    max(10 cadences, 5 min) failed closed, naming the reasons and since when."""
    if not records:
        return None, ""
    age = now - (_stamp(records[-1]) or 0.0)
    window = max(10 * cadence, 300.0)
    recent = [r for r in records if (_stamp(r) or 0.0) >= now - window]
    if not recent or not all(failed_closed(r) for r in recent):
        return age, ""
    streak = []
    for record in reversed(records):
        if not failed_closed(record):
            break
        streak.append(record)
    reasons = Counter(r.get("reason") or "unknown" for r in streak)
    named = ", ".join(f"{reason} x{count}" for reason, count in reasons.most_common())
    errors = [r["error"] for r in reversed(streak) if r.get("error")]
    last_error = f"; last error: {errors[0][:200]}" if errors else ""
    return age, (
        f"every pass of the last {window:.0f}s failed closed or found the board locked "
        f"({named}), since {streak[-1]['time']}{last_error}: nothing is being dispatched"
    )


# Reasons of a pass that did its job and still started nothing on purpose: nothing is wrong with the
# pacer, but the board's work waits, and the operator should know why.
HOLDING = {"endpoint_down": "its endpoint is down", "paused": "an ESTOP pauses it"}


def holding(records: list[dict[str, str]], now: float, cadence: float) -> str:
    """Why nothing is dispatched, when every pass of the last max(10 cadences, 5 min) held the
    board on purpose (endpoint down, paused); "" otherwise."""
    window = max(10 * cadence, 300.0)
    recent = [r for r in records if (_stamp(r) or 0.0) >= now - window]
    if not recent or not all(r.get("reason") in HOLDING for r in recent):
        return ""
    streak = []
    for record in reversed(records):
        if record.get("reason") not in HOLDING:
            break
        streak.append(record)
    last = recent[-1]
    said = last.get("error") or last.get("warning") or ""
    return f"{HOLDING[last['reason']]} since {streak[-1]['time']}" + (f" ({said[:200]})" if said else "")


def _pacer_report(
    pacer: paths.Pacer, now: float, report: BoardReport, checks: list[Check]
) -> list[dict[str, str]]:
    """Adds the pacer's path and problems to the report; its pass records read, oldest first."""
    detail = f"{pacer.scheduler} ({pacer.source}), cap {pacer.cap}"
    try:
        where, records = recent_passes(pacer)
    except PassesUnreadable as exc:
        report.problems.append(f"the managed pacer's passes cannot be read: {exc}")
        checks.append(Check(f"log of board {pacer.board}", False, str(exc), _log_fix(pacer)))
        report.paths.append({"kind": "pacer", "detail": detail})
        return []
    age, problem = judge_passes(records, now, pacer.cadence_seconds)
    stale = max(3 * pacer.cadence_seconds, 90.0)
    if age is None:
        report.problems.append(f"the managed pacer has not logged a pass ({where})")
    elif age > stale:
        report.problems.append(
            f"the managed pacer last logged {age:.0f}s ago in {where} (expected every "
            f"{pacer.cadence_seconds:.0f}s): is its scheduler running?"
        )
    else:
        detail += f", last pass {age:.0f}s ago"
    if problem:
        report.problems.append(f"the managed pacer is not pacing: {problem}")
    held = holding(records, now, pacer.cadence_seconds)
    if held:
        detail += f"; nothing dispatched: {held}"
    report.paths.append({"kind": "pacer", "detail": detail})
    return records


def _log_fix(pacer: paths.Pacer) -> str:
    log = pacer.env.get("PACER_LOG_FILE")
    if log:
        return f"{log} must be a regular file: remove it and run site.yml (it is recreated safely)"
    return "check journalctl and the pacing unit's SyslogIdentifier, or run site.yml"


# --- the board and its workers -----------------------------------------------------------------


def _boards_on_disk(root: Path) -> list[str]:
    # A board's database reachable without following a link the Hermes user made.
    found = [boards.DEFAULT_BOARD] if safefile.exists(root / "kanban.db") else []
    found += sorted(
        p.parent.name for p in (root / "kanban" / "boards").glob("*/kanban.db") if safefile.exists(p)
    )
    return found


def _owner_uid(root: Path) -> int | None:
    """The uid that owns the Hermes root: its workers run as that user."""
    try:
        return os.stat(root).st_uid
    except OSError:
        return None


def _queue(root: Path, board: str, cap: int | None, proc: str) -> tuple[dict, list[str]]:
    problems = []
    db = boards.db_path(root, board, {})
    try:
        # SQLite would follow a link and block on a FIFO: open it the safe way first.
        os.close(safefile.open_file(db))
    except FileNotFoundError:
        pass  # snapshot says so
    except OSError as exc:
        return {}, [f"cannot read the board: {paths.refusal(db, exc)}"]
    try:
        snap = boards.snapshot(db)
    except boards.BoardUnreadable as exc:
        return {}, [f"cannot read the board: {exc}"]
    live = workers.scan(board, db, proc=proc, uid=_owner_uid(root))
    occupied = capacity.plan(cap or 1, snap.running, live.tasks, live.unattributed).occupied
    queue = {
        "running": len(snap.running),
        "workers": len(live.tasks) + live.unattributed,
        "occupied": occupied,
        "ready": snap.ready,
        "oldest_ready_age_seconds": boards.oldest_ready_age(db),
    }
    if cap is not None and occupied > cap:
        problems.append(f"{occupied} slots in use, over the cap of {cap}")
    return queue, problems


def worker_lookalikes(proc: str = "/proc") -> list[tuple[int, int]]:
    """(pid, real uid) of every process whose argv looks like a Hermes worker (`work kanban task
    <id>`): any user can start one, so only those of a home's own user are its workers."""
    return [(pid, uid) for pid, _task, uid in workers.lookalikes(proc)]


def _foreign_warning(root: Path, lookalikes: list[tuple[int, int]]) -> str | None:
    uid = _owner_uid(root)
    foreign = [(pid, other) for pid, other in lookalikes if uid is not None and other != uid]
    if not foreign:
        return None
    shown = ", ".join(f"pid {pid} (uid {other})" for pid, other in foreign[:20])
    more = f" and {len(foreign) - 20} more" if len(foreign) > 20 else ""
    return (
        f"{root}: {len(foreign)} process(es) look like Hermes workers but do not run as the home's "
        f"user (uid {uid}), so they are not counted against its boards: {shown}{more}"
    )


# --- files and settings ------------------------------------------------------------------------


def _owner_ok(path: Path) -> Check:
    try:
        info = path.stat()
    except OSError:
        return Check(f"script {path}", False, "missing", "run site.yml to install the scripts")
    ok = info.st_uid == 0 and not info.st_mode & 0o022 and bool(info.st_mode & stat.S_IXUSR or path.is_dir())
    return Check(
        f"script {path}",
        ok,
        f"owner uid {info.st_uid}, mode {stat.filemode(info.st_mode)}",
        "" if ok else "scripts must be root-owned, executable and writable by root only: run site.yml",
    )


def _pacer_checks(pacer: paths.Pacer, user: str | None) -> list[Check]:
    checks = []
    script = pacer.env.get("PACER_SCRIPT")
    if script:
        checks.append(_owner_ok(Path(script)))
        # The package the script runs: beside it once installed, beside its folder in a checkout.
        here = Path(script).resolve().parent
        package = next(
            (p for p in (here / "hermes_pacer", here.parent / "hermes_pacer") if p.is_dir()),
            here / "hermes_pacer",
        )
        checks.append(_owner_ok(package))
    hermes_bin = pacer.env.get("HERMES_BIN", "")
    ok = bool(hermes_bin) and os.path.isfile(hermes_bin) and os.access(hermes_bin, os.X_OK)
    checks.append(
        Check(
            f"hermes for board {pacer.board}",
            ok,
            hermes_bin or "HERMES_BIN not set (cron's PATH has no hermes)",
            "" if ok else "set hermes_pacer_hermes_bin to the full path of hermes and run site.yml",
        )
    )
    log = pacer.env.get("PACER_LOG_FILE")
    if log:
        checks.append(_log_dir_check(pacer, Path(log).parent, user))
    return checks


def _log_dir_check(pacer: paths.Pacer, log_dir: Path, user: str | None) -> Check:
    try:
        info = log_dir.lstat()
        owner = pwd.getpwuid(info.st_uid).pw_name
        ok = stat.S_ISDIR(info.st_mode) and owner == user and bool(info.st_mode & stat.S_IWUSR)
        detail = f"{log_dir}: owner {owner}, mode {stat.filemode(info.st_mode)}"
    except (OSError, KeyError):
        ok, detail = False, f"{log_dir} missing"
    return Check(
        f"log directory of board {pacer.board}",
        ok,
        detail,
        "" if ok else f"the log directory must be a directory owned by {user}: run site.yml",
    )


def _metrics_warning(pacer: paths.Pacer, now: float) -> str | None:
    """Where the board's settings name a metrics directory: its textfile must be a regular file of
    the Hermes user (a link there is that user's doing), written within 3 cadences + 60 s. A
    warning, not a failure: metrics are not the cap."""
    directory = pacer.env.get("PACER_METRICS_DIR")
    if not directory:
        return None
    path = host.metrics_file(Path(directory), pacer.board)
    textfile = f"board {pacer.board}: metrics textfile {path}"
    try:
        # Its directory reached the safe way; the file itself only looked at, never followed.
        folder, name = safefile.open_parent(path)
        try:
            info = os.stat(name, dir_fd=folder, follow_symlinks=False)
        finally:
            os.close(folder)
    except FileNotFoundError:
        return f"{textfile} is missing: node_exporter has no metrics of it"
    except OSError as exc:
        return f"board {pacer.board}: metrics textfile {paths.refusal(path, exc)}"
    if not stat.S_ISREG(info.st_mode):
        kind = "a symbolic link" if stat.S_ISLNK(info.st_mode) else "not a regular file"
        return f"{textfile} is {kind}: node_exporter must not be led elsewhere"
    user = pacer.env.get("PACER_USER", "")
    try:
        owner = pwd.getpwuid(info.st_uid).pw_name
    except KeyError:
        owner = f"uid {info.st_uid}"
    if owner != user:
        return f"{textfile} belongs to {owner}, not to the passes' {user}"
    age, limit = now - info.st_mtime, 3 * pacer.cadence_seconds + 60
    if age > limit:
        return (
            f"{textfile} was last written {age:.0f}s ago (expected within {limit:.0f}s): "
            "node_exporter reports stale metrics"
        )
    return None


def _managed_scope_check(etc: Path) -> Check | None:
    """Hermes 0.19's managed scope (<etc>/hermes/config.yaml, root's) wins over every user config
    key by key: when it turns the gateway dispatcher on, no user config can turn it off."""
    managed = hermes_config.read(etc / "hermes" / "config.yaml")
    if not managed.found or "dispatch_in_gateway" not in managed.values:
        return None
    on, why = hermes_config.gateway_dispatch(managed, None)
    fix = "set kanban.dispatch_in_gateway: false in the managed scope, or remove the key there"
    return Check(f"managed config {managed.path}", not on, why, fix if on else "")


def _config_checks(root: Path) -> list[Check]:
    checks = []
    # A profile that is a link is read through safefile, which refuses it.
    for home in host.hermes_homes(root):
        config = hermes_config.read(home / "config.yaml")
        on, why = hermes_config.gateway_dispatch(config, None)
        if config.error:
            fix = f"{config.path} must be a regular file of the Hermes user: replace it, then run site.yml"
        else:
            fix = "set kanban.dispatch_in_gateway: false (unquoted; site.yml does, keeping comments)"
        checks.append(Check(f"config {config.path}", not on, why, fix if on else ""))
    return checks


HOME_GLOBS = ("/root/.hermes", "/home/*/.hermes", "/var/lib/*/.hermes")


def _homes_with_boards(given: list[Path]) -> list[Path]:
    """Hermes homes to check: those given, else the usual places that hold a kanban.db."""
    if given:
        return list(given)
    found = []
    for pattern in HOME_GLOBS:
        found += [Path(p) for p in sorted(glob.glob(pattern)) if safefile.exists(Path(p) / "kanban.db")]
    return found


def _refused_checks(refused: list[str]) -> list[Check]:
    return [
        Check(
            "file refused",
            False,
            why,
            "a file verify reads must be a regular file reached without another user's links: "
            "replace it (a link or FIFO there is an attempt to lead root elsewhere)",
        )
        for why in dict.fromkeys(refused)
    ]


# --- the LLM endpoint each board's workers call -------------------------------------------------


def _same_endpoint(url: str) -> str:
    """A base URL as compared: no credentials, no trailing / or /v1, scheme and host lowercased."""
    scheme, sep, rest = (
        url_without_credentials(url).rstrip("/").removesuffix("/v1").rstrip("/").partition("://")
    )
    netloc, slash, path = rest.partition("/")
    return f"{scheme.lower()}{sep}{netloc.lower()}{slash}{path}"


def _endpoint(pacer: paths.Pacer) -> dict:
    """The endpoint of a board as its settings file says; its url, when the file has none, is what
    the pass reads: model.base_url of the Hermes home's config.yaml. {} for a file without one."""
    name = pacer.env.get("PACER_ENDPOINT", "")
    if not name:
        return {}
    cap = pacer.env.get("PACER_ENDPOINT_MAX_PARALLEL", "")
    url, url_from = pacer.env.get("PACER_ENDPOINT_URL", ""), "settings"
    if not url:
        config = hermes_config.config_path(pacer.env)
        url, url_from = hermes_config.model_base_url(config) or "", f"model.base_url of {config}"
    return {
        "name": name,
        "cap": int(cap) if cap.isdigit() else None,
        "url": url_without_credentials(url) if url else "",
        "url_from": url_from,
    }


def _endpoint_warnings(root: Path, pacers: list[paths.Pacer]) -> list[str]:
    """A Hermes home of `root` whose model.base_url is the endpoint of none of the root's boards:
    its workers load an endpoint whose budget does not count them, or count where they do not load."""
    boards: dict[str, list[str]] = {}
    for pacer in pacers:
        endpoint = _endpoint(pacer)
        if endpoint.get("url"):
            boards.setdefault(_same_endpoint(endpoint["url"]), []).append(
                f"board {pacer.board} (endpoint {endpoint['name']}, {endpoint['url']})"
            )
    warnings = []
    for home in host.hermes_homes(root, include_links=False) if boards else []:
        config = home / "config.yaml"
        url = hermes_config.model_base_url(config)
        if url is None or _same_endpoint(url) in boards:
            continue
        who = f"profile {home.name}" if home != root else "the root home"
        named = "; ".join(board for found in boards.values() for board in found)
        warnings.append(
            f"{who} ({config}) calls {url_without_credentials(url)} (model.base_url), not the endpoint "
            f"of {named}: its workers' requests are not counted in that endpoint's budget"
        )
    return warnings


# --- a fleet: hosts that share the endpoint's cap (docs/fleet.md) ----------------------------------


def fleet_mode(pacers: list[paths.Pacer], endpoint: str, passes: list[list[dict[str, str]]]) -> str:
    """The mode (sliced or static) of the endpoint's newest pass that found one: the endpoint's
    status file (each board's PACER_STATE_DIR), which a pass that probed the endpoint leaves and an
    idle or locked pass does not touch, or the newest record of its boards' logs that names one; ""
    when neither says. Both are the Hermes user's: the file is read as `status` reads it (safefile,
    every field type-checked, a refused file says nothing), and only the two modes are taken."""
    found: list[tuple[float, str]] = []
    directories = set()
    for pacer in pacers:
        try:
            directories.add(settings.output_dir(pacer.env, "PACER_STATE_DIR"))
        except settings.SettingError:
            continue
    for directory in sorted(directories - {None}):
        path = host.endpoint_status_file(directory, endpoint)
        try:
            document = status.read_status(path, str(path))
            seen = status.endpoint_status(document, endpoint) if document is not None else None
        except status.Unreadable:
            continue
        if seen is not None and seen["fleet_static"] is not None:
            found.append((seen["time"], STATIC if seen["fleet_static"] else SLICED))
    for records in passes:
        logged = [r for r in records if r.get("fleet_mode") in (SLICED, STATIC)]
        if logged:
            found.append((_stamp(logged[-1]) or 0.0, logged[-1]["fleet_mode"]))
    return max(found)[1] if found else ""


def fleet_endpoints(
    pacers: list[paths.Pacer], reports: list[BoardReport], passes: dict[tuple[str, str], list[dict[str, str]]]
) -> tuple[list[dict], list[Check]]:
    """Each fleet endpoint of the host's Hermes roots as its boards' settings say, with the live
    workers of its boards now (the board reports' count: workers.scan, as the pass counts them) and
    the mode its newest pass found (fleet_mode)."""
    found: dict[tuple[str, str], dict] = {}
    checks: list[Check] = []
    for pacer in sorted(pacers, key=lambda p: (p.root, p.board)):
        if not pacer.env.get("PACER_FLEET", "").strip():
            continue
        try:
            endpoint = settings.endpoint_of(pacer.env)
        except settings.SettingError as exc:
            fix = f"{pacer.source} is refused by every pass (nothing is dispatched): run site.yml"
            checks.append(Check(f"fleet settings of board {pacer.board}", False, str(exc), fix))
            continue
        if endpoint is None or endpoint.fleet is None:
            continue
        fleet, shown = endpoint.fleet, _endpoint(pacer)
        entry = {
            "fleet": fleet.name,
            "endpoint": endpoint.name,
            "url": shown["url"],
            "url_from": shown["url_from"],
            "cap": endpoint.max_parallel,
            "kind": endpoint.kind,
            "index": fleet.index,
            "hosts": fleet.hosts,
            "share": fleet.share,
            "min_share": fleet.min_share,
            "reserve": fleet.reserve,
            "slice_seconds": fleet.slice_seconds,
            "startup_seconds": fleet.startup_seconds,
            "timeout": endpoint.timeout,
            "root": pacer.root,
            "boards": sorted(set(endpoint.boards)),
        }
        key = (pacer.root, endpoint.name)
        if key not in found:
            found[key] = entry | {"mode": "", "workers": 0}
            continue
        differs = [name for name in FLEET_FIELDS if found[key][name] != entry[name]]
        if differs:
            checks.append(
                Check(
                    f"fleet settings of endpoint {endpoint.name}",
                    False,
                    f"the settings of board {pacer.board} ({pacer.source}) and of another board of "
                    f"{pacer.root} disagree on {', '.join(differs)}",
                    "every board of an endpoint has the same fleet settings: run site.yml",
                )
            )
        found[key]["boards"] = sorted(set(found[key]["boards"]) | set(entry["boards"]))
    for (root, _name), entry in found.items():
        for report in reports:
            if report.root == root and report.board in entry["boards"]:
                entry["workers"] += report.queue.get("workers", 0)
        boards = [pacer for pacer in pacers if pacer.root == root and pacer.board in entry["boards"]]
        entry["mode"] = fleet_mode(
            boards, entry["endpoint"], [passes.get((root, pacer.board), []) for pacer in boards]
        )
    return list(found.values()), checks


# The settings every board of one fleet endpoint must agree on (the role renders them alike).
FLEET_FIELDS = (
    "fleet",
    "cap",
    "index",
    "hosts",
    "share",
    "min_share",
    "reserve",
    "slice_seconds",
    "startup_seconds",
)


def fleet_clock(
    fleets: list[dict], proc: str, hostile_uids: frozenset[int]
) -> tuple[list[Check], list[str], list[str], dict]:
    """(checks, warnings, notes, the clock section) of a fleet host: the slices of every host are
    cut from the Unix epoch, so a host without a time sync service fails; a clock seconds away from
    the endpoint's is a warning; what cannot be read is a note."""
    groups = ", ".join(sorted({entry["fleet"] for entry in fleets}))
    targets = {entry["endpoint"]: entry for entry in fleets if entry["url"]}
    seen = clock.read(
        [
            (name, entry["url"], entry["url"], min(entry["timeout"], 5))
            for name, entry in sorted(targets.items())
        ],
        proc,
        hostile_uids,
    )
    said = (
        {True: "synchronised", False: "NOT synchronised"}[seen.synchronised] + f" ({seen.synchronised_from})"
        if seen.synchronised is not None
        else "synchronisation unknown (no timedatectl or chronyc answered)"
    )
    if seen.offset_seconds is not None:
        said += f", offset {seen.offset_seconds:+.6f}s (chronyc)"
    if seen.services:
        checks = [Check(f"time sync of fleet {groups}", True, f"{', '.join(seen.services)}; {said}")]
    else:
        checks = [
            Check(
                f"time sync of fleet {groups}",
                False,
                f"no time sync service runs (none of {clock.SERVICE_NAMES}): the fleet's hosts take "
                "turns by the clock, and this one's may drift",
                "install and start one (chrony or systemd-timesyncd) on every host of the fleet",
            )
        ]
    warnings = []
    if seen.synchronised is False:
        warnings.append(
            f"fleet {groups}: the system says its clock is not synchronised ({seen.synchronised_from}): "
            "the fleet's slices assume the hosts' clocks agree within a second or two (docs/fleet.md)"
        )
    notes = [f"time sync: {note}" for note in seen.notes]
    notes += [
        f"fleet endpoint {entry['endpoint']} has no url ({entry['url_from']} is unset): no clock offset read"
        for entry in fleets
        if not entry["url"]
    ]
    for item in seen.endpoints:
        fleet = targets[item.endpoint]["fleet"]
        if item.offset_seconds is None:
            notes.append(
                f"endpoint {item.endpoint} ({item.url}) gave no Date: {item.error}; no clock offset read "
                "(while it does not answer, the pass's health gate holds its boards)"
            )
        elif abs(item.offset_seconds) >= clock.OFFSET_WARNING:
            ahead = "ahead of" if item.offset_seconds > 0 else "behind"
            warnings.append(
                f"fleet {fleet}: endpoint {item.endpoint}'s clock is {abs(item.offset_seconds):.1f}s {ahead} "
                f"this host's (its Date header, +/-{item.uncertainty_seconds:.1f}s): the fleet's slices "
                "assume the hosts' clocks agree within a second or two (docs/fleet.md, assumptions); "
                "check the time sync of this host and of the endpoint"
            )
    return checks, warnings, notes, seen.as_dict()


def endpoint_urls(roots: list[Path], pacers: list[paths.Pacer]) -> list[dict]:
    """Every endpoint URL this host's workers may call (credentials stripped): its boards' endpoints
    and each Hermes home's model.base_url. `./tasks.sh verify` finds the hosts of a fleet's
    endpoint that are not in its group by them."""
    found = []
    for pacer in sorted(pacers, key=lambda p: (p.root, p.board)):
        endpoint = _endpoint(pacer)
        if endpoint.get("url"):
            found.append(
                {"url": endpoint["url"], "where": f"board {pacer.board} (endpoint {endpoint['name']})"}
            )
    for root in sorted(set(roots)):
        for home in host.hermes_homes(root, include_links=False):
            url = hermes_config.model_base_url(home / "config.yaml")
            if url:
                found.append(
                    {
                        "url": url_without_credentials(url),
                        "where": f"model.base_url of {home / 'config.yaml'}",
                    }
                )
    return found


def render_fleet_entry(entry: dict) -> str:
    where = entry["url"] or f"no url: {entry['url_from']} is unset"
    mode = entry["mode"] or "not logged yet"
    return (
        f"fleet {entry['fleet']}: endpoint {entry['endpoint']} (cap {entry['cap']}, {where}), "
        f"host {entry['index'] + 1}/{entry['hosts']}, share {entry['share']}, floor {entry['min_share']}, "
        f"reserve {entry['reserve']}, slice {entry['slice_seconds']}s with {entry['startup_seconds']}s "
        f"start-up, mode {mode}; live workers {entry['workers']} (boards {', '.join(entry['boards'])})"
    )


def render_clock(seen: dict) -> str:
    services = ", ".join(seen["services"]) or "no time sync service"
    if seen["synchronised"] is None:
        synced = "synchronisation unknown"
    else:
        synced = (
            "synchronised" if seen["synchronised"] else "NOT synchronised"
        ) + f" ({seen['synchronised_from']})"
    line = f"clock: {services}, {synced}"
    if seen["offset_seconds"] is not None:
        line += f", offset {seen['offset_seconds']:+.6f}s (chronyc)"
    for item in seen["endpoints"]:
        if item["offset_seconds"] is None:
            line += f"; endpoint {item['endpoint']}: no Date ({item['error']})"
        else:
            line += (
                f"; endpoint {item['endpoint']} Date offset {item['offset_seconds']:+.1f}s "
                f"(+/-{item['uncertainty_seconds']:.1f}s)"
            )
    return line


# --- the report --------------------------------------------------------------------------------


def _board_report(
    key: str, slug: str, pacer: paths.Pacer | None, found: list[paths.DispatchPath], now: float
) -> tuple[BoardReport, list[Check], list[dict[str, str]]]:
    checks: list[Check] = []
    records: list[dict[str, str]] = []
    report = BoardReport(slug, key, pacer.cap if pacer else None, endpoint=_endpoint(pacer) if pacer else {})
    if pacer and not pacer.problem:
        records = _pacer_report(pacer, now, report, checks)
    elif pacer:
        report.problems.append(f"the managed pacer of {pacer.source} does not run: {pacer.problem}")
    for item in found:
        if item.board in ("*", slug) and item.root in ("", key):
            report.paths.append({"kind": item.kind, "detail": item.detail})
    if len(report.paths) == 1:
        report.verdict = "ok"
    elif not report.paths:
        report.verdict = "none"
        report.problems.append(f"nothing dispatches board {slug}: run site.yml to install its pacer")
    else:
        report.verdict = "several"
        kinds = ", ".join(p["kind"] for p in report.paths)
        report.problems.append(
            f"{len(report.paths)} dispatcher paths on board {slug} ({kinds}): keep the "
            "managed pacer, stop the others (site.yml turns the gateway dispatcher off "
            "and adopts cron lines; stop `hermes kanban daemon`)"
        )
    return report, checks, records


def run(
    etc: Path = Path("/etc"),
    spool: Path = Path("/var/spool/cron/crontabs"),
    proc: str = "/proc",
    now: float | None = None,
    homes: list[Path] | None = None,
) -> dict:
    now = time.time() if now is None else now
    systemd_running = Path("/run/systemd/system").is_dir()
    refused: list[str] = []
    # Keyed by home and board: two users' `default` boards are two boards.
    managed = paths.managed(etc, systemd_running, refused)
    pacers = {(p.root, p.board): p for p in managed.pacers}
    others = managed.orphans + paths.other_cron_lines(etc, spool, refused) + paths.other_units(etc, refused)
    others += paths.processes(proc)
    roots: dict[str, Path] = {str(home): home for home in _homes_with_boards(homes or [])}
    for pacer in pacers.values():
        roots[pacer.root] = Path(pacer.root)
    for found in others:
        if found.root:
            roots[found.root] = Path(found.root)

    lookalikes = worker_lookalikes(proc)
    reports, checks, warnings = [], [], []
    passes: dict[tuple[str, str], list[dict[str, str]]] = {}
    for key, root in sorted(roots.items()):
        checks += _config_checks(root)
        home_paths = others + paths.hermes_cron_jobs(root, refused)
        for slug in sorted(set(_boards_on_disk(root)) | {board for home, board in pacers if home == key}):
            report, board_checks, passes[(key, slug)] = _board_report(
                key, slug, pacers.get((key, slug)), home_paths, now
            )
            report.queue, queue_problems = _queue(root, slug, report.cap, proc)
            report.problems += queue_problems
            if report.queue:  # the board was opened the safe way: SQLite may read it
                report.problems += board_health.verify_problems(root, slug, proc, now)
                unkept = keeper.verify_problem(etc, root, slug, proc) if (key, slug) in pacers else None
                report.problems += [unkept] if unkept else []
            reports.append(report)
            checks += board_checks
        for pacer in pacers.values():
            if pacer.root == key:
                checks += _pacer_checks(pacer, pacer.env.get("PACER_USER"))
                metrics = _metrics_warning(pacer, now)
                warnings += [metrics] if metrics else []
        warning = _foreign_warning(root, lookalikes)
        if warning:
            warnings.append(warning)
        warnings += _endpoint_warnings(root, [p for p in pacers.values() if p.root == key])
    managed_scope = _managed_scope_check(etc)
    checks += [managed_scope] if managed_scope else []
    checks += [Check("managed pacer", False, problem, paths.RUN_SITE) for problem in managed.problems]
    checks += _refused_checks(refused)
    warnings += [
        f"{found.detail}: it dispatches nothing (Hermes refuses the board slug)"
        for found in others
        if found.board != "*" and not host.SLUG.match(found.board)
    ]
    fleets, fleet_checks = fleet_endpoints(list(pacers.values()), reports, passes)
    checks += fleet_checks
    notes: list[str] = []
    document: dict = {}
    if fleets:
        hostile = frozenset(uid for uid in map(_owner_uid, map(Path, roots.values())) if uid)
        time_checks, time_warnings, notes, document["clock"] = fleet_clock(fleets, proc, hostile)
        checks += time_checks
        warnings += time_warnings
    ok = bool(reports) and all(not r.problems for r in reports) and all(c.ok for c in checks)
    return {
        "ok": ok,
        "boards": [asdict(r) for r in reports],
        "checks": [asdict(c) for c in checks],
        "warnings": warnings,
        "notes": notes,
        "fleets": fleets,
        **document,
        "endpoint_urls": endpoint_urls(list(roots.values()), list(pacers.values())),
    }


def render(report: dict) -> str:
    lines = [f"verdict: {'SAFE' if report['ok'] else 'NOT SAFE'}"]
    if not report["boards"]:
        lines.append("  no Hermes board found: no managed pacer and no running Hermes process")
    for item in report["boards"]:
        queue = item["queue"]
        if queue:
            oldest = queue.get("oldest_ready_age_seconds")
            shape = (
                f"running {queue.get('running')}, workers {queue.get('workers')}, ready {queue.get('ready')}"
            )
            shape += f", oldest ready {oldest}s" if oldest is not None else ""
        else:
            shape = "queue unknown"
        endpoint = item.get("endpoint") or {}
        if endpoint:
            where = endpoint["url"] or f"no url: {endpoint['url_from']} is unset"
            if endpoint["url"] and endpoint["url_from"] != "settings":
                where += f" from {endpoint['url_from']}"
            shape = f"endpoint {endpoint['name']} (cap {endpoint['cap']}, {where}); {shape}"
        lines.append(f"board {item['board']} ({item['root']}): {item['verdict']}, cap {item['cap']}; {shape}")
        for found in item["paths"]:
            lines.append(f"  path: {found['kind']}: {found['detail']}")
        for problem in item["problems"]:
            lines.append(f"  PROBLEM: {problem}")
    lines += [render_fleet_entry(entry) for entry in report.get("fleets", [])]
    if report.get("clock"):
        lines.append(render_clock(report["clock"]))
    for check in report["checks"]:
        mark = "ok  " if check["ok"] else "FAIL"
        lines.append(
            f"{mark} {check['name']}: {check['detail']}" + (f" -> {check['fix']}" if check["fix"] else "")
        )
    for warning in report.get("warnings", []):
        lines.append(f"WARNING {warning}")
    for note in report.get("notes", []):
        lines.append(f"note {note}")
    # Paths, URLs and details come from what the Hermes user writes: each line shown as text.
    return "\n".join(clean(line) for line in lines)
