"""`status`: what the passes of this host's paced boards last did, read from the status files they
leave (docs/metrics.md, status files).

The boards are the settings files the role writes (root's, host.settings_dir). The status files are
the Hermes user's, and `status` often runs as root: they are hostile input. Each is read through
safefile (no link, a regular file, at most 64 KiB), parsed strictly (a wrong type makes the board
"unreadable: why", never a traceback, and no value of the file is echoed in that why), and every
string of it is shown with its control characters escaped, so an escape sequence in `error` does
not reach the terminal. What a flag is judged on (the cadence, the cap) comes from the settings
file, not from the status file, so the file cannot hide a stopped pacer by claiming a long cadence.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import sys
import time
from pathlib import Path

from . import host, safefile, settings
from .terminal import clean

STATUS_LIMIT = 64 * 1024
VERSION = 1  # of the status files this reader knows, and of the document `--json` prints
# No pass for this many cadences (and a minute more) is a stopped pacer, as HermesPacerStopped says.
STOPPED_CADENCES = 3
STOPPED_GRACE = 60.0
# A pass timestamp further ahead than this is not a clock's jitter: the file is not believed.
FUTURE_SLACK = 60.0
ERROR_WIDTH = 200  # characters of a pass's error shown in the table (--json has all of it)
# The flags a board can carry; each makes the exit status 1. No status yet too: status cannot vouch
# for a board no pass has reported on (its timer or cron line may never have run).
FLAGS = ("unreadable", "stopped", "failing", "endpoint_down", "no_status")


class Unreadable(ValueError):
    """A status file that was refused or is not the contract's shape: the message says why."""


# --- showing hostile strings ------------------------------------------------------------------


# --- strict parsing -----------------------------------------------------------------------------


def _refuse_constant(name: str) -> float:
    raise Unreadable(f"{name} is not a JSON number")


def parse(data: bytes, what: str) -> dict:
    """The JSON object of a status file; Unreadable (naming no value of it) when it is not one."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Unreadable(f"{what} is not UTF-8 (byte {exc.start})") from None
    try:
        document = json.loads(text, parse_constant=_refuse_constant)
    except Unreadable:
        raise
    except (ValueError, RecursionError) as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else type(exc).__name__
        raise Unreadable(f"{what} is not JSON ({reason})") from None
    if not isinstance(document, dict):
        raise Unreadable(f"{what} is not a JSON object")
    return document


def _typed(document: dict, key: str, kinds: tuple[str, ...], where: str) -> object:
    """document[key] when its type is one of `kinds` (int, number, str, bool, object, null)."""
    if key not in document:
        raise Unreadable(f"{where}{key} is missing")
    value = document[key]
    found = (
        "null"
        if value is None
        else "bool"
        if isinstance(value, bool)
        else "int"
        if isinstance(value, int)
        else "number"
        if isinstance(value, float)
        else "str"
        if isinstance(value, str)
        else "object"
        if isinstance(value, dict)
        else "array"
    )
    accepted = set(kinds) | ({"int"} if "number" in kinds else set())
    if found not in accepted:
        named = " or ".join(kind for kind in kinds if kind != "count")
        raise Unreadable(f"{where}{key} is {found}, expected {named}")
    if found == "number" and not math.isfinite(value):
        raise Unreadable(f"{where}{key} is not a finite number")
    if found in ("int", "number") and "count" in kinds and value < 0:
        raise Unreadable(f"{where}{key} is negative")
    return float(value) if found == "int" and "number" in kinds else value


COUNT = ("int", "null", "count")
TIME = ("number", "null")


def board_status(document: dict, board: str) -> dict:
    """What `status` shows of a board's status file, every field type-checked."""
    version = _typed(document, "version", ("int",), "")
    if version != VERSION:
        raise Unreadable(f"version is {version}, this reader knows version {VERSION}")
    if _typed(document, "board", ("str",), "") != board:
        raise Unreadable(f"the file is not board {board}'s")
    last = _typed(document, "last", ("object",), "")
    where = "last."
    shown = {
        "time": _typed(last, "time", ("number",), where),
        "reason": _typed(last, "reason", ("str",), where),
        "rc": _typed(last, "rc", ("int",), where),
        "error": _typed(last, "error", ("str",), where),
        "warning": _typed(last, "warning", ("str",), where),
    }
    for key in ("running", "ready", "workers", "lingering", "slots"):
        shown[key] = _typed(last, key, COUNT, where)
    shown["oldest_ready_created"] = _typed(last, "oldest_ready_created", TIME, where)
    shown["failing_since"] = _typed(document, "failing_since", TIME, "")
    shown["last_spawn"] = _typed(document, "last_spawn", TIME, "")
    return shown


