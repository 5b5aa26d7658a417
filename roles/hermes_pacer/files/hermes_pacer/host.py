"""The host contract: every name and path the role writes and the package reads back.

The role renders these (the settings file, the units, the cron line); the pass, `verify` and
adoption read them. They are written here once; tests/test_host_contract.py renders the role's
real templates and checks they equal what this module computes, so a template edit that changes
the contract fails a test instead of `verify` on a host.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

DEFAULT_BOARD = "default"
# Hermes' own slug rule (hermes_cli.kanban_db._BOARD_SLUG_RE).
SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
SLUG_RULE = "1-64 lowercase letters, digits, '-' or '_', not starting with '-' or '_'"

SETTINGS_DIR = Path("/etc/hermes-pacer")
SETTINGS_SUFFIX = ".env"
CRON_FILE = Path("/etc/cron.d/hermes-pacer")
SYSTEMD_DIR = Path("/etc/systemd/system")
UNIT_PREFIX = "hermes-pacer-"
# The board keeper's unit and journal identifier, beside hermes-board-backup: never under
# UNIT_PREFIX, where every name is the pacer of a board of that name (a board may be `keeper`).
KEEPER_ID = "hermes-board-keeper"
KEEPER_UNIT = f"{KEEPER_ID}.service"
DEFAULT_LOCK_DIR = "/run/lock/hermes-pacer"
DEFAULT_LOG_DIR = "/var/log/hermes"
# What the passes leave for operators: a status file per board and endpoint (`hermes-pacer status`)
# and, when metrics are on, their Prometheus textfiles. The Hermes user owns both directories.
DEFAULT_STATE_DIR = "/var/lib/hermes-pacer"
DEFAULT_METRICS_DIR = "/var/lib/hermes-pacer/metrics"
# Debian's prometheus-node-exporter reads *.prom files here (--collector.textfile.directory).
DEBIAN_TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"
METRICS_PREFIX = "hermes-pacer-"
SCHEDULERS = ("systemd", "cron")
# The recipe's script names: the cron line runs the loop, a unit runs one pass.
CAPPED_SCRIPT = "hermes-kanban-dispatch-capped.sh"
SUBMINUTE_SCRIPT = "hermes-kanban-dispatch-subminute.sh"
SCRIPT_NAMES = (CAPPED_SCRIPT, SUBMINUTE_SCRIPT)
SETTINGS_OPTION = "--settings"


@dataclass(frozen=True)
class Key:
    meaning: str
    required: str = ""  # "always", a scheduler (required there only), or "" (optional)


# Every key of a settings file. The role writes the required ones; the pass reads the pacing ones
# (settings.load), verify the rest. A key outside this list is refused (a typo would be silent).
SETTINGS_KEYS: dict[str, Key] = {
    "BOARD": Key("board slug the pacer paces", "always"),
    "MAX_PARALLEL": Key("cap on live workers of the board, 1-1000", "always"),
    "RUNS_PER_MINUTE": Key("passes a minute (the cron loop's, the timer's cadence), 1-60", "always"),
    "HERMES_BIN": Key("full path of the hermes executable", "always"),
    "HERMES_TIMEOUT": Key("seconds one hermes call may run, 1-3600", "always"),
    "PACER_LOCK_DIR": Key("directory of the per-board locks", "always"),
    "PACER_HOUSEKEEPING_SECONDS": Key("dispatch at least this often while cards are open", "always"),
    "HOME": Key("home of the Hermes user: its Hermes root is HOME/.hermes", "always"),
    "PACER_SCHEDULER": Key("what runs the passes: systemd or cron", "always"),
    "PACER_USER": Key("the user the passes (and so the workers) run as", "always"),
    "PACER_SCRIPT": Key("the installed entry point the scheduler runs", "always"),
    "PACER_LOG_FILE": Key("cron: the file the loop's passes are appended to", "cron"),
    "PACER_JOURNAL_ID": Key("systemd: the journal identifier of the passes", "systemd"),
    "PACER_LOG_FORMAT": Key("kv or json"),
    "PACER_INTEGRITY_CHECK_SECONDS": Key("seconds between read-only integrity checks of the board"),
    "CAP_SCRIPT": Key("command the sub-minute loop runs for each pass"),
    "HERMES_HOME": Key("Hermes home, as hermes reads it"),
    "HERMES_KANBAN_HOME": Key("Hermes root of the boards, as hermes reads it"),
    "HERMES_KANBAN_DB": Key("the board's database, as hermes reads it"),
    # The LLM endpoint's budget, shared by every board of this host that names the same endpoint.
    "PACER_ENDPOINT": Key("name of the LLM endpoint the board's workers call (slug rule)"),
    "PACER_ENDPOINT_URL": Key("its base URL, http:// or https://; unset: model.base_url of config.yaml"),
    "PACER_ENDPOINT_KIND": Key("how its load is read: auto, vllm, llamacpp, ollama or openai"),
    "PACER_ENDPOINT_MAX_PARALLEL": Key("cap on what the endpoint serves at once (all boards, others) 1-1000"),
    "PACER_ENDPOINT_BOARDS": Key("the host's boards on it, this one too: slug:cap,slug:cap"),
    "PACER_ENDPOINT_TIMEOUT": Key("seconds one probe of the endpoint may take, 1-30"),
    "PACER_ENDPOINT_RAMP_SECONDS": Key("after an outage: one new worker a pass for this many seconds"),
    # A fleet: the hosts of an inventory group share the endpoint's cap (docs/fleet.md).
    "PACER_FLEET": Key("the inventory group of hosts that share the endpoint (an inventory group name)"),
    "PACER_FLEET_HOSTS": Key("how many hosts the fleet has, 1-100"),
    "PACER_FLEET_INDEX": Key("this host's place in the fleet, 0 to PACER_FLEET_HOSTS-1"),
    "PACER_FLEET_SHARE": Key("this host's static share while the endpoint reports no load"),
    "PACER_FLEET_MIN_SHARE": Key("this host's floor: what it may always hold"),
    "PACER_FLEET_RESERVE": Key("the other hosts' floors together, kept free for them"),
    "PACER_FLEET_SLICE_SECONDS": Key("length of one host's admission slice, 2-300"),
    "PACER_FLEET_STARTUP_SECONDS": Key("start-up allowance at the end of each slice, 1 to slice-1"),
    # What operators see. Both directories belong to the Hermes user; root reads them as hostile.
    "PACER_STATE_DIR": Key("where each pass writes the status of its board and endpoint (JSON)"),
    "PACER_METRICS_DIR": Key("where each pass writes Prometheus textfiles; unset: no metrics"),
}
ENDPOINT_KINDS = ("auto", "vllm", "llamacpp", "ollama", "openai")


def required_keys(scheduler: str) -> list[str]:
    """The keys a settings file of that scheduler must carry."""
    return [name for name, key in SETTINGS_KEYS.items() if key.required in ("always", scheduler)]


def normalise_slug(raw: str) -> tuple[str, str]:
    """(slug, why refused) as Hermes normalises a board slug; an empty slug is `default`."""
    slug = raw.strip().lower()
    if not slug:
        return DEFAULT_BOARD, ""
    if not SLUG.match(slug):
        return raw, f"board slug {raw!r} is refused by Hermes: {SLUG_RULE}"
    return slug, ""


def settings_dir(etc: Path = Path("/etc")) -> Path:
    return etc / SETTINGS_DIR.relative_to("/etc")


def settings_file(board: str, directory: Path = SETTINGS_DIR) -> Path:
    return directory / f"{board}{SETTINGS_SUFFIX}"


def board_of_settings_file(path: Path) -> str:
    return path.name.removesuffix(SETTINGS_SUFFIX)


def unit_name(board: str) -> str:
    """The oneshot service of one pass of the board."""
    return f"{UNIT_PREFIX}{board}.service"


def timer_name(board: str) -> str:
    return f"{UNIT_PREFIX}{board}.timer"


def board_of_unit(name: str) -> str:
    return name.removeprefix(UNIT_PREFIX).rsplit(".", 1)[0]


def journal_id(board: str) -> str:
    return f"{UNIT_PREFIX}{board}"


def log_file(board: str, log_dir: str | Path = DEFAULT_LOG_DIR) -> Path:
    """Where the cron loop of the board appends its passes."""
    return Path(log_dir) / f"kanban-dispatch-{board}.log"


def pass_lock(lock_dir: Path, board: str) -> Path:
    """Held by one pass (and by flow creation): never two dispatches of a board at once."""
    return lock_dir / f"board-{board}.lock"


def endpoint_lock(lock_dir: Path, endpoint: str) -> Path:
    """Held by a pass while it counts and dispatches against the endpoint's budget: the boards of
    one endpoint never dispatch at the same time, so no two of them take the same free slot."""
    return lock_dir / f"endpoint-{endpoint}.lock"


def endpoint_state(lock_dir: Path, endpoint: str) -> Path:
    """What the passes remember of the endpoint between passes: its kind, outages, foreign load."""
    return lock_dir / f"endpoint-{endpoint}.json"


def status_file(state_dir: Path, board: str) -> Path:
    """The board's last pass, its counters and its failing streak (docs/metrics.md, status files)."""
    return Path(state_dir) / f"board-{board}.json"


