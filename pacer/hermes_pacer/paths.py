"""Every dispatcher path of a host: what can start workers for which board.

A path is the managed pacer (a systemd timer or the managed cron line), a Hermes gateway whose
embedded dispatcher is on, a `hermes kanban daemon`, or any other cron line or systemd unit that
runs `hermes kanban dispatch`, `hermes kanban daemon` or a dispatch script. Two paths on one board
race for claims; none leaves it undispatched.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

from . import board as boards

DISPATCH = re.compile(r"hermes-kanban-dispatch-|hermes\S*\s+kanban\s+(?:.*\s)?(?:dispatch|daemon)\b")
BOARD_ON_LINE = re.compile(r"(?:\bBOARD=|--board[= ])['\"]?([a-z0-9][a-z0-9_-]{0,63})")
ENV_ASSIGNMENT = re.compile(r"\b([A-Z_][A-Z0-9_]*)=(\S+)")
MANAGED_CRON = "cron.d/hermes-pacer"
FALSE_WORDS = {"false", "no", "off", "0"}


@dataclass
class Pacer:
    """The managed pacer of one board of one Hermes home, as its scheduler runs it."""

    board: str
    scheduler: str  # systemd | cron
    env: dict[str, str]
    source: str
    active: bool = True

    @property
    def root(self) -> str:
        return str(boards.hermes_root(self.env))

    @property
    def cap(self) -> int:
        return int(self.env.get("MAX_PARALLEL", "2"))

    @property
    def cadence_seconds(self) -> float:
        return 60.0 / int(self.env.get("RUNS_PER_MINUTE", "60" if self.scheduler == "systemd" else "4"))


@dataclass
class DispatchPath:
    kind: str  # pacer | gateway | daemon | cron | systemd
    board: str  # a slug, or "*" for every board of the home
    detail: str
    root: str = ""


def _cron_board(line: str) -> str:
    match = BOARD_ON_LINE.search(line)
    return match.group(1) if match else boards.DEFAULT_BOARD


def _active_lines(text: str):
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and not re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", stripped):
            yield stripped


def managed_cron(etc: Path) -> list[Pacer]:
    found = []
    path = etc / MANAGED_CRON
    try:
        text = path.read_text()
    except OSError:
        return found
    for line in _active_lines(text):
        if "hermes-kanban-dispatch-" not in line or line.startswith("@reboot"):
            continue
        command, _, log = line.partition(">>")
        words = command.split()
        env = dict(ENV_ASSIGNMENT.findall(command))
        env["PACER_USER"] = words[5] if len(words) > 5 else ""
        env["PACER_SCRIPT"] = next((w for w in words if "hermes-kanban-dispatch-" in w), "")
        if log.split():
            env["PACER_LOG_FILE"] = log.split()[0]
        board = env.get("BOARD", boards.DEFAULT_BOARD)
        found.append(Pacer(board, "cron", env, str(path)))
    return found


def managed_timers(etc: Path, systemd_running: bool) -> list[Pacer]:
    found = []
    for unit in sorted((etc / "systemd" / "system").glob("hermes-pacer-*.service")):
        env = {}
        for line in unit.read_text().splitlines():
            key, _, value = line.partition("=")
            if key == "Environment":
                name, _, setting = value.partition("=")
                env[name] = setting
            elif key == "User":
                env["PACER_USER"] = value
            elif key == "ExecStart":
                env["PACER_SCRIPT"] = value.split()[0]
            elif key == "StandardOutput" and value.startswith("append:"):
                env["PACER_LOG_FILE"] = value.removeprefix("append:")
        env.setdefault("RUNS_PER_MINUTE", _timer_runs_per_minute(unit.with_suffix(".timer")))
        board = env.get("BOARD", unit.stem.removeprefix("hermes-pacer-"))
        timer = unit.with_suffix(".timer")
        active = timer.exists() and (not systemd_running or _unit_active(timer.name))
        found.append(Pacer(board, "systemd", env, str(timer), active=active))
    return found


def _timer_runs_per_minute(timer: Path) -> str:
    try:
        match = re.search(r"^OnUnitActiveSec=(\d+)ms", timer.read_text(), re.M)
    except OSError:
        match = None
    return str(max(1, round(60000 / int(match.group(1))))) if match else "60"


def _unit_active(name: str) -> bool:
    try:
        return (
            subprocess.run(["systemctl", "is-active", "--quiet", name], check=False, timeout=10).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


def other_cron_lines(etc: Path, spool: Path) -> list[DispatchPath]:
    """Cron lines outside the managed file that dispatch a board."""
    found = []
    sources = [(p, p.name) for p in sorted(spool.glob("*"))] if spool.is_dir() else []
    sources += [(p, None) for p in [etc / "crontab", *sorted((etc / "cron.d").glob("*"))]]
    for path, user in sources:
        if path == etc / MANAGED_CRON or not path.is_file():
            continue
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        for line in _active_lines(text):
            if DISPATCH.search(line):
                who = f" (crontab of {user})" if user else ""
                found.append(DispatchPath("cron", _cron_board(line), f"{path}{who}: {line}"))
    return found


def other_units(etc: Path) -> list[DispatchPath]:
    found = []
    for unit in sorted((etc / "systemd" / "system").glob("*.service")):
        if unit.name.startswith("hermes-pacer-"):
            continue
        try:
            text = unit.read_text(errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            if line.strip().startswith("ExecStart") and DISPATCH.search(line):
                found.append(DispatchPath("systemd", _cron_board(line), f"{unit}: {line.strip()}"))
    return found


def _proc_env(pid: str) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(entry.decode("utf-8", "replace").split("=", 1) for entry in raw.split(b"\0") if b"=" in entry)


def _flag(argv: list[str], *names: str) -> str | None:
    for index, arg in enumerate(argv):
        for name in names:
            if arg == name and index + 1 < len(argv):
                return argv[index + 1]
            if arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


def gateway_dispatches(argv: list[str], env: dict[str, str]) -> tuple[bool, str]:
    """Whether a gateway's embedded dispatcher is on, and the config that says so."""
    override = env.get("HERMES_KANBAN_DISPATCH_IN_GATEWAY", "").strip().lower()
    root = boards.hermes_root(env)
    profile = _flag(argv, "-p", "--profile")
    config = (
        root / "profiles" / profile if profile else Path(env.get("HERMES_HOME") or root)
    ) / "config.yaml"
    if override:
        return override not in FALSE_WORDS, f"HERMES_KANBAN_DISPATCH_IN_GATEWAY={override}"
    value = boards.kanban_value(config, "dispatch_in_gateway")
    if value is None:
        return True, f"{config}: kanban.dispatch_in_gateway unset (Hermes' default: on)"
    return value.lower() not in FALSE_WORDS, f"{config}: kanban.dispatch_in_gateway: {value}"