def endpoint_status(document: dict, name: str) -> dict:
    version = _typed(document, "version", ("int",), "")
    if version != VERSION:
        raise Unreadable(f"version is {version}, this reader knows version {VERSION}")
    if _typed(document, "endpoint", ("str",), "") != name:
        raise Unreadable(f"the file is not endpoint {name}'s")
    shown = {
        "time": _typed(document, "time", ("number",), ""),
        "up": _typed(document, "up", ("bool",), ""),
        "ramp": _typed(document, "ramp", ("bool",), ""),
        "detail": _typed(document, "detail", ("str",), ""),
        "kind": _typed(document, "kind", ("str", "null"), ""),
    }
    for key in ("cap", "used", "foreign", "workers", "running", "waiting"):
        shown[key] = _typed(document, key, COUNT, "")
    # A fleet host's mode; absent from the files of a release before fleets.
    shown["fleet_static"] = (
        _typed(document, "fleet_static", ("bool", "null"), "") if "fleet_static" in document else None
    )
    return shown


def read_status(path: Path, what: str) -> dict | None:
    """The parsed file, None when there is none; Unreadable when it is refused or malformed."""
    try:
        data = safefile.read_bytes(path, STATUS_LIMIT)
    except FileNotFoundError:
        return None
    except OSError as exc:
        message = exc.strerror or str(exc)
        raise Unreadable(message if str(path) in message else f"{path}: {message}") from None
    return parse(data, what)


# --- the view of one board --------------------------------------------------------------------


def _age(now: float, then: float | None) -> float | None:
    """Seconds since `then` (a tenth is all an operator needs), 0 for a time ahead of now."""
    return None if then is None else round(max(0.0, now - then), 1)


def _endpoint_view(env: dict[str, str], state_dir: Path, now: float) -> dict | None:
    name = env.get("PACER_ENDPOINT", "").strip()
    if not name:
        return None
    view = {"name": name, "state": "no_status", "detail": "", "age": None, "problem": ""}
    view.update(dict.fromkeys(("cap", "used", "foreign", "workers", "running", "waiting")))
    view.update(_fleet_view(env))
    if not host.SLUG.match(name):
        view.update(state="unreadable", problem=f"PACER_ENDPOINT is not a slug ({host.SLUG_RULE})")
        return view
    path = host.endpoint_status_file(state_dir, name)
    try:
        document = read_status(path, str(path))
        if document is None:
            return view
        found = endpoint_status(document, name)
    except Unreadable as exc:
        view.update(state="unreadable", problem=f"{path}: {exc}" if str(path) not in str(exc) else str(exc))
        return view
    state = "down" if not found["up"] else "ramp" if found["ramp"] else "up"
    view.update({k: found[k] for k in ("cap", "used", "foreign", "workers", "running", "waiting", "detail")})
    if view["fleet"] is not None and found["fleet_static"] is not None:
        view["fleet_mode"] = "static" if found["fleet_static"] else "sliced"
    view.update(state=state, age=_age(now, found["time"]))
    return view


def _fleet_view(env: dict[str, str]) -> dict:
    """The fleet the settings file (root's, not the Hermes user's) puts the endpoint in: its group,
    this host's index and the group's size; `fleet_mode` comes from the status file. All null
    without a fleet, or when the settings do not parse (the pass then fails closed and says so)."""
    view = dict.fromkeys(("fleet", "fleet_index", "fleet_hosts", "fleet_mode"))
    name = env.get("PACER_FLEET", "").strip()
    hosts = env.get("PACER_FLEET_HOSTS", "").strip() or "1"
    index = env.get("PACER_FLEET_INDEX", "").strip() or "0"
    if settings.FLEET_NAME.match(name) and hosts.isdigit() and index.isdigit() and int(index) < int(hosts):
        view.update(fleet=name, fleet_index=int(index), fleet_hosts=int(hosts))
    return view