def endpoint_status_file(state_dir: Path, endpoint: str) -> Path:
    """The endpoint's last probe as a pass of one of its boards saw it."""
    return Path(state_dir) / f"endpoint-{endpoint}.json"


def metrics_file(metrics_dir: Path, board: str) -> Path:
    """The board's Prometheus textfile; the role links node_exporter's textfile directory to it."""
    return Path(metrics_dir) / f"{METRICS_PREFIX}board-{board}.prom"


def endpoint_metrics_file(metrics_dir: Path, endpoint: str) -> Path:
    return Path(metrics_dir) / f"{METRICS_PREFIX}endpoint-{endpoint}.prom"


def loop_lock(lock_dir: Path, board: str) -> Path:
    """Held by the sub-minute loop: an overlapping cron run exits at once."""
    return lock_dir / f"subminute-{board}.lock"


def integrity_stamp(lock_dir: Path, board: str) -> Path:
    """Its mtime is the last integrity check of the board."""
    return lock_dir / f"board-{board}.checked"


def cron_file(etc: Path = Path("/etc")) -> Path:
    return etc / CRON_FILE.relative_to("/etc")


def systemd_dir(etc: Path = Path("/etc")) -> Path:
    return etc / SYSTEMD_DIR.relative_to("/etc")


def hermes_homes(root: Path, include_links: bool = True) -> list[Path]:
    """The Hermes homes of a root: the root home and its profile homes. A profile that is a link
    is listed when include_links (a reader that refuses links then names it), else left out."""
    profiles = sorted(p for p in (root / "profiles").glob("*") if p.is_dir() or p.is_symlink())
    return [root, *(p for p in profiles if include_links or not p.is_symlink())]
