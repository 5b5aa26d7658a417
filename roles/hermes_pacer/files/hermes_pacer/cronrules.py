"""The one rule for crontab lines: does a line dispatch a Hermes board, which board, of which home.

`verify` uses it to find second dispatcher paths, and `adopt-cron` to comment out the hand-made
lines of managed boards, so both always agree. A line *dispatches* when a command it runs (past
env assignments, `cd x &&`, `flock`, `sh -c '...'`, `timeout`, `nice`, `env`, `sudo -u`...) is one
of the recipe's dispatch scripts or `hermes [-p X] kanban [--board X] dispatch|daemon` (argv[0]
any path ending in hermes, or `python -m hermes_cli.main`). A line that only names a script or a
log (`tail .../kanban-dispatch-default.log`, `grep hermes-kanban-dispatch-`) does not.

Its board follows Hermes: `--board X` on the hermes call, else HERMES_KANBAN_BOARD (and, for the
recipe's scripts, BOARD, which they read first) on the line or on an earlier env line of the same
crontab, else `default` (the board Hermes calls current cannot be known from cron). Slugs are
normalised as hermes_cli.kanban_db._normalize_board_slug does (strip, lowercase, then
^[a-z0-9][a-z0-9_-]{0,63}$); a slug Hermes would refuse is reported as such. Its home: HERMES_HOME
/ HERMES_KANBAN_HOME / HOME on the line or an earlier env line, else the home (from passwd) of
the user the line runs as; the Hermes root is derived from them as board.hermes_root does.
"""

from __future__ import annotations

import os
import pwd
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from . import board as boards
from . import host, settings
from .host import SCRIPT_NAMES, normalise_slug

SHIM_NAME = "hermes-pacer"
SHIM_DISPATCH = ("capped", "subminute")
ASSIGNMENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", re.S)
SCHEDULE_WORDS = ("@reboot", "@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
SEPARATORS = {";", "&&", "||", "|", "&", "|&", ";;", "(", ")", "\n"}
REDIRECTIONS = {">", ">>", "<", ">&", "<&", "&>", "&>>", ">|", "<>", "<<", "<<<"}
SHELLS = {"sh", "bash", "dash", "zsh", "ksh"}
# Wrappers that run the rest of their arguments as a command: name -> options taking a value.
WRAPPERS = {
    "nice": {"-n", "--adjustment"},
    "ionice": {"-c", "-n", "-p", "-P", "-u", "--class", "--classdata"},
    "nohup": set(),
    "setsid": set(),
    "exec": {"-a"},
    "command": set(),
    "chronic": set(),
    "stdbuf": {"-i", "-o", "-e"},
    "time": {"-f", "-o"},
}
# hermes' global options that take a value (hermes_cli.main._apply_profile_override).
HERMES_VALUE_FLAGS = {"-z", "--oneshot", "-m", "--model", "--provider", "-t", "--toolsets", "-r", "--resume"}
HERMES_VALUE_FLAGS |= {"-s", "--skills", "--usage-file"}


@dataclass(frozen=True)
class Dispatch:
    """One command of a crontab line that dispatches a board."""

    board: str  # the normalised slug, or the raw text when Hermes would refuse it
    home: str  # the Hermes root ("" when the user's home is unknown)
    profile: str  # the -p/--profile named on the hermes call ("" when none)
    command: str  # "hermes kanban dispatch", "hermes kanban daemon" or the script's name
    refused: str = ""  # why Hermes would refuse the board slug, when it would


@dataclass
class CronLine:
    """An active (not comment, not env) line of a crontab, with the environment cron gives it."""

    index: int  # line number in the file, from 0
    text: str
    user: str  # the user it runs as ("" when unknown)
    command: str
    env: dict[str, str] = field(default_factory=dict)  # the crontab's env lines above it


def _env_line(stripped: str) -> tuple[str, str] | None:
    """`NAME=value` / `NAME = "value"` of a crontab env line, as cron reads it."""
    match = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$", stripped)
    if not match:
        return None
    value = match.group(2).strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1]
    return match.group(1), value