def _empty_view(board: str, source: Path) -> dict:
    return {
        "board": board,
        "settings": str(source),
        "state_dir": None,
        "cap": None,
        "interval": None,
        "flags": [],
        "problems": [],
        "last_pass_age": None,
        "reason": None,
        "rc": None,
        "error": "",
        "warning": "",
        "workers": None,
        "lingering": None,
        "running": None,
        "ready": None,
        "slots": None,
        "oldest_ready_age": None,
        "failing_since_age": None,
        "last_spawn_age": None,
        "endpoint": None,
    }


def board_view(source: Path, now: float) -> dict:
    """The status of the board of one settings file: the keys of docs/metrics.md, Status."""
    view = _empty_view(host.board_of_settings_file(source), source)
    try:
        env = settings.read_file(source)
    except settings.SettingError as exc:
        view["flags"].append("unreadable")
        view["problems"].append(str(exc))
        return view
    board, why = host.normalise_slug(env.get("BOARD", "") or view["board"])
    if why:
        view["flags"].append("unreadable")
        view["problems"].append(f"settings file {source}: BOARD: {why}")
        return view
    view["board"] = board
    try:
        view["cap"] = int(env.get("MAX_PARALLEL", "2"))
        view["interval"] = 60.0 / max(1, int(env.get("RUNS_PER_MINUTE", "4")))
    except ValueError:
        view["flags"].append("unreadable")
        view["problems"].append(f"settings file {source}: MAX_PARALLEL and RUNS_PER_MINUTE must be integers")
        return view
    state_dir = Path(env.get("PACER_STATE_DIR", "").strip() or host.DEFAULT_STATE_DIR)
    view["state_dir"] = str(state_dir)
    if not state_dir.is_absolute():
        view["flags"].append("unreadable")
        view["problems"].append(f"settings file {source}: PACER_STATE_DIR must be an absolute path")
        return view
    view["endpoint"] = _endpoint_view(env, state_dir, now)
    endpoint = view["endpoint"] or {}
    if endpoint.get("state") == "down":
        view["flags"].append("endpoint_down")
        detail = f": {endpoint['detail']}" if endpoint["detail"] else ""
        view["problems"].append(f"endpoint {endpoint['name']} is down{detail}")
    elif endpoint.get("state") == "unreadable":
        view["flags"].append("unreadable")
        view["problems"].append(endpoint["problem"])
    _last_pass(view, host.status_file(state_dir, board), now)
    return view


def _last_pass(view: dict, path: Path, now: float) -> None:
    try:
        document = read_status(path, str(path))
        if document is None:
            view["flags"].append("no_status")
            view["problems"].append(f"no status yet: no pass has written {path}")
            return
        last = board_status(document, view["board"])
        if last["time"] > now + FUTURE_SLACK:
            raise Unreadable("last.time is in the future")
    except Unreadable as exc:
        view["flags"].append("unreadable")
        view["problems"].append(str(exc) if str(path) in str(exc) else f"{path}: {exc}")
        return
    age = _age(now, last["time"])
    view.update({k: last[k] for k in ("reason", "rc", "error", "warning")})
    view.update({k: last[k] for k in ("workers", "lingering", "running", "ready", "slots")})
    view["last_pass_age"] = age
    view["oldest_ready_age"] = _age(now, last["oldest_ready_created"])
    view["failing_since_age"] = _age(now, last["failing_since"])
    view["last_spawn_age"] = _age(now, last["last_spawn"])
    limit = STOPPED_CADENCES * view["interval"] + STOPPED_GRACE
    if age is not None and age > limit:
        view["flags"].append("stopped")
        view["problems"].append(
            f"stopped: no pass for {human_age(age)} (expected every {human_age(view['interval'])})"
        )
    if last["rc"] == 1 or last["failing_since"] is not None:
        view["flags"].append("failing")
        since = human_age(view["failing_since_age"] if last["failing_since"] is not None else age)
        error = f": {last['error']}" if last["error"] else ""
        view["problems"].append(f"failing closed for {since}: {last['reason']}{error}")


