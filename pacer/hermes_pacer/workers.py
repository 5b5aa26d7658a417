"""Live Hermes workers of a board, found in /proc.

A card turns `done` when its worker calls kanban_complete; the worker then still makes its final
LLM call. Counting cards misses it, so the pass counts processes too. The dispatcher starts each
worker as `hermes ... chat -q "work kanban task <id>"` with HERMES_KANBAN_DB (the board's database)
and HERMES_KANBAN_BOARD in its environment; the database path tells boards of different Hermes
homes apart, so two users' `default` boards on one host are not confused.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

_PROMPT = re.compile(r"^work kanban task (\S+)$")


@dataclass(frozen=True)
class LiveWorkers:
    tasks: frozenset[str]  # card ids whose worker process is alive
    unattributed: int  # workers whose board could not be read, counted against this board


def _task_of(cmdline: bytes) -> str | None:
    for arg in cmdline.split(b"\0"):
        match = _PROMPT.match(arg.decode("utf-8", "replace"))
        if match:
            return match.group(1)
    return None


def _belongs(environ_path: str, board: str, db: str) -> bool:
    """Whether the worker serves this board's database; OSError if its environment is unreadable."""
    with open(environ_path, "rb") as handle:
        env = dict(entry.split(b"=", 1) for entry in handle.read().split(b"\0") if b"=" in entry)
    worker_db = env.get(b"HERMES_KANBAN_DB", b"").decode("utf-8", "replace").strip()
    if worker_db:
        return os.path.realpath(worker_db) == db
    worker_board = env.get(b"HERMES_KANBAN_BOARD", b"default").decode("utf-8", "replace")
    return worker_board.strip().lower() == board


def scan(board: str, db: Path, proc: str = "/proc") -> LiveWorkers:
    """Worker processes of `board` at `db`. A worker whose environment is unreadable counts."""
    db_real = os.path.realpath(db)
    tasks: set[str] = set()
    unattributed: set[str] = set()
    for pid in os.listdir(proc):
        if not pid.isdigit():
            continue
        try:
            with open(f"{proc}/{pid}/cmdline", "rb") as handle:
                task = _task_of(handle.read())
        except OSError:
            continue  # gone between listdir and open
        if task is None:
            continue
        try:
            if _belongs(f"{proc}/{pid}/environ", board, db_real):
                tasks.add(task)
        except (FileNotFoundError, ProcessLookupError):
            continue  # exited meanwhile
        except OSError:
            unattributed.add(task)  # fail closed: it may be ours
    return LiveWorkers(tasks=frozenset(tasks), unattributed=len(unattributed - tasks))
