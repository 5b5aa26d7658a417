"""ansible-playbook as the tests run it: the checkout's ansible.cfg (roles, the collection's link),
this virtualenv's ansible first on PATH, no colour in the output to match."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def ansible_playbook(
    *args: str, extra: dict | None = None, cwd: Path = REPO, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run `ansible-playbook ARGS [-e EXTRA as JSON]`; the result, whatever its exit status."""
    environment = {
        **os.environ,
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        **(env or {}),
    }
    command = ["ansible-playbook", *args, *(["-e", json.dumps(extra)] if extra is not None else [])]
    return subprocess.run(
        command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=300, check=False
    )