# --- the document ------------------------------------------------------------------------------


def settings_files(etc: Path) -> list[Path]:
    folder = host.settings_dir(etc)
    return sorted(p for p in folder.glob(f"*{host.SETTINGS_SUFFIX}") if not p.name.startswith("."))


def collect(etc: Path = Path("/etc"), now: float | None = None) -> dict:
    """The `--json` document (docs/metrics.md, Status). `ok` is false and `error` says where it
    looked when no paced board was found."""
    now = time.time() if now is None else now
    files = settings_files(etc)
    boards = [board_view(path, now) for path in files]
    document = {
        "version": VERSION,
        "host": socket.gethostname(),
        "time": now,
        "ok": bool(boards) and not any(b["flags"] for b in boards),
        "error": "",
        "boards": boards,
    }
    if not boards:
        folder = host.settings_dir(etc)
        document["error"] = f"no paced board found: no *{host.SETTINGS_SUFFIX} settings file in {folder}"
    return document


def exit_status(document: dict) -> int:
    """0 every board fine, 1 a board flagged (stopped, failing, unreadable, endpoint down, no status
    yet), 2 none found."""
    if not document.get("boards"):
        return 2
    return 0 if document.get("ok") else 1


# --- the table ---------------------------------------------------------------------------------


def human_age(seconds: float | None) -> str:
    """12s, 4m, 3h, 2d: the largest unit, rounded down."""
    if seconds is None:
        return "-"
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _count(value: object) -> str:
    return "-" if value is None else clean(value, 9)


def _fleet_cell(endpoint: dict) -> str:
    """`, fleet <group> i+1/n` and the mode (sliced or static), for an endpoint a fleet shares."""
    if not endpoint.get("fleet"):
        return ""
    place = f"{_count(_plus_one(endpoint.get('fleet_index')))}/{_count(endpoint.get('fleet_hosts'))}"
    mode = f" {clean(endpoint['fleet_mode'])}" if endpoint.get("fleet_mode") else ""
    return f", fleet {clean(endpoint['fleet'], 64)} {place}{mode}"


def _plus_one(value: object) -> object:
    return value + 1 if isinstance(value, int) and not isinstance(value, bool) else value


def _endpoint_cell(endpoint: dict | None) -> str:
    if not endpoint:
        return "-"
    name, state = clean(endpoint.get("name", "?")), endpoint.get("state")
    if state in ("up", "ramp"):
        cell = f"{name} {state} {_count(endpoint.get('used'))}/{_count(endpoint.get('cap'))} used"
        foreign = endpoint.get("foreign")
        return cell + (f", {clean(foreign)} foreign" if foreign else "") + _fleet_cell(endpoint)
    if state == "down":
        detail = clean(endpoint.get("detail") or "", 40)
        return f"{name} down" + (f": {detail}" if detail else "")
    return f"{name} {'no status yet' if state == 'no_status' else 'unreadable'}"


COLUMNS = ("BOARD", "CAP", "LIVE", "RUN", "READY", "OLDEST", "LAST", "REASON", "ENDPOINT")
LEFT = {"HOST", "BOARD", "REASON", "ENDPOINT"}


def _row(board: dict) -> list[str]:
    return [
        clean(board.get("board", "?"), 40),
        _count(board.get("cap")),
        _count(board.get("workers")),
        _count(board.get("running")),
        _count(board.get("ready")),
        human_age(board.get("oldest_ready_age")),
        human_age(board.get("last_pass_age")),
        clean(board.get("reason") or "-", 24),
        _endpoint_cell(board.get("endpoint")),
    ]


def _notes(board: dict) -> list[str]:
    """The lines under a board's row: each flag with what it means."""
    flags = board.get("flags") or []
    notes = [f"! {clean(problem, ERROR_WIDTH)}" for problem in board.get("problems") or []]
    if "failing" not in flags and board.get("rc") == 1 and board.get("error"):
        notes.append(f"! error: {clean(board['error'], ERROR_WIDTH)}")
    if board.get("warning"):
        notes.append(f"  warning: {clean(board['warning'], ERROR_WIDTH)}")
    return notes


