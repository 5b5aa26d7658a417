"""Create checked flows on their boards, idempotently, under each board's pacing lock.

Every card carries the idempotency key `hermes-pacer:<flow>:<step>`. Before creating, the board is
read for the keys it already holds (any status, archived included: a flow is created once, and
archiving its cards does not bring it back). A run that failed half-way is completed by the next
one: the cards it made are found by their keys, the rest are created with the right parents.
`hermes kanban create --idempotency-key` also returns the live card holding the key instead of
making a second one (0.14 and 0.19 alike), which covers a create whose output was lost.

The board's pacing lock is held while creating, so no pass dispatches beside `kanban create`:
on hermes-agent 0.19 the two racing once left a board's SQLite index corrupt.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from . import board as boards
from . import flowspec, host, locking, settings
from .flowspec import Flow, FlowError, Step
from .hermes import Hermes, HermesFailed
from .settings import Settings

KEY_PREFIX = "hermes-pacer"
STATES = ("created", "exists", "planned", "failed")


class FlowFailed(RuntimeError):
    """Creation stopped part-way (Hermes failed, the lock stayed held); the next run completes it."""


@dataclass(frozen=True)
class Card:
    id: str
    title: str
    assignee: str | None
    status: str
    parents: frozenset[str]


def card_key(flow: Flow, step: Step) -> str:
    return f"{KEY_PREFIX}:{flow.name}:{step.key}"


def check_host(flows: list[Flow], env: dict[str, str]) -> None:
    """What only the host can tell: the boards exist, the assignees are profiles. FlowError if not."""
    root = boards.hermes_root(env)
    profiles = root / "profiles"
    known = sorted(p.name for p in profiles.iterdir() if p.is_dir()) if profiles.is_dir() else []
    problems = []
    for flow in flows:
        db = boards.db_path(root, flow.board, env)
        if not db.is_file():
            problems.append(
                f"flow {flow.name}: board={flow.board!r} does not exist (no {db}): create it with "
                f"`hermes kanban boards create {flow.board}` (the hermes_pacer role creates its paced boards)"
            )
        for step in flow.steps:
            if step.assignee != "default" and step.assignee not in known:
                problems.append(
                    f"flow {flow.name} step {step.key}: assignee={step.assignee!r} is not a Hermes profile "
                    f"of {root} (profiles: {', '.join(['default', *known])}): nothing would ever run it"
                )
    if problems:
        raise FlowError(problems)


def existing_cards(db: Path, keys: list[str]) -> dict[str, Card]:
    """Cards of the board holding these keys; a live card wins over an archived one (read last)."""
    if not db.is_file():
        raise boards.BoardUnreadable(f"no board database at {db}")
    found: dict[str, Card] = {}
    with contextlib.closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=5)) as conn:
        marks = ",".join("?" * len(keys))
        rows = conn.execute(
            "SELECT idempotency_key, id, title, assignee, status FROM tasks "
            f"WHERE idempotency_key IN ({marks}) ORDER BY status = 'archived' DESC, created_at, id",
            keys,
        ).fetchall()
        for key, card_id, title, assignee, status in rows:
            parents = conn.execute("SELECT parent_id FROM task_links WHERE child_id = ?", (card_id,))
            found[key] = Card(card_id, title, assignee, status, frozenset(r[0] for r in parents))
    return found


@contextlib.contextmanager
def board_lock(settings: Settings, board: str, wait: float) -> Iterator[None]:
    """The board's pacing lock, waited for: a pass holds it for a second or two at most."""
    try:
        locking.ensure_dir(settings.lock_dir)
    except locking.LockDirUnsafe as exc:
        raise FlowFailed(str(exc)) from exc
    path = host.pass_lock(settings.lock_dir, board)
    deadline = time.monotonic() + wait
    while True:
        try:
            fd = locking.try_lock(path)
        except OSError as exc:
            raise FlowFailed(f"cannot open the lock {path}: {exc.strerror}") from exc
        if fd is not None:
            break
        if time.monotonic() >= deadline:
            raise FlowFailed(f"the pacing lock of board {board} ({path}) stayed held for {wait:g}s")
        time.sleep(0.2)
    try:
        yield
    finally:
        os.close(fd)


def _options(step: Step, key: str, parent_ids: list[str]) -> list[str]:
    options = ["--assignee", step.assignee, "--idempotency-key", key, "--priority", str(step.priority)]
    if step.body:
        options += ["--body", step.body]
    if step.max_runtime:
        options += ["--max-runtime", str(step.max_runtime)]
    for parent in parent_ids:
        options += ["--parent", parent]
    return options


def _drift(step: Step, card: Card, parent_ids: list[str | None]) -> list[str]:
    """How an existing card differs from its step. Cards are never edited: the file changed."""
    drift = []
    if card.title != step.title:
        drift.append(f"title is {card.title!r}")
    if card.assignee != step.assignee:
        drift.append(f"assignee is {card.assignee!r}")
    if None not in parent_ids and card.parents != frozenset(parent_ids):
        drift.append(f"parents are {', '.join(sorted(card.parents)) or 'none'}")
    return drift