def lines(text: str, owner: str | None) -> list[CronLine]:
    """Active lines of a crontab: `owner` is the user of a user crontab, None for a system one
    (/etc/crontab, /etc/cron.d/*), whose lines name their user after the schedule."""
    env: dict[str, str] = {}
    found = []
    for index, raw in enumerate(text.removeprefix("\ufeff").splitlines()):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        assignment = _env_line(stripped)
        if assignment:
            env[assignment[0]] = assignment[1]
            continue
        schedule = 1 if stripped.startswith("@") else 5
        fields = schedule + (1 if owner is None else 0)
        parts = stripped.split(None, fields)
        if len(parts) <= fields:
            continue
        user = parts[schedule] if owner is None else owner
        found.append(CronLine(index, raw, user, parts[fields], dict(env)))
    return found


def _cron_percent(command: str) -> str:
    """The command cron hands the shell: an unescaped % ends it (the rest is stdin)."""
    out, index = [], 0
    while index < len(command):
        if command[index] == "\\" and command[index + 1 : index + 2] == "%":
            out.append("%")
            index += 2
            continue
        if command[index] == "%":
            break
        out.append(command[index])
        index += 1
    return "".join(out)


def _tokens(command: str) -> list[str]:
    lexer = shlex.shlex(command, posix=True, punctuation_chars=";&|()<>")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    try:
        return list(lexer)
    except ValueError:  # an unbalanced quote: read it word by word rather than not at all
        return command.split()


def _simple_commands(command: str) -> list[list[str]]:
    """The simple commands of a shell command line, redirections dropped."""
    commands, current = [], []
    tokens = _tokens(command)
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if token in SEPARATORS:
            commands.append(current)
            current = []
        elif token in REDIRECTIONS:
            index += 1  # its target
        elif re.fullmatch(r"\d+", token) and index + 1 < len(tokens) and tokens[index + 1] in REDIRECTIONS:
            pass  # the descriptor of `2>&1`
        else:
            current.append(token)
        index += 1
    commands.append(current)
    return [c for c in commands if c]


def _skip_options(argv: list[str], with_value: set[str]) -> list[str]:
    index = 0
    while index < len(argv) and argv[index].startswith("-") and argv[index] != "-":
        if argv[index] == "--":
            return argv[index + 1 :]
        index += 2 if argv[index] in with_value else 1
    return argv[index:]


def _user_env(user: str, env: dict[str, str]) -> dict[str, str]:
    """The environment after switching to `user` (sudo, runuser): its own HOME, no Hermes paths."""
    switched = {k: v for k, v in env.items() if not k.startswith("HERMES_") and k != "HOME"}
    switched["__USER__"] = user
    return switched


def _unwrap(argv: list[str], env: dict[str, str], depth: int) -> list[tuple[list[str], dict[str, str]]]:
    """The commands `argv` runs, with their environment, through wrappers and `sh -c`."""
    env = dict(env)
    while argv and ASSIGNMENT.match(argv[0]):
        name, value = ASSIGNMENT.match(argv[0]).groups()
        env[name] = value
        argv = argv[1:]
    if not argv or depth > 8:
        return []
    name = os.path.basename(argv[0])
    rest = argv[1:]
    if name in WRAPPERS:
        return _unwrap(_skip_options(rest, WRAPPERS[name]), env, depth + 1)
    if name == "env":
        return _unwrap_env(rest, env, depth)
    if name == "timeout":
        rest = _skip_options(rest, {"-s", "-k", "--signal", "--kill-after"})
        return _unwrap(rest[1:], env, depth + 1)
    if name == "flock":
        return _unwrap_flock(rest, env, depth)
    if name in ("sudo", "runuser"):
        return _unwrap_sudo(rest, env, depth)
    if name in SHELLS:
        return _unwrap_shell(rest, env, depth)
    if re.fullmatch(r"python[0-9.]*", name):
        return _unwrap_python(rest, env, depth)
    return [(argv, env)]


