"""Workers as Hermes 0.20+ starts them are found, each once.

hermes_cli/kanban_db_dispatch.py (0.20+) starts a worker as `<python> -m hermes_cli.main -p <profile>
--cli --accept-hooks [--skills ..] [--toolsets ..] chat -q "work kanban task <id>"` when hermes_cli
is importable, with HERMES_KANBAN_DB / HERMES_KANBAN_BOARD pinned to the card's board. A dispatch
from a systemd unit (a timer's oneshot service, as the pacer's) wraps it in
`systemd-run --user --scope --quiet --unit hermes-worker-kanban-<id>-run-<run> --collect
--property ... -- <worker argv>`: systemd-run registers the scope and executes the worker in its
own process, environment included, so the worker keeps its pid and its argv is the worker's. The
wrapper's argv, which carries the worker's after `--`, exists until then; a wrapper that stayed the
worker's parent would carry it for as long. Here real processes take those shapes: a module
`hermes_cli.main` on PYTHONPATH that waits, and an executable called systemd-run that starts the
command after `--` as its child (systemd-run itself needs a user manager this machine lacks).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hermes_pacer import workers

pytestmark = pytest.mark.fast

FAKE_MAIN = """\
import os, sys, time
from pathlib import Path
Path(os.environ["READY_DIR"], sys.argv[-1].rsplit(" ", 1)[1]).write_text(str(os.getpid()))
time.sleep(600)
"""

FAKE_SYSTEMD_RUN = """\
#!{python}
import os, sys
argv = sys.argv[sys.argv.index("--") + 1:]
child = os.fork()
if child == 0:
    os.execvp(argv[0], argv)
os.waitpid(child, 0)
"""


@pytest.fixture
def stand_ins(tmp_path):
    package = tmp_path / "site" / "hermes_cli"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "main.py").write_text(FAKE_MAIN)
    wrapper = tmp_path / "bin" / "systemd-run"
    wrapper.parent.mkdir()
    wrapper.write_text(FAKE_SYSTEMD_RUN.format(python=sys.executable))
    wrapper.chmod(0o755)
    ready = tmp_path / "ready"
    ready.mkdir()
    started: list[subprocess.Popen] = []
    yield tmp_path, wrapper, ready, started
    for proc in started:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def worker_argv(task: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "hermes_cli.main",
        "-p",
        "worker",
        "--cli",
        "--accept-hooks",
        "--skills",
        "sdlc-review",
        "--toolsets",
        "file,terminal",
        "chat",
        "-q",
        f"work kanban task {task}",
    ]


def scoped(wrapper: Path, task: str) -> list[str]:
    return [
        str(wrapper),
        "--user",
        "--scope",
        "--quiet",
        "--unit",
        f"hermes-worker-kanban-{task}-run-7",
        "--collect",
        "--property",
        "MemoryAccounting=yes",
        "--property",
        "MemoryMax=4294967296",
        "--property",
        "TimeoutStopSec=30s",
        "--",
        *worker_argv(task),
    ]


def start(stand_ins, argv: list[str], db: Path, board: str) -> None:
    tmp_path, _, ready, started = stand_ins
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(tmp_path / "site"),
        "READY_DIR": str(ready),
        "HERMES_HOME": str(tmp_path / "home" / ".hermes" / "profiles" / "worker"),
        "HERMES_KANBAN_DB": str(db),
        "HERMES_KANBAN_BOARD": board,
        "HERMES_KANBAN_TASK": argv[-1].rsplit(" ", 1)[1],
        "HERMES_KANBAN_RUN_ID": "7",
        "HERMES_PROFILE": "worker",
    }
    started.append(subprocess.Popen(argv, env=env, start_new_session=True))


def wait_ready(ready: Path, tasks: set[str]) -> None:
    """Until every worker runs its module (readiness, not speed: the bound only stops a hang)."""
    deadline = time.monotonic() + 60
    while {p.name for p in ready.iterdir()} < tasks and time.monotonic() < deadline:
        time.sleep(0.05)
    assert {p.name for p in ready.iterdir()} >= tasks


def test_module_form_workers_are_counted_for_their_board_only(stand_ins):
    tmp_path, _, ready, _ = stand_ins
    db, other = tmp_path / "kanban.db", tmp_path / "other" / "kanban.db"
    start(stand_ins, worker_argv("t_mine1"), db, "default")
    start(stand_ins, worker_argv("t_mine2"), db, "default")
    start(stand_ins, worker_argv("t_theirs"), other, "other")
    wait_ready(ready, {"t_mine1", "t_mine2", "t_theirs"})
    live = workers.scan("default", db)
    assert live.tasks == {"t_mine1", "t_mine2"} and live.unattributed == 0
    assert workers.scan("other", other).tasks == {"t_theirs"}


def test_a_scope_wrapped_worker_is_counted_once(stand_ins):
    tmp_path, wrapper, ready, started = stand_ins
    db = tmp_path / "kanban.db"
    start(stand_ins, scoped(wrapper, "t_scoped"), db, "default")
    start(stand_ins, worker_argv("t_plain"), db, "default")
    wait_ready(ready, {"t_scoped", "t_plain"})
    # Both the wrapper and the worker it started read `work kanban task t_scoped`: one card, one slot.
    wrapper_pid = started[0].pid
    worker_pid = int((ready / "t_scoped").read_text())
    assert worker_pid != wrapper_pid
    holders = {pid for pid, task, _ in workers.lookalikes() if task == "t_scoped"}
    assert holders == {wrapper_pid, worker_pid}
    live = workers.scan("default", db)
    assert live.tasks == {"t_scoped", "t_plain"} and live.unattributed == 0


def test_a_scope_wrapped_worker_of_another_board_is_not_counted(stand_ins):
    tmp_path, wrapper, ready, _ = stand_ins
    db = tmp_path / "kanban.db"
    start(stand_ins, scoped(wrapper, "t_elsewhere"), tmp_path / "boards" / "ops" / "kanban.db", "ops")
    wait_ready(ready, {"t_elsewhere"})
    assert workers.scan("default", db).tasks == frozenset()


def test_the_worker_argv_is_the_one_hermes_builds(stand_ins):
    """The stand-in's /proc argv is the argv of its shape, byte for byte, as the scan reads it."""
    tmp_path, _, ready, started = stand_ins
    start(stand_ins, worker_argv("t_argv"), tmp_path / "kanban.db", "default")
    wait_ready(ready, {"t_argv"})
    cmdline = Path(f"/proc/{started[0].pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    assert [arg.decode() for arg in cmdline] == worker_argv("t_argv")
