"""Command line of the pacing core: `capped` (one pass) and `subminute` (a minute of passes)."""

from __future__ import annotations

import argparse
import os
import sys

from . import __version__, capped_pass, passlog, settings, subminute

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
  HERMES_HOME, HERMES_KANBAN_HOME, HERMES_KANBAN_DB
                    locate the boards as hermes does

exit status: 0 done (a skip included), 1 failed closed (nothing dispatched, reason logged),
2 bad input (nothing done)
"""

DESCRIPTIONS = {
    "capped": "One pacing pass: count cards in running and live worker processes of the board, "
    "and dispatch only the free slots.",
    "subminute": "RUNS_PER_MINUTE capped passes spread evenly over one minute (for cron).",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="hermes-pacer",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Pace Hermes Kanban dispatch so a board never has more than MAX_PARALLEL "
        "live workers at its LLM endpoint.",
        epilog=ENVIRONMENT,
    )
    parser.add_argument("--version", action="version", version=f"hermes-pacer {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in DESCRIPTIONS.items():
        commands.add_parser(
            name,
            help=text,
            description=text,
            epilog=ENVIRONMENT,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    args = parser.parse_args(argv)
    env = dict(os.environ)
    try:
        config = settings.load(env)
    except settings.SettingError as exc:
        print(f"hermes-pacer: {exc}", file=sys.stderr)
        return 2
    if args.command == "subminute":
        return subminute.run(config, env)
    code, record = capped_pass.run(config, env)
    passlog.emit(record, config.log_format)
    return code


if __name__ == "__main__":
    sys.exit(main())