def _widths(rows: list[list[str]], columns: tuple[str, ...]) -> list[int]:
    return [max([len(name)] + [len(cells[i]) for cells in rows]) for i, name in enumerate(columns)]


def _line(cells: list[str], columns: tuple[str, ...], widths: list[int]) -> str:
    """Text left, numbers right, two spaces between columns."""
    parts = [
        cell.ljust(width) if name in LEFT else cell.rjust(width)
        for name, cell, width in zip(columns, cells, widths)
    ]
    return "  ".join(parts).rstrip()


def _header(document: dict, what: str) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(document.get("time") or 0))
    return f"hermes-pacer status of {what} at {stamp}"


def render(document: dict) -> str:
    """The table of one host's document: a row a board, its flags on indented lines under it."""
    lines = [_header(document, clean(document.get("host", "?"), 64))]
    if document.get("error"):
        return "\n".join([*lines, clean(document["error"], ERROR_WIDTH)])
    boards = document.get("boards") or []
    rows = [_row(board) for board in boards]
    widths = _widths(rows, COLUMNS)
    lines.append(_line(list(COLUMNS), COLUMNS, widths))
    for cells, board in zip(rows, boards):
        lines.append(_line(cells, COLUMNS, widths))
        lines += [f"    {note}" for note in _notes(board)]
    return "\n".join(lines)


def render_fleet(documents: dict[str, dict], now: float) -> str:
    """One table of several hosts' documents (`./tasks.sh status`), with a HOST column; a host without
    a document (unreachable, not installed, no board) is a row saying so after its name."""
    columns = ("HOST", *COLUMNS)
    rows: list[tuple[str, dict | None, str]] = []  # (host, board, message)
    for name, document in sorted(documents.items()):
        boards = document.get("boards") or []
        if document.get("error") or not boards:
            rows.append((clean(name, 40), None, clean(document.get("error") or "no board", ERROR_WIDTH)))
        rows += [(clean(name, 40), board, "") for board in boards]
    cells = {id(board): [host_name, *_row(board)] for host_name, board, _ in rows if board is not None}
    widths = _widths([*cells.values(), [name for name, _, _ in rows] + [""] * len(COLUMNS)], columns)
    lines = [_header({"time": now}, f"{len(documents)} host(s)"), _line(list(columns), columns, widths)]
    for host_name, board, message in rows:
        if board is None:
            lines.append(f"{host_name.ljust(widths[0])}  {message}")
            continue
        lines.append(_line(cells[id(board)], columns, widths))
        lines += [f"    {note}" for note in _notes(board)]
    return "\n".join(lines)


# --- the command -------------------------------------------------------------------------------

CLEAR = "\x1b[H\x1b[2J"  # home, then clear the screen: the next frame is drawn in place


def command(etc: Path, as_json: bool, watch: float | None) -> int:
    """`hermes-pacer status`: one view (exit status as exit_status), or one every `watch` seconds
    until Ctrl-C (exit 0): drawn in place on a terminal, successive blocks otherwise."""
    try:
        return _show(etc, as_json, watch)
    except BrokenPipeError:
        # The reader went away (`| head`): nothing more to show it, and no traceback at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _show(etc: Path, as_json: bool, watch: float | None) -> int:
    if watch is None:
        document = collect(etc)
        print(json.dumps(document, indent=2) if as_json else render(document), flush=True)
        if not document["boards"] and not as_json:
            print(f"hermes-pacer: {document['error']}", file=sys.stderr)
        return exit_status(document)
    terminal = sys.stdout.isatty()
    # Ctrl-C ends the watch even when started with SIGINT ignored (a background job of a script).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        while True:
            document = collect(etc)
            # --json: one document a line; a table: drawn in place, or blocks a blank line apart.
            text = json.dumps(document) if as_json else render(document) + ("" if terminal else "\n")
            sys.stdout.write((CLEAR if terminal and not as_json else "") + text + "\n")
            sys.stdout.flush()
            time.sleep(watch)
    except KeyboardInterrupt:
        if terminal:
            sys.stdout.write("\n")
        return 0
