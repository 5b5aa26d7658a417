"""`verify`: is this host safe? Exactly one dispatcher path per board, the cap holding, the config
wired. Reads the host only; changes nothing.
"""

from __future__ import annotations

import calendar
import glob
import os
import pwd
import re
import stat
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import board as boards
from . import board_health, capacity, paths, workers

FALSE_WORDS = paths.FALSE_WORDS
LOG_TIME = re.compile(r"time=(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)|\"time\":\"([^\"]+)\"")


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


def _boards_on_disk(root: Path) -> list[str]:
    found = [boards.DEFAULT_BOARD] if (root / "kanban.db").exists() else []
    found += sorted(p.parent.name for p in (root / "kanban" / "boards").glob("*/kanban.db"))
    return found


def _last_log_age(log_file: Path | None, now: float) -> float | None:
    if log_file is None:
        return None
    try:
        with open(log_file, "rb") as handle:
            handle.seek(max(0, os.path.getsize(log_file) - 4096))
            lines = handle.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        match = LOG_TIME.search(line)
        if match:
            stamp = time.strptime(match.group(1) or match.group(2), "%Y-%m-%dT%H:%M:%SZ")
            return now - calendar.timegm(stamp)
    return None


def _log_file(pacer: paths.Pacer) -> Path | None:
    raw = pacer.env.get("PACER_LOG_FILE")
    return Path(raw) if raw else None


def _queue(root: Path, board: str, cap: int | None) -> tuple[dict, list[str]]:
    problems = []
    db = boards.db_path(root, board, {})
    try:
        snap = boards.snapshot(db)
    except boards.BoardUnreadable as exc:
        return {}, [f"cannot read the board: {exc}"]
    live = workers.scan(board, db)
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
        # The package the script runs: beside it once installed, ../pacer in a checkout.
        here = Path(script).resolve().parent
        package = next(
            (p for p in (here / "hermes_pacer", here.parent / "pacer" / "hermes_pacer") if p.is_dir()),
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
    log_file = _log_file(pacer)
    if log_file is not None:
        log_dir = log_file.parent
        try:
            info = log_dir.stat()
            owner = pwd.getpwuid(info.st_uid).pw_name
            ok = owner == user and bool(info.st_mode & stat.S_IWUSR)
            detail = f"{log_dir}: owner {owner}, mode {stat.filemode(info.st_mode)}"
        except (OSError, KeyError):
            ok, detail = False, f"{log_dir} missing"
        checks.append(
            Check(
                f"log directory of board {pacer.board}",
                ok,
                detail,
                "" if ok else f"the log directory must exist and be owned by {user}: run site.yml",
            )
        )
    return checks


def _config_checks(root: Path) -> list[Check]:
    checks = []
    homes = [root, *sorted(p for p in (root / "profiles").glob("*") if p.is_dir())]
    for home in homes:
        config = home / "config.yaml"
        value = boards.kanban_value(config, "dispatch_in_gateway")
        ok = value is not None and value.lower() in FALSE_WORDS
        checks.append(
            Check(
                f"config {config}",
                ok,
                f"kanban.dispatch_in_gateway: {value if value is not None else 'unset (Hermes default: on)'}",
                "" if ok else "set kanban.dispatch_in_gateway: false (site.yml does, keeping comments)",
            )
        )
    return checks


HOME_GLOBS = ("/root/.hermes", "/home/*/.hermes", "/var/lib/*/.hermes")


def _homes_with_boards(given: list[Path]) -> list[Path]:
    """Hermes homes to check: those given, else the usual places that hold a kanban.db."""
    if given:
        return list(given)
    found = []
    for pattern in HOME_GLOBS:
        found += [Path(p) for p in sorted(glob.glob(pattern)) if (Path(p) / "kanban.db").exists()]
    return found


def run(
    etc: Path = Path("/etc"),
    spool: Path = Path("/var/spool/cron/crontabs"),
    proc: str = "/proc",
    now: float | None = None,
    homes: list[Path] | None = None,
) -> dict:
    now = time.time() if now is None else now
    systemd_running = Path("/run/systemd/system").is_dir()
    # Keyed by home and board: two users' `default` boards are two boards.
    pacers = {
        (p.root, p.board): p for p in paths.managed_cron(etc) + paths.managed_timers(etc, systemd_running)
    }
    others = paths.other_cron_lines(etc, spool) + paths.other_units(etc) + paths.processes(proc)
    roots: dict[str, Path] = {str(home): home for home in _homes_with_boards(homes or [])}
    for pacer in pacers.values():
        roots[pacer.root] = Path(pacer.root)
    for found in others:
        if found.root:
            roots[found.root] = Path(found.root)

    reports, checks = [], []
    for key, root in sorted(roots.items()):
        checks += _config_checks(root)
        home_paths = others + paths.hermes_cron_jobs(root)
        for slug in sorted(set(_boards_on_disk(root)) | {board for home, board in pacers if home == key}):
            pacer = pacers.get((key, slug))
            report = BoardReport(slug, key, pacer.cap if pacer else None)
            if pacer and pacer.active:
                age = _last_log_age(_log_file(pacer), now)
                stale = max(3 * pacer.cadence_seconds, 90.0)
                detail = f"{pacer.scheduler} ({pacer.source}), cap {pacer.cap}"
                if age is None:
                    report.problems.append(f"the managed pacer has not logged a pass ({_log_file(pacer)})")
                elif age > stale:
                    report.problems.append(
                        f"the managed pacer last logged {age:.0f}s ago (expected every "
                        f"{pacer.cadence_seconds:.0f}s): is its scheduler running?"
                    )
                else:
                    detail += f", last pass {age:.0f}s ago"
                report.paths.append({"kind": "pacer", "detail": detail})
            elif pacer:
                report.problems.append(f"the managed pacer's timer is not active ({pacer.source})")
            for found in home_paths:
                if (found.board in ("*", slug)) and found.root in ("", key):
                    report.paths.append({"kind": found.kind, "detail": found.detail})
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
            report.queue, queue_problems = _queue(root, slug, report.cap)
            report.problems += queue_problems
            report.problems += board_health.verify_problems(root, slug, proc, now)
            reports.append(report)
        for pacer in pacers.values():
            if pacer.root == key:
                checks += _pacer_checks(pacer, pacer.env.get("PACER_USER"))
    ok = bool(reports) and all(not r.problems for r in reports) and all(c.ok for c in checks)
    return {"ok": ok, "boards": [asdict(r) for r in reports], "checks": [asdict(c) for c in checks]}


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
        lines.append(f"board {item['board']} ({item['root']}): {item['verdict']}, cap {item['cap']}; {shape}")
        for found in item["paths"]:
            lines.append(f"  path: {found['kind']}: {found['detail']}")
        for problem in item["problems"]:
            lines.append(f"  PROBLEM: {problem}")
    for check in report["checks"]:
        mark = "ok  " if check["ok"] else "FAIL"
        lines.append(
            f"{mark} {check['name']}: {check['detail']}" + (f" -> {check['fix']}" if check["fix"] else "")
        )
    return "\n".join(lines)
