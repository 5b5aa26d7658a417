"""ansible-playbook and the checkout's invoke tasks as the tests run them: the checkout's ansible.cfg
(roles, the collection's link), this virtualenv's tools first on PATH, no colour in the output to
match; and the small inventories they run on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
# A host of a test inventory that is this machine, run by the system's Python as a managed host is.
LOCAL_HOST = {"ansible_connection": "local", "ansible_python_interpreter": "/usr/bin/python3"}
# A host no one can reach: nothing listens on port 1.
UNREACHABLE_HOST = {"ansible_host": "127.0.0.1", "ansible_port": 1, "ansible_connection": "ssh"}


def environment(**extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "PATH": f"{BIN}:{os.environ['PATH']}",
        **extra,
    }


def ansible_playbook(
    *args: str, extra: dict | None = None, cwd: Path = REPO, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run `ansible-playbook ARGS [-e EXTRA as JSON]`; the result, whatever its exit status."""
    command = ["ansible-playbook", *args, *(["-e", json.dumps(extra)] if extra is not None else [])]
    return subprocess.run(
        command,
        cwd=cwd,
        env=environment(**(env or {})),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def invoke(*args, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run the checkout's `invoke ARGS` (tasks.py, as ./tasks.sh does); the result, whatever its exit
    status."""
    return subprocess.run(
        [str(BIN / "invoke"), "-r", str(REPO), *(str(a) for a in args)],
        cwd=REPO,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def write_inventory(
    path: Path, hosts: dict, children: dict | None = None, group_vars: dict | None = None
) -> Path:
    """An inventory of the group hermes_hosts: `hosts` name -> its variables, `children` group name ->
    its hosts the same way, `group_vars` the group's variables."""
    group: dict = {"hosts": hosts}
    if children:
        group["children"] = {name: {"hosts": members} for name, members in children.items()}
    if group_vars:
        group["vars"] = group_vars
    path.write_text(json.dumps({"hermes_hosts": group}))
    return path


def stub_verify_scripts(folder: Path, report: dict) -> Path:
    """A scripts directory whose hermes-pacer-verify.sh prints `report` (as the verify playbook runs
    it on a host)."""
    folder.mkdir(parents=True)
    stub = folder / "hermes-pacer-verify.sh"
    stub.write_text(f"#!/bin/sh\ncat <<'EOF'\n{json.dumps(report)}\nEOF\n")
    stub.chmod(0o755)
    return folder
