"""`keep-open`: hold one read-only connection to every paced board, all the time.

Hermes 0.19 drops its own processes' SQLite locks on the board after their first write (its
file-length probe opens and closes the database file; closing any descriptor of a file drops
every POSIX lock the process holds on it: sqlite.org/howtocorrupt.html 2.2, tests/corruption).
A Hermes process that then opens or closes the board believes it is alone: it checkpoints and
deletes the WAL, or re-initialises the WAL index, under a live dispatcher or worker, and committed
cards vanish or indexes disagree with their table.

A connection that has read the board holds the shared lock on the WAL index's dead-man-switch
byte for as long as it stays open, and no process can then believe it is alone. So this process:

- opens each board read-only (`mode=ro`: it never writes, so it never checkpoints, and its close
  never deletes the WAL) and reads it once, then reads it again on every poll (cheap: the schema
  page), which also follows a board that turned to WAL mode after it was opened;
- never keeps a transaction open: each read ends at once, so checkpoints go on;
- re-opens a board whose file was replaced (another inode, e.g. after a restore), opens one that
  appears later (with no --board: any board created on disk), drops one whose file is gone;
- never opens the board's files any other way (a plain open and close of the file in this
  process would drop its own locks, the very bug);
- logs one line when it starts and one each time a board is (re)opened; SIGTERM, SIGINT or SIGHUP
  end it with status 0.
"""

from __future__ import annotations

import contextlib
import os
import select
import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path

from . import board as boards
from . import board_backup, host
from .hermes import StopSignals

POLL_SECONDS = 2.0
READ = "SELECT count(*) FROM sqlite_master"


@dataclass
class Held:
    db: Path
    ident: tuple[int, int]  # st_dev, st_ino of the file the connection was opened on
    conn: sqlite3.Connection


def _ident(db: Path) -> tuple[int, int] | None:
    try:
        info = db.stat()  # stat, never open: an open and close here would drop our own locks
    except OSError:
        return None
    return (info.st_dev, info.st_ino) if info.st_size > 0 else None


def _open(db: Path) -> sqlite3.Connection | None:
    try:
        conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return None
    try:
        conn.execute(READ).fetchall()
    except sqlite3.Error:
        conn.close()
        return None
    return conn


class Keeper:
    def __init__(self, root: Path, slugs: list[str], env: dict[str, str], out=None) -> None:
        self.root = root
        self.slugs = slugs
        self.env = env
        self.out = out or sys.stdout
        self.held: dict[str, Held] = {}
        self.seen: set[str] = set()  # boards opened once: a later open is a re-open

    def log(self, text: str) -> None:
        print(f"keep-open: {text}", file=self.out, flush=True)

    def wanted(self) -> dict[str, Path]:
        if self.slugs:
            return {slug: boards.db_path(self.root, slug, self.env) for slug in self.slugs}
        return board_backup.boards_of(self.root)

    def poll(self) -> None:
        """Open what is missing or replaced, drop what is gone, read what is held."""
        wanted = self.wanted()
        for slug in list(self.held):
            if slug not in wanted:
                self._drop(slug)
        for slug, db in wanted.items():
            ident = _ident(db)
            held = self.held.get(slug)
            if held is not None and (ident != held.ident or held.db != db):
                self._drop(slug)
                held = None
            if held is not None:
                try:
                    held.conn.execute(READ).fetchall()
                except sqlite3.Error as exc:
                    self.log(f"board={slug} db={db} read failed ({exc}): re-opening")
                    self._drop(slug)
                    held = None
            if held is None and ident is not None:
                conn = _open(db)
                if conn is not None:
                    again = "re-opened" if slug in self.seen else "opened"
                    self.held[slug] = Held(db, ident, conn)
                    self.seen.add(slug)
                    self.log(f"board={slug} db={db} inode={ident[1]} {again}")

    def _drop(self, slug: str) -> None:
        held = self.held.pop(slug)
        with contextlib.suppress(sqlite3.Error):
            held.conn.close()

    def close(self) -> None:
        for slug in list(self.held):
            self._drop(slug)


def run(root: Path, slugs: list[str], env: dict[str, str], poll: float = POLL_SECONDS) -> int:
    bad = [slug for slug in slugs if not host.SLUG.match(slug)]
    if bad:
        print(f"hermes-pacer keep-open: not a board slug: {', '.join(bad)}", file=sys.stderr)
        return 2
    keeper = Keeper(root, sorted(set(slugs)), env)
    with StopSignals() as stop:
        named = ",".join(keeper.slugs) or "(every board on disk)"
        keeper.log(f"started pid={os.getpid()} root={root} boards={named}")
        try:
            while stop.received is None:
                keeper.poll()
                if stop.received is None:
                    with contextlib.suppress(InterruptedError):
                        select.select([stop.wakeup], [], [], poll)
                    stop.clear_wakeup()
        finally:
            keeper.close()
        keeper.log(f"stopped by signal {stop.received}")
    return 0


# --- verify: is a keeper holding the board? ------------------------------------------------------


def enabled(etc: Path) -> bool:
    """The role installed a keeper: its unit, or a `keep-open` line in a managed cron file."""
    if (host.systemd_dir(etc) / host.KEEPER_UNIT).is_file():
        return True
    for cron in sorted(host.cron_file(etc).parent.glob(f"{host.CRON_FILE.name}*")):
        with contextlib.suppress(OSError, UnicodeDecodeError):
            lines = cron.read_text(encoding="utf-8").splitlines()[:1000]
            if any(" keep-open" in line and not line.lstrip().startswith("#") for line in lines):
                return True
    return False


def holders(db: Path, proc: str = "/proc") -> list[int]:
    """Pids of `keep-open` processes of the board's owner holding a lock on the board's file."""
    try:
        info = db.stat()
        with open(f"{proc}/locks", encoding="ascii", errors="replace") as table:
            rows = [line.replace("->", "").split() for line in table]
    except OSError:
        return []
    pids = {row[4] for row in rows if len(row) > 5 and row[5].rsplit(":", 1)[-1] == str(info.st_ino)}
    found = []
    for pid in sorted(pids, key=lambda p: int(p) if p.isdigit() else -1):
        with contextlib.suppress(OSError, ValueError):
            if os.stat(f"{proc}/{pid}").st_uid != info.st_uid:
                continue
            with open(f"{proc}/{pid}/cmdline", "rb") as handle:
                args = handle.read(65536).split(b"\0")
            if b"keep-open" in args and any(b"hermes_pacer" in a or b"hermes-pacer" in a for a in args):
                found.append(int(pid))
    return found


def verify_problem(etc: Path, root: Path, board: str, proc: str = "/proc") -> str | None:
    """NOT SAFE when the role installed a keeper and none holds this paced board."""
    if not enabled(etc):
        return None
    db = boards.db_path(root, board, {})
    if not db.is_file() or holders(db, proc):
        return None
    return (
        f"no board keeper holds board {board} of {root} (a `hermes-pacer keep-open` of the board's owner): "
        "Hermes 0.19 drops its own SQLite locks, and without the keeper its processes delete the WAL "
        f"under each other (lost cards, a corrupt board); start {host.KEEPER_UNIT}, or check "
        "the keep-open line of the pacer's cron file"
    )