def processes(proc: str = "/proc") -> list[DispatchPath]:
    """Running gateways with their dispatcher on, and `hermes kanban daemon` processes."""
    found = []
    seen: set[str] = set()
    for pid in filter(str.isdigit, os.listdir(proc)):
        try:
            argv = [
                a.decode("utf-8", "replace")
                for a in Path(f"{proc}/{pid}/cmdline").read_bytes().split(b"\0")
                if a
            ]
            if not any("hermes" in a for a in argv[:3]):
                continue
            env = _proc_env(pid)
        except OSError:
            continue
        words = " ".join(argv)
        root = str(boards.hermes_root(env))
        if re.search(r"\bgateway\s+run\b", words):
            on, why = gateway_dispatches(argv, env)
            key = f"gateway:{root}:{_flag(argv, '-p', '--profile')}"
            if on and key not in seen:
                seen.add(key)
                found.append(DispatchPath("gateway", "*", f"pid {pid}: {shlex.join(argv)} ({why})", root))
        elif re.search(r"\bkanban\b.*\bdaemon\b", words):
            board = _flag(argv, "--board") or env.get("HERMES_KANBAN_BOARD") or boards.DEFAULT_BOARD
            found.append(DispatchPath("daemon", board, f"pid {pid}: {shlex.join(argv)}", root))
    return found


def hermes_cron_jobs(root: Path) -> list[DispatchPath]:
    """Hermes' own scheduled jobs (`hermes cron`, in <home>/cron/jobs.json of the root home and of
    each profile) whose prompt or script runs a dispatch."""
    found = []
    for home in [root, *sorted(p for p in (root / "profiles").glob("*") if p.is_dir())]:
        try:
            data = json.loads((home / "cron" / "jobs.json").read_text())
        except (OSError, ValueError):
            continue
        jobs = data.get("jobs", []) if isinstance(data, dict) else data
        for job in jobs if isinstance(jobs, list) else []:
            if not isinstance(job, dict) or job.get("enabled") is False or job.get("paused"):
                continue
            texts = [str(job.get("prompt") or "")]
            if job.get("script"):
                script = Path(str(job["script"]))
                with contextlib.suppress(OSError):
                    texts.append((script if script.is_absolute() else home / "scripts" / script).read_text())
            text = next((t for t in texts if DISPATCH.search(t)), None)
            if text is not None:
                name = job.get("name") or job.get("id")
                found.append(
                    DispatchPath(
                        "hermes-cron",
                        _cron_board(text),
                        f"{home}/cron/jobs.json: job {name} runs a dispatch",
                        str(root),
                    )
                )
    return found