def _unwrap_python(rest: list[str], env: dict[str, str], depth: int):
    """`python [options] -m hermes_cli.main ...` or `python [options] /path/to/hermes ...`."""
    index = 0
    while index < len(rest) and rest[index].startswith("-"):
        if rest[index] == "-m":
            module = rest[index + 1 : index + 2]
            if module in (["hermes_cli.main"], ["hermes_cli"]):
                return [(["hermes", *rest[index + 2 :]], env)]
            return []
        if rest[index] == "-c":
            return []
        index += 2 if rest[index] in ("-W", "-X") else 1
    return _unwrap(rest[index:], env, depth + 1)


def _unwrap_env(rest: list[str], env: dict[str, str], depth: int):
    index = 0
    while index < len(rest) and rest[index].startswith("-"):
        option = rest[index]
        if option in ("-i", "--ignore-environment", "-"):
            env = {"__USER__": env["__USER__"]} if "__USER__" in env else {}
        elif option in ("-u", "--unset") and index + 1 < len(rest):
            env.pop(rest[index + 1], None)
            index += 1
        elif option in ("-S", "--split-string") and index + 1 < len(rest):
            return _unwrap([*_tokens(rest[index + 1]), *rest[index + 2 :]], env, depth + 1)
        elif option in ("-C", "--chdir"):
            index += 1
        elif option == "--":
            index += 1
            break
        index += 1
    return _unwrap(rest[index:], env, depth + 1)


def _unwrap_flock(rest: list[str], env: dict[str, str], depth: int):
    rest = _skip_options(rest, {"-w", "--timeout", "-E", "--conflict-exit-code"})
    if len(rest) < 2:
        return []  # `flock FD`: locks a descriptor, runs nothing
    command = rest[1:]
    if command[0] in ("-c", "--command") and len(command) > 1:
        return _unwrap(["sh", "-c", command[1]], env, depth + 1)
    return _unwrap(command, env, depth + 1)


def _unwrap_sudo(rest: list[str], env: dict[str, str], depth: int):
    user = "root"
    index = 0
    while index < len(rest) and rest[index].startswith("-"):
        option = rest[index]
        if option == "--":
            index += 1
            break
        if option in ("-u", "--user") and index + 1 < len(rest):
            user = rest[index + 1]
            index += 1
        elif option.startswith("--user="):
            user = option.split("=", 1)[1]
        elif option in ("-g", "--group", "-C", "-h", "-p", "-r", "-t", "-U", "-D", "-T"):
            index += 1
        index += 1
    return _unwrap(rest[index:], _user_env(user, env), depth + 1)


def _unwrap_shell(rest: list[str], env: dict[str, str], depth: int):
    index = 0
    while index < len(rest) and rest[index].startswith("-") and rest[index] != "-":
        option = rest[index]
        if option == "--":
            index += 1
            break
        if not option.startswith("--") and "c" in option[1:]:
            if index + 1 >= len(rest):
                return []
            found = []
            for argv in _simple_commands(rest[index + 1]):
                found += _unwrap(argv, env, depth + 1)
            return found
        index += 2 if option in ("-o", "+o", "-O", "+O") else 1
    return _unwrap(rest[index:], env, depth + 1)  # `sh script.sh args`


def _hermes_dispatch(argv: list[str]) -> tuple[str, str, str] | None:
    """(action, --board value or "", profile) of `hermes ... kanban [--board X] dispatch|daemon`."""
    profile, board = "", None
    index, in_kanban, action = 1, False, ""
    while index < len(argv):
        arg = argv[index]
        if arg == "--":
            break
        if arg in ("-p", "--profile") and index + 1 < len(argv):
            profile = argv[index + 1]
            index += 2
            continue
        if arg.startswith("--profile="):
            profile = arg.split("=", 1)[1]
        elif not in_kanban and arg in HERMES_VALUE_FLAGS:
            index += 1
        elif not in_kanban and arg == "kanban":
            in_kanban = True
        elif in_kanban and not action and arg == "--board" and index + 1 < len(argv):
            board = argv[index + 1]
            index += 1
        elif in_kanban and not action and arg.startswith("--board="):
            board = arg.split("=", 1)[1]
        elif in_kanban and not action and not arg.startswith("-"):
            action = arg
        elif not in_kanban and not arg.startswith("-"):
            return None  # another subcommand: `hermes chat ...`
        index += 1
    if action not in ("dispatch", "daemon"):
        return None
    return action, board if board is not None else "", profile


