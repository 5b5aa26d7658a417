"""Project tasks (invoke). Run them through ./tasks.sh, which brings the pinned toolchain."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from invoke import task

REPO = Path(__file__).resolve().parent
SHELL_SCRIPTS = [
    "scripts/hermes-kanban-dispatch-capped.sh",
    "scripts/hermes-kanban-dispatch-subminute.sh",
    "tasks.sh",
    ".ci/run",
]
PYTHON_SOURCES = ["pacer", "tests", "roles", "tasks.py"]


def _venv_bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


@task
def lint(c):
    """shellcheck on every script, ruff on every Python file."""
    with c.cd(str(REPO)):
        c.run(f"{_venv_bin('shellcheck')} --shell=sh --severity=style {' '.join(SHELL_SCRIPTS[:3])}")
        c.run(f"{_venv_bin('shellcheck')} --severity=style .ci/run")
        c.run(f"{_venv_bin('ruff')} check {' '.join(PYTHON_SOURCES)}")
        c.run(f"{_venv_bin('ruff')} format --check {' '.join(PYTHON_SOURCES)}")


@task
def hermes(c):
    """Install the pinned hermes-agent releases into cached virtualenvs (HERMES_VERSIONS picks some)."""
    c.run(f"{sys.executable} {REPO / 'tests' / 'hermes_install.py'}")


@task(pre=[lint, hermes], help={"k": "only tests matching this pytest -k expression"})
def test(c, k=""):
    """The whole test suite: linters, then pytest against real Hermes releases."""
    selection = f" -k {k!r}" if k else ""
    with c.cd(str(REPO)):
        c.run(f"{sys.executable} -m pytest{selection}", pty=False)


@task(help={"board": "board slug (default: the current board)", "max_parallel": "the cap (default 2)"})
def pace(c, board="", max_parallel=2):
    """One capped pacing pass against this machine's Hermes board."""
    env = {"MAX_PARALLEL": str(max_parallel)}
    if board:
        env["BOARD"] = board
    if not os.access("/run/lock", os.W_OK):
        env.setdefault("PACER_LOCK_DIR", str(Path.home() / ".cache" / "hermes-pacer" / "locks"))
    c.run(str(REPO / "scripts" / "hermes-kanban-dispatch-capped.sh"), env=env)
