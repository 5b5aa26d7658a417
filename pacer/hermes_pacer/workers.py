"""Live Hermes workers of a board, found in /proc.

A card turns `done` when its worker calls kanban_complete; the worker then still makes its final
LLM call. Counting cards misses it, so the pass counts processes too. The dispatcher starts each
worker as `hermes ... chat -q "work kanban task <id>"` with HERMES_KANBAN_BOARD in its environment.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

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


def _board_of(environ_path: str) -> str:
    """The worker's HERMES_KANBAN_BOARD (Hermes' default board when unset); OSError if unreadable."""
    with open(environ_path, "rb") as handle:
        for entry in handle.read().split(b"\0"):
            if entry.startswith(b"HERMES_KANBAN_BOARD="):
                return entry.split(b"=", 1)[1].decode("utf-8", "replace").strip().lower()
    return "default"


def scan(board: str, proc: str = "/proc") -> LiveWorkers:
    """Worker processes of `board`. A worker whose environment is unreadable counts (fail closed)."""
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
            owner = _board_of(f"{proc}/{pid}/environ")
        except FileNotFoundError:
            continue
        except OSError:
            unattributed.add(task)
            continue
        if owner == board:
            tasks.add(task)
    return LiveWorkers(tasks=frozenset(tasks), unattributed=len(unattributed - tasks))
