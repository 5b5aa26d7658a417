"""Live Hermes workers of a board, found in /proc.

A card turns `done` when its worker calls kanban_complete; the worker then still makes its final
LLM call. Counting cards misses it, so the pass counts processes too. The dispatcher starts each
worker as `hermes ... chat -q "work kanban task <id>"` with HERMES_KANBAN_DB (the board's database)
and HERMES_KANBAN_BOARD in its environment; the database path tells boards of different Hermes
homes apart, so two users' `default` boards on one host are not confused.

Any user can start a process whose argv reads `work kanban task x`, and other users may run Hermes
installs of their own: a worker is counted only when its real uid is the Hermes user's (the uid
the pass runs as), so nobody else can stall a board by imitating its workers. The look-alikes of
other uids are listed, never counted, and their environment is never read. Every /proc read is
bounded: a process's argv and environment are whatever its owner made them.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .host import DEFAULT_BOARD

_PROMPT = re.compile(r"^work kanban task (\S+)$")
CMDLINE_LIMIT = 256 << 10
ENVIRON_LIMIT = 256 << 10
STATUS_LIMIT = 64 << 10


@dataclass(frozen=True)
class LiveWorkers:
    tasks: frozenset[str]  # card ids whose worker process is alive
    unattributed: int  # workers whose board could not be read, counted against this board
    foreign: tuple[int, ...] = ()  # pids of worker look-alikes of another uid (any board): not counted
    pids: tuple[int, ...] = ()  # pids of the workers counted (a loop watches them for a freed slot)


def _read(path: str, limit: int) -> tuple[bytes, bool]:
    """At most `limit` bytes of a /proc file, and whether there was more."""
    with open(path, "rb") as handle:
        data = handle.read(limit + 1)
    return data[:limit], len(data) > limit


def _task_of(cmdline: bytes) -> str | None:
    for arg in cmdline.split(b"\0"):
        match = _PROMPT.match(arg.decode("utf-8", "replace"))
        if match:
            return match.group(1)
    return None


def _real_uid(status_path: str) -> int:
    """The real uid of a process, from the `Uid:` line of its status (real, effective, saved, fs)."""
    status, _ = _read(status_path, STATUS_LIMIT)
    for row in status.split(b"\n"):
        if row.startswith(b"Uid:"):
            return int(row.split()[1])
    raise OSError(f"{status_path}: no Uid line")


def _belongs(environ_path: str, board: str, db: str) -> bool:
    """Whether the worker serves this board's database; OSError if its environment is unreadable."""
    data, cut = _read(environ_path, ENVIRON_LIMIT)
    entries = data.split(b"\0")
    if cut:
        entries.pop()  # the last entry is cut short
    env = dict(entry.split(b"=", 1) for entry in entries if b"=" in entry)
    worker_db = env.get(b"HERMES_KANBAN_DB", b"").decode("utf-8", "replace").strip()
    if worker_db:
        return os.path.realpath(worker_db) == db
    if cut:
        raise OSError(f"{environ_path}: larger than {ENVIRON_LIMIT} bytes, HERMES_KANBAN_DB not in reach")
    worker_board = env.get(b"HERMES_KANBAN_BOARD", DEFAULT_BOARD.encode()).decode("utf-8", "replace")
    return worker_board.strip().lower() == board


def lookalikes(proc: str = "/proc"):
    """(pid, card id, real uid) of every process whose argv reads like a Hermes worker's."""
    for pid in os.listdir(proc):
        if not pid.isdigit():
            continue
        try:
            task = _task_of(_read(f"{proc}/{pid}/cmdline", CMDLINE_LIMIT)[0])
            if task is None:
                continue
            uid = _real_uid(f"{proc}/{pid}/status")
        except (OSError, ValueError, IndexError):
            continue  # gone between listdir and open
        yield int(pid), task, uid


def scan(board: str, db: Path, proc: str = "/proc", uid: int | None = None) -> LiveWorkers:
    """Worker processes of `board` at `db` whose real uid is `uid` (None: the effective uid of this
    process). A worker of that uid whose environment is unreadable counts."""
    uid = os.geteuid() if uid is None else uid
    db_real = os.path.realpath(db)
    tasks: set[str] = set()
    unattributed: set[str] = set()
    foreign: list[int] = []
    pids: list[int] = []
    for pid, task, owner in lookalikes(proc):
        if owner != uid:
            foreign.append(pid)
            continue
        try:
            if _belongs(f"{proc}/{pid}/environ", board, db_real):
                tasks.add(task)
                pids.append(pid)
        except (FileNotFoundError, ProcessLookupError):
            continue  # exited meanwhile
        except OSError:
            unattributed.add(task)  # fail closed: it may be ours
            pids.append(pid)
    return LiveWorkers(
        tasks=frozenset(tasks),
        unattributed=len(unattributed - tasks),
        foreign=tuple(sorted(foreign)),
        pids=tuple(sorted(pids)),
    )