def _flow(flow: Flow, hermes: Hermes, db: Path, dry_run: bool, report: dict) -> None:
    """Create one flow's missing cards in dependency order; fill `report` as it goes."""
    keys = {step.key: card_key(flow, step) for step in flow.steps}
    try:
        cards = existing_cards(db, list(keys.values()))
    except (boards.BoardUnreadable, sqlite3.Error) as exc:
        raise FlowFailed(f"flow {flow.name}: cannot read board {flow.board}: {exc}") from exc
    ids: dict[str, str | None] = {}
    for step in flow.ordered():
        parent_ids = [ids[p] for p in step.parents]
        entry = {"key": step.key, "title": step.title, "parents": list(step.parents)}
        entry["parent_ids"] = parent_ids
        report["steps"].append(entry)
        card = cards.get(keys[step.key])
        if card is not None:
            ids[step.key] = card.id
            entry.update(id=card.id, state="exists", status=card.status, drift=_drift(step, card, parent_ids))
            continue
        if dry_run:
            ids[step.key] = None
            entry.update(id=None, state="planned", status=None, drift=[])
            continue
        try:
            made = hermes.create(step.title, _options(step, keys[step.key], parent_ids))
        except HermesFailed as exc:
            entry.update(id=None, state="failed", status=None, drift=[])
            raise FlowFailed(f"flow {flow.name} step {step.key}: kanban create failed ({exc})") from exc
        ids[step.key] = made["id"]
        entry.update(id=made["id"], state="created", status=made.get("status"), drift=[])


def run(flows: list[Flow], settings: Settings, env: dict[str, str], dry_run: bool, lock_wait: float) -> dict:
    """Create (or plan) every flow. The report has each step's card; `error` is set when it failed."""
    root = boards.hermes_root(env)
    report: dict = {"dry_run": dry_run, "flows": [], "error": None}
    by_board: dict[str, list[Flow]] = {}
    for flow in flows:
        by_board.setdefault(flow.board, []).append(flow)
    try:
        for board, board_flows in by_board.items():
            hermes = Hermes(settings.hermes_bin, board, settings.hermes_timeout)
            db = boards.db_path(root, board, env)
            lock = contextlib.nullcontext() if dry_run else board_lock(settings, board, lock_wait)
            with lock:
                for flow in board_flows:
                    entry = {"name": flow.name, "board": board, "steps": []}
                    report["flows"].append(entry)
                    _flow(flow, hermes, db, dry_run, entry)
    except FlowFailed as exc:
        report["error"] = str(exc)
    steps = [s for f in report["flows"] for s in f["steps"]]
    for state in STATES:
        report[state] = sum(1 for s in steps if s["state"] == state)
    return report


def render(report: dict) -> str:
    """The report for people: one line per flow, one per step."""
    lines = []
    for flow in report["flows"]:
        counts = {state: sum(1 for s in flow["steps"] if s["state"] == state) for state in STATES}
        words = {"created": "created", "exists": "exist", "planned": "to create", "failed": "failed"}
        summary = ", ".join(f"{n} {words[state]}" for state, n in counts.items() if n)
        lines.append(f"flow {flow['name']} on board {flow['board']}: {summary or 'nothing done'}")
        width = max(len(s["key"]) for s in flow["steps"])
        for step in flow["steps"]:
            card = step["id"] or "-"
            status = f" ({step['status']})" if step["status"] else ""
            after = f"  after {', '.join(step['parents'])}" if step["parents"] else ""
            lines.append(f"  {step['state']:<8} {step['key']:<{width}}  {card:<11}{status}{after}".rstrip())
            for drift in step["drift"]:
                lines.append(f"    warning: the card differs from the file: {drift}; cards are never edited")
    return "\n".join(lines)


def command(args, env: dict[str, str]) -> int:
    """The `flow` subcommand. Exit status: 0 done, 1 stopped part-way (run again), 2 bad input."""
    try:
        flows = flowspec.read(args.files)
        if args.check:
            steps = sum(len(flow.steps) for flow in flows)
            print(f"{len(flows)} flows, {steps} steps: valid")
            return 0
        config = settings.load(env)
        check_host(flows, env)
    except FlowError as exc:
        for problem in exc.problems:
            print(f"hermes-pacer: {problem}", file=sys.stderr)
        print("hermes-pacer: nothing was created", file=sys.stderr)
        return 2
    except settings.SettingError as exc:
        print(f"hermes-pacer: {exc}", file=sys.stderr)
        return 2
    report = run(flows, config, env, args.dry_run, args.lock_wait)
    print(json.dumps(report, indent=2) if args.json else render(report))
    if report["error"]:
        print(
            f"hermes-pacer: {report['error']}; {report['created']} cards created before it. Run it again: "
            "the cards made are found by their keys and the rest are created, without duplicates",
            file=sys.stderr,
        )
        return 1
    return 0
