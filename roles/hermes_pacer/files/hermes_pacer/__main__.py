"""Command line of the pacing core: `capped` (one pass), `subminute` (a minute of passes),
`verify` (the host check), `flow` (create the cards of flow files), `adopt-cron` (comment out
hand-made dispatch cron lines of managed boards), `backup` (copies of the boards) and `keep-open`
(the board keeper)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from . import __version__, adopt, board_backup, flows, passlog, settings, subminute, verify
from . import board as boards
from . import keeper as board_keeper
from .hermes import StopSignals

ENVIRONMENT = """\
environment:
  MAX_PARALLEL      cap on live workers of the board, 1-1000 (default 2)
  BOARD             board slug (default: the board Hermes calls current)
  HERMES_BIN        path of the hermes executable (default: hermes on PATH)
  HERMES_TIMEOUT    seconds one hermes call may take before it is killed, 1-3600 (default 60)
  RUNS_PER_MINUTE   passes per minute of the sub-minute loop, 1-60 (default 4)
  CAP_SCRIPT        command the sub-minute loop runs for each pass
                    (default: the capped pass, run in-process)
  PACER_LOCK_DIR    directory of the per-board locks (default /run/lock/hermes-pacer);
                    must be owned by the pacer's user or root and writable by nobody else
  PACER_LOG_FORMAT  kv (key=value, default) or json: one line per pass on stdout
  PACER_HOUSEKEEPING_SECONDS
                    run hermes' dispatch at least this often while the board has open cards,
                    even with no free slot, so stale and crashed claims are reclaimed
                    (0-86400, 0 = never; default 60)
  PACER_INTEGRITY_CHECK_SECONDS
                    run a read-only PRAGMA integrity_check of the board at most this often;
                    a failed check (or Hermes refusing the board) is reason=board_corrupt, rc 1,
                    nothing dispatched (0-86400, 0 = never; default 300)
  HERMES_HOME, HERMES_KANBAN_HOME, HERMES_KANBAN_DB
                    locate the boards as hermes does (absolute paths)

Each pass logs one record with its reason and rc (its exit status), whatever happens. SIGTERM,
SIGINT or SIGHUP during a pass ends its hermes call (and that call's process group, never a
worker) before the board's lock is released, then logs reason=terminated.

exit status: 0 done (a skip included), 1 failed closed (nothing dispatched, reason logged),
2 bad input (nothing done; reason=settings_invalid logged)
"""

DESCRIPTIONS = {
    "capped": "One pacing pass: count cards in running and live worker processes of the board, "
    "and dispatch only the free slots.",
    "subminute": "RUNS_PER_MINUTE capped passes spread evenly over one minute (for cron).",
    "verify": "Check this host: one dispatcher path per board, the cap holding, the config wired. "
    "Exit status 0 when safe, 1 when not.",
    "adopt-cron": "Comment out the crontab lines that dispatch a managed board of the managed Hermes "
    "home (each changed file backed up first), so the managed pacer is the board's one dispatcher path. "
    "Run as root.",
    "backup": "Copy every board of this user's Hermes home with SQLite's online backup API into "
    "DIR/<board>/ (consistent while Hermes writes), and remove copies older than the retention.",
    "keep-open": "Hold one read-only connection to every paced board of this user's Hermes home, "
    "re-opened when its file is replaced, until SIGTERM: Hermes 0.19 drops its own SQLite locks, and "
    "without a connection that keeps them its processes delete the WAL under each other (lost cards).",
    "flow": "Create the cards of parent/child flows described in YAML (or JSON) files, each card "
    "after its parents, idempotently: a second run creates nothing.",
}

FLOW_ENVIRONMENT = """\
environment:
  HERMES_BIN        path of the hermes executable (default: hermes on PATH)
  HERMES_TIMEOUT    seconds one hermes call may take before it is killed, 1-3600 (default 60)
  PACER_LOCK_DIR    directory of the per-board locks (default /run/lock/hermes-pacer): the
                    board's pacing lock is held while its cards are created
  HERMES_HOME, HERMES_KANBAN_HOME, HERMES_KANBAN_DB
                    locate the boards as hermes does

exit status: 0 done (nothing left to create), 1 stopped part-way (what was created is listed;
run again to complete it), 2 bad input (nothing created)
"""


# The program name a shim runs the package under (its own file name): it picks the subcommand
# and is the name usage, errors and --version show. Removed from the environment at once, so the
# hermes calls and workers of a pass never see it.
PROG_ENV = "HERMES_PACER_PROG"
PROG = "hermes-pacer"


def command_of(name: str) -> str | None:
    """The subcommand a program name stands for: None (any subcommand) for hermes-pacer, the
    recipe's for its script names; any other name is the capped pass, as the recipe's cron lines
    call it."""
    if name == PROG:
        return None
    return next((word for word in ("subminute", "verify", "flow") if word in name), "capped")


def _pass_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of a pacing pass (capped and subminute): a settings file, which the environment overrides."""
    parser.add_argument(
        "--settings",
        type=Path,
        metavar="FILE",
        help="settings file of KEY=value lines (the role's /etc/hermes-pacer/<board>.env; "
        "default: PACER_SETTINGS_FILE); the environment overrides it",
    )


def _verify_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="the report as JSON")
    parser.add_argument("--etc", type=Path, default=Path("/etc"), help="where cron and systemd files are")
    parser.add_argument("--spool", type=Path, default=Path("/var/spool/cron/crontabs"), help="user crontabs")
    parser.add_argument(
        "--home",
        type=Path,
        action="append",
        default=[],
        help="a Hermes home to check (repeatable). Default: the /root, /home/* and /var/lib/* homes "
        "holding a kanban.db. The homes of managed pacers and running Hermes processes are always checked.",
    )


