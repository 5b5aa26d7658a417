"""Environment interface of the pacing scripts, validated before anything runs.

The names are those of the manual recipe (MAX_PARALLEL, BOARD, RUNS_PER_MINUTE, CAP_SCRIPT), so an
existing crontab line keeps working. The role writes them to a settings file per board
(host.settings_file, `--settings FILE` or PACER_SETTINGS_FILE); the environment overrides the file.
Every error names the variable (or the file and line) and the accepted values.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import stat
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from . import host, safefile

BOARD_SLUG = host.SLUG  # for the modules that name it so (flowspec, the CLI)
DEFAULT_LOCK_DIR = host.DEFAULT_LOCK_DIR
SETTINGS_FILE_VARIABLE = "PACER_SETTINGS_FILE"
SETTINGS_FILE_LIMIT = 64 * 1024
# systemd's EnvironmentFile= and this reader agree on such a line: no quoting, no expansion.
SETTINGS_LINE = re.compile(r"([A-Z_][A-Z0-9_]*)=([^\s'\"$\\%]*)")
# An Ansible inventory group name, as the role renders it.
FLEET_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
FLEET_NAME_RULE = "letters, digits, _, . and -, 1-64 characters, not starting with . or -"
SETTINGS_FORMAT = "expected KEY=value lines and # comments, the value without whitespace, quotes, $, \\ or %"


class SettingError(ValueError):
    """Bad input: the message names the setting and the accepted values."""


@dataclass(frozen=True)
class Endpoint:
    """The LLM endpoint whose budget the board shares with the other boards that name it."""

    name: str
    url: str | None  # None: model.base_url of the Hermes home's config.yaml, read by the pass
    kind: str
    max_parallel: int
    boards: tuple[str, ...]  # the host's boards on it (the pass adds its own)
    caps: dict[str, int]  # their own caps, where the settings say (`slug:cap`)
    timeout: int
    ramp_seconds: int
    fleet: Fleet | None = None  # None: the endpoint's cap is this host's alone


@dataclass(frozen=True)
class Fleet:
    """The hosts of an inventory group that share the endpoint's cap (docs/fleet.md)."""

    name: str  # the inventory group
    hosts: int  # n
    index: int  # i, 0 to n-1
    share: int  # the static share, while the endpoint reports no load
    min_share: int  # this host's floor
    reserve: int  # the other hosts' floors together
    slice_seconds: int  # S
    startup_seconds: int  # G: the end of each slice admits nothing


@dataclass(frozen=True)
class Settings:
    max_parallel: int
    board: str | None  # None: the board Hermes calls current
    hermes_bin: str
    hermes_timeout: float
    lock_dir: Path
    log_format: str
    housekeeping_seconds: int
    integrity_check_seconds: int
    runs_per_minute: int
    cap_script: str | None
    endpoint: Endpoint | None = None
    state_dir: Path | None = None  # None: no status file
    metrics_dir: Path | None = None  # None: no Prometheus textfiles


def _integer(env: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name, "").strip()
    if raw == "":
        return default
    if not re.fullmatch(r"[0-9]+", raw) or not low <= int(raw) <= high:
        raise SettingError(f"{name}={raw!r} is invalid: expected an integer from {low} to {high}")
    return int(raw)


def _hermes_bin(env: dict[str, str]) -> str:
    raw = env.get("HERMES_BIN", "").strip()
    if raw == "":
        found = shutil.which("hermes", path=env.get("PATH", os.defpath))
        if found is None:
            raise SettingError(
                "HERMES_BIN is not set and no 'hermes' is on PATH: "
                "set HERMES_BIN to the full path of an executable hermes"
            )
        return found
    if not (os.path.isfile(raw) and os.access(raw, os.X_OK)):
        raise SettingError(f"HERMES_BIN={raw!r} is invalid: expected the path of an executable hermes")
    return raw


def _board(env: dict[str, str]) -> str | None:
    raw = env.get("BOARD", "").strip()
    if raw == "":
        return None
    if not host.SLUG.match(raw):
        raise SettingError(f"BOARD={raw!r} is invalid: expected a board slug of {host.SLUG_RULE}")
    return raw


# Where Hermes looks for its boards. A relative path would be resolved against whatever directory
# the pass happens to start in (cron: the home; systemd: /), not where Hermes' workers look.
# Hermes expands `~` in the kanban overrides but not in HERMES_HOME.
HERMES_PATHS = (("HERMES_KANBAN_DB", True), ("HERMES_KANBAN_HOME", True), ("HERMES_HOME", False))


def _check_hermes_paths(env: dict[str, str]) -> None:
    for name, expands_user in HERMES_PATHS:
        raw = env.get(name, "").strip()
        path = os.path.expanduser(raw) if expands_user else raw
        if raw and not os.path.isabs(path):
            raise SettingError(f"{name}={raw!r} is invalid: expected an absolute path")


