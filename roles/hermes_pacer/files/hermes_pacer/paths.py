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
from dataclasses import dataclass, field
from pathlib import Path

from . import board as boards
from . import cronrules, hermes_config, host, safefile, settings

# A prompt of a Hermes cron job is text for an agent, not a command: any mention counts.
PROMPT_DISPATCH = re.compile(r"hermes-kanban-dispatch-|hermes\S*\s+kanban\s+(?:.*\s)?(?:dispatch|daemon)\b")
PROC_LIMIT = 256 * 1024  # a command line or an environment is far smaller (ARG_MAX is 2 MiB)


@dataclass
class Pacer:
    """The managed pacer of one board of one Hermes home, as its settings file says."""

    board: str
    scheduler: str  # systemd | cron
    env: dict[str, str]  # the settings file (host.SETTINGS_KEYS)
    source: str  # the settings file
    active: bool = True
    problem: str = ""  # its scheduler does not run it as the file says (with the fix)

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


@dataclass
class Managed:
    """What the role installed: a pacer per settings file, and what is wrong with them."""

    pacers: list[Pacer] = field(default_factory=list)
    # Scheduler entries of the role that run no settings file (a host converged by an older
    # version): they still dispatch, so they are paths of their boards.
    orphans: list[DispatchPath] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # each fixed by running site.yml


RUN_SITE = "run site.yml"


@dataclass
class _Entry:
    """One scheduler entry of the role: a pacing unit or a line of the managed cron file."""

    board: str
    settings: str  # the settings file it names, "" when none
    detail: str
    root: str = ""


def _cron_entries(etc: Path, refused: list[str]) -> list[_Entry]:
    path = host.cron_file(etc)
    text = _read(path, refused)
    found = []
    for line in cronrules.lines(text or "", None):
        for argv, env in cronrules.commands(line):
            if os.path.basename(argv[0]) not in host.SCRIPT_NAMES:
                continue
            dispatch = cronrules.command_dispatches(shlex.join(argv), line.user, env)
            board = dispatch[0].board if dispatch else boards.DEFAULT_BOARD
            root = dispatch[0].home if dispatch else ""
            found.append(_Entry(board, cronrules.settings_option(argv), f"{path}: {line.text.strip()}", root))
    return found


def _runs_keeper(text: str) -> bool:
    """A unit whose ExecStart runs `hermes-pacer keep-open`: a board keeper, which dispatches nothing."""
    return any(line.startswith("ExecStart") and "keep-open" in line.split() for line in text.splitlines())


def _unit_entries(etc: Path, refused: list[str], misnamed: list[Path]) -> list[_Entry]:
    """The pacing units; a board keeper under a pacing unit's name (hermes-pacer before 0.2.0 named
    it hermes-pacer-keeper.service, the name of the pacer of a board `keeper`) goes in `misnamed`."""
    found = []
    for unit in sorted(host.systemd_dir(etc).glob(host.unit_name("*"))):
        text = _read(unit, refused)
        if text is None:
            continue
        if _runs_keeper(text):
            misnamed.append(unit)
            continue
        named = [line.partition("=") for line in text.splitlines()]
        files = [value.lstrip("-") for key, _, value in named if key == "EnvironmentFile"]
        found.append(_Entry(host.board_of_unit(unit.name), files[0] if files else "", str(unit)))
    return found


def _check_scheduler(pacer: Pacer, path: Path, units: list[_Entry], cron: list[_Entry], etc: Path) -> None:
    """Whether the scheduler the file names really runs that file (a plain presence check)."""
    if pacer.scheduler == "systemd":
        unit = host.systemd_dir(etc) / host.unit_name(pacer.board)
        if not any(e.detail == str(unit) and e.settings == str(path) for e in units):
            pacer.problem = f"{unit} does not run {path} (no EnvironmentFile={path}): {RUN_SITE}"
        elif not pacer.active:
            pacer.problem = f"its timer {host.timer_name(pacer.board)} is not active: {RUN_SITE}"
    elif pacer.scheduler == "cron":
        if not any(e.settings == str(path) for e in cron):
            cron_file = host.cron_file(etc)
            pacer.problem = f"no line of {cron_file} runs {host.SETTINGS_OPTION} {path}: {RUN_SITE}"
    else:
        pacer.problem = (
            f"{path}: PACER_SCHEDULER={pacer.scheduler!r} is invalid: expected "
            f"{' or '.join(host.SCHEDULERS)}; {RUN_SITE}"
        )