def _home(env: dict[str, str], user: str) -> str:
    user = env.get("__USER__", user)
    full = dict(env)
    if not full.get("HOME"):
        try:
            full["HOME"] = pwd.getpwnam(user).pw_dir if user else ""
        except KeyError:
            full["HOME"] = ""
    if not (
        full.get("HOME") or full.get("HERMES_HOME", "").strip() or full.get("HERMES_KANBAN_HOME", "").strip()
    ):
        return ""
    if not full.get("HOME"):
        full["HOME"] = "/nonexistent"
    return os.path.normpath(boards.hermes_root(full))


def settings_option(argv: list[str]) -> str:
    """The settings file a pacing script is given (`--settings FILE`), "" when none."""
    for index, arg in enumerate(argv):
        if arg == host.SETTINGS_OPTION and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith(host.SETTINGS_OPTION + "="):
            return arg.split("=", 1)[1]
    return ""


def _settings_board(argv: list[str]) -> str:
    """BOARD of the script's settings file, as the pass reads it (its name when it cannot be read)."""
    path = settings_option(argv)
    if not path:
        return ""
    try:
        return settings.read_file(path).get("BOARD", "")
    except settings.SettingError:
        return host.board_of_settings_file(Path(path))


def _dispatch_of(argv: list[str], env: dict[str, str], user: str) -> Dispatch | None:
    name = os.path.basename(argv[0])
    if name in SCRIPT_NAMES or (name == SHIM_NAME and argv[1:2] and argv[1] in SHIM_DISPATCH):
        # The recipe's scripts read BOARD first (the environment, then their settings file), then
        # the board Hermes calls current.
        raw = env.get("BOARD", "").strip() or _settings_board(argv) or env.get("HERMES_KANBAN_BOARD", "")
        slug, refused = normalise_slug(raw)
        return Dispatch(
            slug, _home(env, user), "", name if name != SHIM_NAME else f"{name} {argv[1]}", refused
        )
    if not name.endswith("hermes"):
        return None
    found = _hermes_dispatch(argv)
    if found is None:
        return None
    action, board, profile = found
    if board.strip():
        slug, refused = normalise_slug(board)
    else:
        # HERMES_KANBAN_BOARD is honoured when Hermes accepts it, else the current board.
        slug, refused = normalise_slug(env.get("HERMES_KANBAN_BOARD", ""))
        slug, refused = (boards.DEFAULT_BOARD, "") if refused else (slug, refused)
    return Dispatch(slug, _home(env, user), profile, f"hermes kanban {action}", refused)


def commands(line: CronLine) -> list[tuple[list[str], dict[str, str]]]:
    """Every command the line runs, past its wrappers, with the environment it runs with."""
    found = []
    for argv in _simple_commands(_cron_percent(line.command)):
        found += _unwrap(argv, line.env, 0)
    return found


def dispatches(line: CronLine) -> list[Dispatch]:
    """Every dispatch the line runs (usually none or one)."""
    found = (_dispatch_of(argv, env, line.user) for argv, env in commands(line))
    return [dispatch for dispatch in found if dispatch is not None]


def command_dispatches(command: str, user: str, env: dict[str, str] | None = None) -> list[Dispatch]:
    """The dispatches of one shell command (a unit's ExecStart, a line of a script)."""
    return dispatches(CronLine(0, command, user, command, dict(env or {})))


def crontab_dispatches(text: str, owner: str | None) -> list[tuple[CronLine, list[Dispatch]]]:
    """The lines of a crontab that dispatch, each with what it dispatches."""
    return [(line, found) for line in lines(text, owner) if (found := dispatches(line))]


def same_home(a: str, b: str | Path) -> bool:
    return bool(a) and os.path.normpath(a) == os.path.normpath(str(b))