def url_without_credentials(url: str) -> str:
    """A URL as the log and the reports may show it: any user:password@ taken out."""
    scheme, sep, rest = url.strip().partition("://")
    netloc, slash, path = rest.partition("/")
    return f"{scheme}{sep}{netloc.rpartition('@')[2]}{slash}{path}"


def endpoint_url(name: str, raw: str) -> str:
    """A base URL the pass may probe: http(s), a host, nothing after it but a path."""
    parts = urllib.parse.urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise SettingError(
            f"{name}={url_without_credentials(raw)!r} is invalid: expected an http:// or https:// base "
            "URL with a host (e.g. http://127.0.0.1:8000/v1), no query or fragment"
        )
    try:
        parts.port  # noqa: B018 - a port that is not a number raises here
    except ValueError:
        raise SettingError(f"{name}: the port is invalid: expected a number from 1 to 65535") from None
    return raw


def _endpoint(env: dict[str, str], board: str | None, board_cap: int) -> Endpoint | None:
    name = env.get("PACER_ENDPOINT", "").strip()
    if not name:
        stray = sorted(k for k in env if k.startswith(("PACER_ENDPOINT_", "PACER_FLEET")) and env[k].strip())
        if stray:
            raise SettingError(f"{stray[0]} is set but PACER_ENDPOINT is not: expected the endpoint's name")
        return None
    if not host.SLUG.match(name):
        raise SettingError(f"PACER_ENDPOINT={name!r} is invalid: expected a name of {host.SLUG_RULE}")
    url = env.get("PACER_ENDPOINT_URL", "").strip()
    kind = env.get("PACER_ENDPOINT_KIND", "").strip() or "auto"
    if kind not in host.ENDPOINT_KINDS:
        raise SettingError(
            f"PACER_ENDPOINT_KIND={kind!r} is invalid: expected one of {', '.join(host.ENDPOINT_KINDS)}"
        )
    boards: list[str] = []
    caps: dict[str, int] = {}
    for raw in env.get("PACER_ENDPOINT_BOARDS", "").split(","):
        entry = raw.strip()
        if not entry:
            continue
        slug, _, cap = entry.partition(":")
        if not host.SLUG.match(slug) or (cap and not (cap.isdigit() and 1 <= int(cap) <= 1000)):
            raise SettingError(
                f"PACER_ENDPOINT_BOARDS: {entry!r} is invalid: expected comma-separated board slugs "
                f"of {host.SLUG_RULE}, each with its own cap (1-1000) after a colon if it has one"
            )
        if slug not in boards:
            boards.append(slug)
        if cap:
            caps[slug] = int(cap)
    if board and board not in boards:
        boards.append(board)
    max_parallel = _integer(env, "PACER_ENDPOINT_MAX_PARALLEL", board_cap, 1, 1000)
    return Endpoint(
        name=name,
        url=endpoint_url("PACER_ENDPOINT_URL", url) if url else None,
        kind=kind,
        max_parallel=max_parallel,
        boards=tuple(boards),
        caps=caps,
        timeout=_integer(env, "PACER_ENDPOINT_TIMEOUT", 2, 1, 30),
        ramp_seconds=_integer(env, "PACER_ENDPOINT_RAMP_SECONDS", 60, 0, 3600),
        fleet=_fleet(env, max_parallel),
    )


def endpoint_of(env: dict[str, str]) -> Endpoint | None:
    """The endpoint (and fleet) a settings file names, read alone: `verify` shows it whatever the
    rest of the file says. SettingError as load() raises it."""
    return _endpoint(env, _board(env), _integer(env, "MAX_PARALLEL", 2, 1, 1000))