def _adopt_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--board", action="append", default=[], help="a managed board slug (repeatable)")
    parser.add_argument(
        "--home",
        type=Path,
        action="append",
        default=[],
        help="the managed Hermes root, e.g. /home/hermes/.hermes (repeatable); lines of other homes stay",
    )
    parser.add_argument(
        "--managed-file",
        type=Path,
        action="append",
        default=[],
        help="a cron file the pacer writes itself, never touched (repeatable)",
    )
    parser.add_argument(
        "--backup-dir", type=Path, required=True, help="where each changed crontab is copied first (0700)"
    )
    parser.add_argument("--check", action="store_true", help="report, change nothing")
    parser.add_argument("--json", action="store_true", help="the report as JSON")
    parser.add_argument("--etc", type=Path, default=Path("/etc"), help="where the system crontabs are")
    parser.add_argument(
        "--spool",
        type=Path,
        default=adopt.SYSTEM_SPOOL,
        help="user crontabs (another directory than the system's is rewritten in place: for tests)",
    )


def _flow_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "files", type=Path, nargs="+", metavar="FILE", help="flow file (YAML or JSON; - for stdin)"
    )
    parser.add_argument("--dry-run", action="store_true", help="print the plan, create nothing")
    parser.add_argument(
        "--check", action="store_true", help="check the files only: no Hermes, no board needed"
    )
    parser.add_argument("--json", action="store_true", help="the cards as JSON")
    parser.add_argument(
        "--lock-wait",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="how long to wait for a board's lock",
    )


def _backup_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", type=Path, required=True, help="where the copies go (DIR/<board>/)")
    parser.add_argument("--keep-days", type=float, default=7.0, help="retention of the copies (default 7)")
    parser.add_argument("--hermes-root", type=Path, help="the Hermes root (default: as hermes finds it)")


def _keep_open_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--board", action="append", default=[], help="a board slug (repeatable; default: every board on disk)"
    )
    parser.add_argument("--hermes-root", type=Path, help="the Hermes root (default: as hermes finds it)")


# Each subcommand: its epilog (the environment it reads) and the function adding its options.
COMMANDS = {
    "capped": (ENVIRONMENT, _pass_arguments),
    "subminute": (ENVIRONMENT, _pass_arguments),
    "verify": (None, _verify_arguments),
    "flow": (FLOW_ENVIRONMENT, _flow_arguments),
    "adopt-cron": (None, _adopt_arguments),
    "backup": (None, _backup_arguments),
    "keep-open": (None, _keep_open_arguments),
}


def _version(parser: argparse.ArgumentParser, prog: str) -> None:
    shown = f"{PROG} {__version__}" if prog == PROG else f"{prog} ({PROG}) {__version__}"
    parser.add_argument("--version", action="version", version=shown)


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The parser for a program name: every subcommand under hermes-pacer, the one subcommand
    (as the whole program) under a recipe script's name."""
    command = command_of(prog)
    if command is not None:
        epilog, arguments = COMMANDS[command]
        parser = argparse.ArgumentParser(
            prog=prog,
            description=DESCRIPTIONS[command],
            epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _version(parser, prog)
        arguments(parser)
        parser.set_defaults(command=command)
        return parser
    parser = argparse.ArgumentParser(
        prog=prog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Pace Hermes Kanban dispatch so a board never has more than MAX_PARALLEL "
        "live workers at its LLM endpoint.",
        epilog=ENVIRONMENT,
    )
    _version(parser, prog)
    subcommands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (epilog, arguments) in COMMANDS.items():
        subcommand = subcommands.add_parser(
            name,
            help=DESCRIPTIONS[name],
            description=DESCRIPTIONS[name],
            epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _version(subcommand, prog)
        arguments(subcommand)
    return parser


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """The command line; under a shim, the program is named by HERMES_PACER_PROG."""
    shim = os.environ.pop(PROG_ENV, "")
    args = build_parser(prog or shim or PROG).parse_args(argv)
    if args.command == "keep-open":
        env = dict(os.environ)
        return board_keeper.run(args.hermes_root or boards.hermes_root(env), args.board, env)
    if args.command == "backup":
        root = args.hermes_root or boards.hermes_root(dict(os.environ))
        return board_backup.run(root, args.dir, args.keep_days)
    if args.command == "flow":
        return flows.command(args, dict(os.environ))
    if args.command == "adopt-cron":
        return adopt.command(args)
    if args.command == "verify":
        report = verify.run(etc=args.etc, spool=args.spool, homes=args.home)
        print(json.dumps(report, indent=2) if args.json else verify.render(report))
        return 0 if report["ok"] else 1
    env = dict(os.environ)
    try:
        env = settings.environment(env, args.settings)
        config = settings.load(env)
    except settings.SettingError as exc:
        print(f"hermes-pacer: {exc}", file=sys.stderr)
        _log_settings_invalid(env, exc)
        return 2
    if args.command == "subminute":
        return subminute.run(config, env)
    with StopSignals() as stop:  # a stop ends the pass's hermes call before its lock is released
        return subminute.once(config, env, stop)


def _log_settings_invalid(env: dict[str, str], exc: settings.SettingError) -> None:
    """The record a pass with bad settings leaves where its passes are read (a log, the journal)."""
    board = env.get("BOARD", "").strip()
    fmt = env.get("PACER_LOG_FORMAT", "").strip()
    record = {
        "board": board if settings.BOARD_SLUG.match(board) else None,
        "reason": "settings_invalid",
        "rc": 1,
        "error": str(exc),
    }
    # An invalid-settings board shows up as failing in its status and metrics, where they can go.
    from . import pass_state

    pass_state.record_invalid(env, record)
    passlog.emit(record, fmt if fmt in ("kv", "json") else "kv")


if __name__ == "__main__":
    sys.exit(main())
