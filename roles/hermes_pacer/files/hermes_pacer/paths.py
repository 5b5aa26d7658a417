"""Every dispatcher path of a host: what can start workers for which board.

A path is the managed pacer (a systemd timer or the managed cron line), a Hermes gateway whose
embedded dispatcher is on, a `hermes kanban daemon`, or any other cron line or systemd unit that
runs `hermes kanban dispatch`, `hermes kanban daemon` or a dispatch script (cronrules decides).
Two paths on one board race for claims; none leaves it undispatched.

`verify` runs as root and much of what it reads here is the Hermes user's (its crontab, its
Hermes cron jobs and their scripts, its processes' command lines and environments): every file is
read through safefile (bounded, no link another user made, nothing but a regular file) and every
/proc read is bounded. A file that is refused is named in `refused`, never followed.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

from . import board as boards
from . import cronrules, hermes_config, safefile

# A prompt of a Hermes cron job is text for an agent, not a command: any mention counts.
PROMPT_DISPATCH = re.compile(r"hermes-kanban-dispatch-|hermes\S*\s+kanban\s+(?:.*\s)?(?:dispatch|daemon)\b")
MANAGED_CRON = "cron.d/hermes-pacer"
PROC_LIMIT = 256 * 1024  # a command line or an environment is far smaller (ARG_MAX is 2 MiB)


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
        return _int(self.env.get("MAX_PARALLEL"), 2)

    @property
    def cadence_seconds(self) -> float:
        default = 60 if self.scheduler == "systemd" else 4
        return 60.0 / max(1, _int(self.env.get("RUNS_PER_MINUTE"), default))

    @property
    def journal_id(self) -> str:
        """The journal identifier its passes log under (systemd), "" when it logs to a file."""
        return self.env.get("PACER_JOURNAL_ID", "")


@dataclass
class DispatchPath:
    kind: str  # pacer | gateway | daemon | cron | systemd | hermes-cron
    board: str  # a slug, or "*" for every board of the home
    detail: str
    root: str = ""  # the Hermes root it dispatches; "" when unknown (it is then held against every home)


def _int(raw: str | None, default: int) -> int:
    try:
        return int(raw) if raw is not None else default
    except ValueError:
        return default


def refusal(path: str | os.PathLike, exc: OSError) -> str:
    """Why a file was not read, naming it once (safefile's messages already name the path)."""
    message = exc.strerror or str(exc)
    return message if os.fspath(path) in message else f"{os.fspath(path)}: {message}"


def _read(path: Path, refused: list[str]) -> str | None:
    """The text of a file read as safefile reads; None (and why, in `refused`) when it is not."""
    try:
        return safefile.read_text(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        refused.append(refusal(path, exc))
        return None


def managed_cron(etc: Path, refused: list[str] | None = None) -> list[Pacer]:
    found: list[Pacer] = []
    path = etc / MANAGED_CRON
    text = _read(path, refused if refused is not None else [])
    if text is None:
        return found
    for line in cronrules.lines(text, None):
        for argv, env in cronrules.commands(line):
            if os.path.basename(argv[0]) not in cronrules.SCRIPT_NAMES:
                continue
            env = {k: v for k, v in env.items() if not k.startswith("__")}
            env["PACER_USER"] = line.user
            env["PACER_SCRIPT"] = argv[0]
            log = line.command.partition(">>")[2].split()
            if log:
                env["PACER_LOG_FILE"] = log[0]
            found.append(Pacer(env.get("BOARD", boards.DEFAULT_BOARD), "cron", env, str(path)))
    return found


def unit_env(text: str) -> dict[str, str]:
    """The settings of a pacing unit verify needs, by the names the pass uses."""
    env: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key == "Environment":
            name, _, setting = value.partition("=")
            env[name] = setting
        elif key == "User":
            env["PACER_USER"] = value
        elif key == "ExecStart":
            env["PACER_SCRIPT"] = value.split()[0] if value.split() else ""
        elif key == "SyslogIdentifier":
            env["PACER_JOURNAL_ID"] = value.strip()
        elif key == "StandardOutput" and value.startswith("append:"):
            env["PACER_LOG_FILE"] = value.removeprefix("append:")  # units rendered before C3
    return env


def managed_timers(etc: Path, systemd_running: bool, refused: list[str] | None = None) -> list[Pacer]:
    found = []
    for unit in sorted((etc / "systemd" / "system").glob("hermes-pacer-*.service")):
        text = _read(unit, refused if refused is not None else [])
        if text is None or not re.search(r"^ExecStart=.*hermes-kanban-dispatch-capped", text, re.M):
            continue  # not a pacing pass: the board keeper (hermes-pacer-keeper.service)
        env = unit_env(text)
        env.setdefault("RUNS_PER_MINUTE", _timer_runs_per_minute(unit.with_suffix(".timer")))
        board = env.get("BOARD", unit.stem.removeprefix("hermes-pacer-"))
        timer = unit.with_suffix(".timer")
        active = safefile.exists(timer) and (not systemd_running or _unit_active(timer.name))
        found.append(Pacer(board, "systemd", env, str(timer), active=active))
    return found


def _timer_runs_per_minute(timer: Path) -> str:
    try:
        match = re.search(r"^OnUnitActiveSec=(\d+)ms", safefile.read_text(timer), re.M)
    except OSError:
        match = None
    return str(max(1, round(60000 / max(1, int(match.group(1)))))) if match else "60"


def _unit_active(name: str) -> bool:
    try:
        return (
            subprocess.run(["systemctl", "is-active", "--quiet", name], check=False, timeout=10).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


def _describe(dispatch: cronrules.Dispatch) -> str:
    parts = [f"board {dispatch.board}"]
    if dispatch.profile:
        parts.append(f"profile {dispatch.profile}")
    parts.append(f"home {dispatch.home or 'unknown'}")
    if dispatch.refused:
        parts.append(dispatch.refused)
    return ", ".join(parts)


def crontab_sources(etc: Path, spool: Path) -> list[tuple[Path, str | None]]:
    """(path, owner) of every crontab: user crontabs (owner = file name), then system ones (None)."""
    sources: list[tuple[Path, str | None]] = [(p, p.name) for p in sorted(spool.glob("*"))]
    sources += [(p, None) for p in [etc / "crontab", *sorted((etc / "cron.d").glob("*"))]]
    return sources


def other_cron_lines(etc: Path, spool: Path, refused: list[str] | None = None) -> list[DispatchPath]:
    """Cron lines outside the managed file that dispatch a board, each with its home and board."""
    found = []
    refused = refused if refused is not None else []
    for path, owner in crontab_sources(etc, spool):
        if path == etc / MANAGED_CRON:
            continue
        text = _read(path, refused)
        if text is None:
            continue
        for line, dispatches in cronrules.crontab_dispatches(text, owner):
            who = f" (crontab of {owner})" if owner else ""
            for dispatch in dispatches:
                found.append(
                    DispatchPath(
                        "cron",
                        dispatch.board,
                        f"{path}{who}: {line.text.strip()} [{_describe(dispatch)}]",
                        dispatch.home,
                    )
                )
    return found


def _masked(unit: Path) -> bool:
    """A unit masked by a link to /dev/null (`systemctl mask`, container images): it runs nothing."""
    try:
        return unit.is_symlink() and os.readlink(unit) == "/dev/null"
    except OSError:
        return False


def other_units(etc: Path, refused: list[str] | None = None) -> list[DispatchPath]:
    found = []
    for unit in sorted((etc / "systemd" / "system").glob("*.service")):
        if unit.name.startswith("hermes-pacer-") or _masked(unit):
            continue
        text = _read(unit, refused if refused is not None else [])
        if text is None:
            continue
        env = unit_env(text)
        user = env.pop("PACER_USER", "root")
        for line in text.splitlines():
            key, _, command = line.strip().partition("=")
            if not key.startswith("ExecStart"):
                continue
            for dispatch in cronrules.command_dispatches(command.lstrip("-@:+!"), user, env):
                detail = f"{unit}: {line.strip()} [{_describe(dispatch)}]"
                found.append(DispatchPath("systemd", dispatch.board, detail, dispatch.home))
    return found


def proc_read(path: str) -> bytes:
    """At most PROC_LIMIT bytes of a /proc file (a process can make its environment huge)."""
    handle = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        return os.read(handle, PROC_LIMIT)
    finally:
        os.close(handle)


def proc_argv(proc: str, pid: str) -> list[str]:
    return [a.decode("utf-8", "replace") for a in proc_read(f"{proc}/{pid}/cmdline").split(b"\0") if a]


def proc_env(proc: str, pid: str) -> dict[str, str]:
    raw = proc_read(f"{proc}/{pid}/environ")
    return dict(entry.decode("utf-8", "replace").split("=", 1) for entry in raw.split(b"\0") if b"=" in entry)


def _flag(argv: list[str], *names: str) -> str | None:
    for index, arg in enumerate(argv):
        for name in names:
            if arg == name and index + 1 < len(argv):
                return argv[index + 1]
            if arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


def gateway_config(argv: list[str], env: dict[str, str]) -> Path:
    """The config.yaml a gateway process reads: its profile's, its HERMES_HOME's, or the root's."""
    root = boards.hermes_root(env)
    profile = _flag(argv, "-p", "--profile")
    return (root / "profiles" / profile if profile else Path(env.get("HERMES_HOME") or root)) / "config.yaml"


def gateway_dispatches(argv: list[str], env: dict[str, str]) -> tuple[bool, str]:
    """Whether a gateway's embedded dispatcher is on, and the setting that says so (Hermes' rule)."""
    config = hermes_config.read(gateway_config(argv, env))
    return hermes_config.gateway_dispatch(config, env.get("HERMES_KANBAN_DISPATCH_IN_GATEWAY"))


def processes(proc: str = "/proc") -> list[DispatchPath]:
    """Running gateways with their dispatcher on, and `hermes kanban daemon` processes."""
    found = []
    seen: set[str] = set()
    for pid in filter(str.isdigit, os.listdir(proc)):
        try:
            argv = proc_argv(proc, pid)
            if not any("hermes" in a for a in argv[:3]):
                continue
            env = proc_env(proc, pid)
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
            raw = _flag(argv, "--board") or env.get("HERMES_KANBAN_BOARD") or boards.DEFAULT_BOARD
            board, _ = cronrules.normalise_slug(raw)
            found.append(DispatchPath("daemon", board, f"pid {pid}: {shlex.join(argv)}", root))
    return found


def _job_dispatches(home: Path, job: dict, user: str, refused: list[str]) -> str | None:
    """The board a Hermes cron job dispatches (its script, or a prompt that asks for a dispatch)."""
    if PROMPT_DISPATCH.search(str(job.get("prompt") or "")):
        return cronrules.normalise_slug(_prompt_board(str(job.get("prompt"))))[0]
    if not job.get("script"):
        return None
    script = Path(str(job["script"]))
    text = _read(script if script.is_absolute() else home / "scripts" / script, refused)
    for line in (text or "").splitlines():
        if line.strip().startswith("#"):
            continue
        dispatches = cronrules.command_dispatches(line, user, {"HOME": str(home.parent)})
        if dispatches:
            return dispatches[0].board
    return None


def _prompt_board(text: str) -> str:
    match = re.search(r"(?:\bBOARD=|--board[= ])['\"]?([A-Za-z0-9][A-Za-z0-9_-]{0,63})", text)
    return match.group(1) if match else boards.DEFAULT_BOARD


def hermes_cron_jobs(root: Path, refused: list[str] | None = None) -> list[DispatchPath]:
    """Hermes' own scheduled jobs (`hermes cron`, in <home>/cron/jobs.json of the root home and of
    each profile) whose prompt or script runs a dispatch."""
    found = []
    refused = refused if refused is not None else []
    profiles = sorted(p for p in (root / "profiles").glob("*") if p.is_dir() and not p.is_symlink())
    for home in [root, *profiles]:
        text = _read(home / "cron" / "jobs.json", refused)
        try:
            data = json.loads(text) if text else None
        except ValueError:
            continue
        jobs = data.get("jobs", []) if isinstance(data, dict) else data
        for job in jobs if isinstance(jobs, list) else []:
            if not isinstance(job, dict) or job.get("enabled") is False or job.get("paused"):
                continue
            board = _job_dispatches(home, job, "", refused)
            if board is not None:
                name = job.get("name") or job.get("id")
                found.append(
                    DispatchPath(
                        "hermes-cron", board, f"{home}/cron/jobs.json: job {name} runs a dispatch", str(root)
                    )
                )
    return found
