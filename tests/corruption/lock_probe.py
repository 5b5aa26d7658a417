"""Does one Hermes write transaction drop the process's SQLite lock on its board?

Run it with a Hermes release's Python: `<venv>/bin/python tests/corruption/lock_probe.py`.
It prints the POSIX locks /proc/locks shows for this process on a scratch board: a connection in
WAL mode holds a shared lock on the database file for as long as it is open. Exit status 1 when
a write transaction drops it.
"""

import os
import sys
import tempfile
from pathlib import Path

from hermes_cli import kanban_db as kb


def locks(ino: int) -> list[str]:
    with open("/proc/locks", encoding="ascii") as table:
        rows = [line.split() for line in table]
    return [" ".join(r[1:4] + r[6:]) for r in rows if r[4] == str(os.getpid()) and r[5].endswith(f":{ino}")]


def main() -> int:
    db = Path(tempfile.mkdtemp(prefix="lock-probe-")) / "kanban.db"
    kb.connect(db).close()  # create and initialise the board
    ino = os.stat(db).st_ino
    conn = kb.connect(db)
    conn.execute("SELECT count(*) FROM tasks").fetchone()
    before = locks(ino)
    print("connection open, after a read :", before)
    with kb.write_txn(conn):
        conn.execute("UPDATE tasks SET title = title")
    after = locks(ino)
    print("after kb.write_txn (COMMIT)   :", after)
    conn.close()
    dropped = bool(before) and not after
    print("verdict:", "the write transaction DROPPED the lock" if dropped else "lock kept")
    return 1 if dropped else 0


if __name__ == "__main__":
    sys.exit(main())
