"""A Hermes process that keeps one board connection open across several writes, as a dispatcher
or worker does. Reads commands on stdin: `write` (create a card in a write transaction), `close`."""

import os
import sys
from pathlib import Path

from hermes_cli import kanban_db as kb

conn = kb.connect(Path(sys.argv[1]))
print("ready", flush=True)
for line in sys.stdin:
    if line.strip() == "write":
        kb.create_task(conn, title=f"kept {os.getpid()}")
        print("ok", flush=True)
    else:
        conn.close()
        print("closed", flush=True)
        break