def _fleet(env: dict[str, str], cap: int) -> Fleet | None:
    """PACER_FLEET_*: the fleet that shares the endpoint's cap of `cap`; None when unset."""
    name = env.get("PACER_FLEET", "").strip()
    if not name:
        stray = sorted(k for k in env if k.startswith("PACER_FLEET_") and env[k].strip())
        if stray:
            raise SettingError(
                f"{stray[0]} is set but PACER_FLEET is not: expected the fleet's inventory group"
            )
        return None
    if not FLEET_NAME.match(name):
        raise SettingError(
            f"PACER_FLEET={name!r} is invalid: expected an inventory group name ({FLEET_NAME_RULE})"
        )
    hosts = _integer(env, "PACER_FLEET_HOSTS", 1, 1, 100)
    slice_seconds = _integer(env, "PACER_FLEET_SLICE_SECONDS", 15, 2, 300)
    return Fleet(
        name=name,
        hosts=hosts,
        index=_integer(env, "PACER_FLEET_INDEX", 0, 0, hosts - 1),
        share=_integer(env, "PACER_FLEET_SHARE", max(1, cap // hosts), 1, cap),
        min_share=_integer(env, "PACER_FLEET_MIN_SHARE", 0, 0, cap),
        reserve=_integer(env, "PACER_FLEET_RESERVE", 0, 0, cap),
        slice_seconds=slice_seconds,
        startup_seconds=_integer(
            env, "PACER_FLEET_STARTUP_SECONDS", min(10, slice_seconds - 1), 1, slice_seconds - 1
        ),
    )


def output_dir(env: dict[str, str], name: str) -> Path | None:
    """PACER_STATE_DIR or PACER_METRICS_DIR: None when unset, else an absolute path."""
    raw = env.get(name, "").strip()
    if raw == "":
        return None
    if not os.path.isabs(raw):
        raise SettingError(f"{name}={raw!r} is invalid: expected an absolute path, or unset for none")
    return Path(raw)


def _output_dirs(env: dict[str, str]) -> tuple[Path | None, Path | None]:
    state_dir = output_dir(env, "PACER_STATE_DIR")
    metrics_dir = output_dir(env, "PACER_METRICS_DIR")
    if metrics_dir is not None and state_dir is None:
        # The counters (spawned_total, passes_total) live in the status file between passes.
        raise SettingError(
            "PACER_METRICS_DIR is set but PACER_STATE_DIR is not: expected PACER_STATE_DIR too "
            "(an absolute path), where the counters of the metrics are kept"
        )
    return state_dir, metrics_dir


def load(env: dict[str, str] | None = None) -> Settings:
    """Read and validate every setting; raise SettingError on the first bad one."""
    env = dict(os.environ if env is None else env)
    log_format = env.get("PACER_LOG_FORMAT", "").strip() or "kv"
    if log_format not in ("kv", "json"):
        raise SettingError(f"PACER_LOG_FORMAT={log_format!r} is invalid: expected kv or json")
    lock_dir = env.get("PACER_LOCK_DIR", "").strip() or DEFAULT_LOCK_DIR
    if not os.path.isabs(lock_dir):
        raise SettingError(f"PACER_LOCK_DIR={lock_dir!r} is invalid: expected an absolute path")
    _check_hermes_paths(env)
    state_dir, metrics_dir = _output_dirs(env)
    board = _board(env)
    max_parallel = _integer(env, "MAX_PARALLEL", 2, 1, 1000)
    return Settings(
        max_parallel=max_parallel,
        board=board,
        runs_per_minute=_integer(env, "RUNS_PER_MINUTE", 4, 1, 60),
        hermes_timeout=float(_integer(env, "HERMES_TIMEOUT", 60, 1, 3600)),
        housekeeping_seconds=_integer(env, "PACER_HOUSEKEEPING_SECONDS", 60, 0, 86400),
        integrity_check_seconds=_integer(env, "PACER_INTEGRITY_CHECK_SECONDS", 300, 0, 86400),
        lock_dir=Path(lock_dir),
        log_format=log_format,
        hermes_bin=_hermes_bin(env),
        cap_script=env.get("CAP_SCRIPT", "").strip() or None,
        endpoint=_endpoint(env, board, max_parallel),
        state_dir=state_dir,
        metrics_dir=metrics_dir,
    )


def read_file(path: str | os.PathLike) -> dict[str, str]:
    """The settings of a settings file (host.SETTINGS_KEYS); SettingError when it cannot be read,
    is a link, or has a line that is not KEY=value of a known key."""
    text = os.path.abspath(os.fspath(path))
    try:
        if stat.S_ISLNK(os.lstat(text).st_mode):
            raise OSError(errno.ELOOP, f"{text} is a symbolic link: not followed")
        content = safefile.read_text(text, SETTINGS_FILE_LIMIT)
    except OSError as exc:
        why = exc.strerror or str(exc)
        raise SettingError(f"settings file {text}: {why if text in why else f'{text}: {why}'}") from None
    found: dict[str, str] = {}
    for number, line in enumerate(content.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        match = SETTINGS_LINE.fullmatch(line)
        if not match:
            raise SettingError(f"settings file {text} line {number} is invalid: {SETTINGS_FORMAT}")
        name, value = match.groups()
        if name not in host.SETTINGS_KEYS:
            raise SettingError(
                f"settings file {text} line {number}: {name} is not a setting: "
                f"expected one of {', '.join(host.SETTINGS_KEYS)}"
            )
        found[name] = value
    return found


def environment(env: dict[str, str], path: str | os.PathLike | None = None) -> dict[str, str]:
    """The environment a pass runs with: the settings file (`path`, else PACER_SETTINGS_FILE, if
    any) overridden by `env`, so a crontab line's MAX_PARALLEL=2 wins over the file."""
    path = path or env.get(SETTINGS_FILE_VARIABLE, "").strip() or None
    if path is None:
        return dict(env)
    return {**read_file(path), **env}