def _pacer_of(path: Path, env: dict[str, str], etc: Path, systemd_running: bool) -> Pacer:
    board = env.get("BOARD") or host.board_of_settings_file(path)
    scheduler = env.get("PACER_SCHEDULER", "")
    active = True
    if scheduler == "systemd":
        timer = host.systemd_dir(etc) / host.timer_name(board)
        active = safefile.exists(timer) and (not systemd_running or _unit_active(timer.name))
    return Pacer(board, scheduler, env, str(path), active=active)


def managed(etc: Path, systemd_running: bool, refused: list[str] | None = None) -> Managed:
    """The managed pacers: one per settings file (host.settings_dir), each checked against the
    scheduler entry that should run it; and the role's entries that run no settings file."""
    refused = refused if refused is not None else []
    found = Managed()
    misnamed: list[Path] = []
    units, cron = _unit_entries(etc, refused, misnamed), _cron_entries(etc, refused)
    found.problems += [
        f"{unit} runs the board keeper under a pacer's name (as hermes-pacer before 0.2.0 named it): "
        f"site.yml moves it to {host.KEEPER_UNIT}"
        for unit in misnamed
    ]
    files = {str(p): p for p in sorted(host.settings_dir(etc).glob(f"*{host.SETTINGS_SUFFIX}"))}
    # A settings file the role wrote elsewhere (hermes_pacer_settings_dir) is named by its entry.
    files.update({e.settings: Path(e.settings) for e in units + cron if os.path.isabs(e.settings)})
    read: set[str] = set()
    for name, path in sorted(files.items()):
        try:
            env = settings.read_file(path)
        except settings.SettingError as exc:
            if os.path.lexists(path):  # a missing one is said by the entry that names it
                found.problems.append(str(exc))
            continue
        read.add(name)
        pacer = _pacer_of(path, env, etc, systemd_running)
        missing = [k for k in host.required_keys(pacer.scheduler) if not env.get(k)]
        if missing:
            found.problems.append(f"settings file {path} lacks {', '.join(missing)}")
        _check_scheduler(pacer, path, units, cron, etc)
        found.pacers.append(pacer)
    for entry in units + cron:
        if entry.settings not in read:
            why = (
                f"settings file {entry.settings}, which cannot be read"
                if entry.settings
                else "no settings file"
            )
            detail = f"{entry.detail} ({why})"
            found.orphans.append(DispatchPath("pacer-orphan", entry.board, detail, entry.root))
            found.problems.append(
                f"{entry.detail} paces board {entry.board} with {why} (a host converged by an older "
                "hermes-pacer, or a file removed by hand)"
            )
    return found


def unit_env(text: str) -> tuple[str, dict[str, str]]:
    """The user (root when none) and the Environment= settings of a unit that is not the role's."""
    user, env = "root", {}
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key == "Environment":
            name, _, setting = value.partition("=")
            env[name] = setting
        elif key == "User":
            user = value
    return user, env


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
        if path == host.cron_file(etc):
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
        if unit.name.startswith(host.UNIT_PREFIX) or _masked(unit):
            continue
        text = _read(unit, refused if refused is not None else [])
        if text is None:
            continue
        user, env = unit_env(text)
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
            board, _ = host.normalise_slug(raw)
            found.append(DispatchPath("daemon", board, f"pid {pid}: {shlex.join(argv)}", root))
    return found


def _job_dispatches(home: Path, job: dict, user: str, refused: list[str]) -> str | None:
    """The board a Hermes cron job dispatches (its script, or a prompt that asks for a dispatch)."""
    if PROMPT_DISPATCH.search(str(job.get("prompt") or "")):
        return host.normalise_slug(_prompt_board(str(job.get("prompt"))))[0]
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
    for home in host.hermes_homes(root, include_links=False):
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
