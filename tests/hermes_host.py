"""A real Hermes home in a temporary directory: root config, worker profiles, boards and cards.

Workers are real `hermes` processes started by the real dispatcher; their model block points at a
fake LLM endpoint on 127.0.0.1. Everything a test starts is found again by the HOME in its
environment and killed at the end.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CAPPED = REPO / "scripts" / "hermes-kanban-dispatch-capped.sh"
SUBMINUTE = REPO / "scripts" / "hermes-kanban-dispatch-subminute.sh"

# 0.14 starts workers with the skill `kanban-worker`, which its wheel does not ship.
WORKER_SKILL = (
    "---\nname: kanban-worker\ndescription: Work one kanban task.\n---\n"
    "Do the task, then call kanban_complete.\n"
)


def model_block(port: int) -> str:
    return (
        f"model:\n  default: fake-model\n  provider: custom\n"
        f"  base_url: http://127.0.0.1:{port}/v1\n  api_key: x\n"
    )


class HermesHost:
    def __init__(self, home: Path, hermes_bin: Path):
        self.home = home
        self.hermes_bin = hermes_bin
        self.root = home / ".hermes"
        self.env = {
            "HOME": str(home),
            "PATH": f"{hermes_bin.parent}:/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "HERMES_BIN": str(hermes_bin),
            "PACER_LOCK_DIR": str(home / "locks"),
        }

    # --- setup -------------------------------------------------------------------------------
    def configure(self, port: int, profiles: dict[str, int] | None = None) -> None:
        """Root config and one profile per name, each pointing at the fake LLM on its port.

        The home is a copy of one the real CLI set up (`profile create --clone`, `kanban init`)
        with the same profiles, made once per process and release: what those commands write
        names no path and no port, and each costs a Hermes start-up."""
        shutil.copytree(_template(self.hermes_bin, tuple(profiles or {})), self.root, dirs_exist_ok=True)
        self._write_config(self.root, port)
        for name, profile_port in (profiles or {}).items():
            self._write_config(self.root / "profiles" / name, profile_port)

    def _set_up(self, profiles: tuple[str, ...]) -> None:
        """What configure copies, done by the real CLI."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._write_config(self.root, 0)
        for name in profiles:
            self.run("profile", "create", name, "--clone", "--no-alias")
        self.kanban("init")

    def _write_config(self, home: Path, port: int, extra: str = "") -> None:
        home.mkdir(parents=True, exist_ok=True)
        (home / "config.yaml").write_text(
            model_block(port) + "kanban:\n  dispatch_in_gateway: false\n" + extra
        )
        skill = home / "skills" / "kanban-worker" / "SKILL.md"
        skill.parent.mkdir(parents=True, exist_ok=True)
        skill.write_text(WORKER_SKILL)

    def add_root_kanban_setting(self, line: str) -> None:
        config = self.root / "config.yaml"
        config.write_text(config.read_text() + f"  {line}\n")

    def create_board(self, slug: str) -> None:
        self.kanban("boards", "create", slug)

    def create_cards(self, count: int, assignee: str = "worker", board: str | None = None) -> list[str]:
        """`hermes kanban create` count times: the CLI's own main() in one process (one start-up)."""
        on_board = ["--board", board] if board else []
        calls = [
            ["kanban", *on_board, "create", f"card {i}", "--assignee", assignee, "--json"]
            for i in range(count)
        ]
        return [json.loads(out)["id"] for out in self.run_many(calls)]

    # --- hermes ------------------------------------------------------------------------------
    def run(self, *args: str) -> str:
        return self._hermes([str(self.hermes_bin), *args], " ".join(args))

    def _hermes(self, argv: list[str], what: str, stdin: str | None = None) -> str:
        """stdout of a Hermes process in this home; AssertionError naming `what` when it fails."""
        proc = subprocess.run(
            argv, input=stdin, env=self.env, capture_output=True, text=True, timeout=120, check=False
        )
        if proc.returncode != 0:
            raise AssertionError(f"hermes {what} failed ({proc.returncode}): {proc.stderr[-800:]}")
        return proc.stdout

    def run_many(self, calls: list[list[str]]) -> list[str]:
        """Each call's stdout, from the CLI's main() run once per call in one Python process: the
        same code as `hermes ARGS` without a start-up each (`hermes kanban create` x 6 in a
        second instead of six)."""
        argv = [str(self.hermes_bin.parent / "python"), "-c", _RUN_MANY]
        return json.loads(self._hermes(argv, f"{' '.join(calls[0])}...", json.dumps(calls)))

    def kanban(self, *args: str, board: str | None = None) -> str:
        return self.run("kanban", *(["--board", board] if board else []), *args)

    def board_db(self, board: str | None = None) -> Path:
        """Where Hermes keeps a board: <root>/kanban.db for `default`, else kanban/boards/<slug>/."""
        if board is None:
            current = self.root / "kanban" / "current"
            board = current.read_text().strip() if current.is_file() else "default"
        if board == "default":
            return self.root / "kanban.db"
        return self.root / "kanban" / "boards" / board / "kanban.db"

    def statuses(self, board: str | None = None) -> dict[str, str]:
        """Card id -> status, as `hermes kanban list` shows them (archived cards left out), read
        from the board itself, read-only: a test that polls it starts no Hermes process (and,
        unlike `list`, promotes no card: only the dispatcher under test does)."""
        conn = sqlite3.connect(f"{self.board_db(board).as_uri()}?mode=ro", uri=True, timeout=10)
        try:
            return dict(conn.execute("SELECT id, status FROM tasks WHERE status != 'archived'").fetchall())
        finally:
            conn.close()

    # --- the pacer ---------------------------------------------------------------------------
    def pacer_env(self, **overrides: str) -> dict[str, str]:
        env = dict(self.env)
        env.update(overrides)
        return {key: value for key, value in env.items() if value is not None}

    def capped(self, timeout: float = 120, **overrides: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(CAPPED)],
            env=self.pacer_env(**overrides),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def subminute(self, **overrides: str) -> subprocess.Popen:
        return subprocess.Popen(
            [str(SUBMINUTE)],
            env=self.pacer_env(**overrides),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )

    # --- observation -------------------------------------------------------------------------
    def workers(self) -> dict[str, str]:
        """Live workers of this home: card id -> board, read from /proc independently of the pacer.

        A worker is one card's process; its short-lived forks carry the same command line and
        count once.
        """
        found = {}
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                if b"work kanban task" not in cmdline:
                    continue
                env = dict(
                    e.split(b"=", 1)
                    for e in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                    if b"=" in e
                )
            except OSError:
                continue
            if env.get(b"HOME", b"").decode() == str(self.home):
                task = cmdline.split(b"work kanban task ", 1)[1].split(b"\0", 1)[0].decode()
                found[task] = env.get(b"HERMES_KANBAN_BOARD", b"?").decode()
        return found

    def wait_all_done(self, boards: list[str | None], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(set(self.statuses(board).values()) == {"done"} for board in boards) and not self.workers():
                return True
            time.sleep(1)
        return False

    def home_processes(self) -> list[int]:
        """Every process whose environment carries this home (workers and their children)."""
        found = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"HOME={self.home}".encode() in environ:
                found.append(int(pid))
        return found

    def kill_everything(self) -> None:
        for pid in self.home_processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


# run_many's program: read a JSON list of argv lists, run hermes_cli's main() on each, print the
# list of their stdouts; a call that exits non-zero ends it with that status and its stderr.
_RUN_MANY = """
import contextlib, io, json, sys
from hermes_cli.main import main
outs = []
for argv in json.load(sys.stdin):
    sys.argv = ["hermes", *argv]
    out = io.StringIO()
    code = 0
    try:
        with contextlib.redirect_stdout(out):
            main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    if code:
        sys.stderr.write(f"hermes {' '.join(argv)}: exit {code}\\n")
        sys.exit(code)
    outs.append(out.getvalue())
sys.stdout.write(json.dumps(outs))
"""

# Homes set up by the real CLI, by (release, profiles): configure copies them.
_TEMPLATES: dict[tuple[Path, tuple[str, ...]], Path] = {}


def _template(hermes_bin: Path, profiles: tuple[str, ...]) -> Path:
    key = (hermes_bin, profiles)
    if key not in _TEMPLATES:
        folder = Path(tempfile.mkdtemp(prefix="hermes-home-template-"))
        atexit.register(shutil.rmtree, folder, True)
        home = folder / "home"
        home.mkdir()
        maker = HermesHost(home, hermes_bin)
        maker._set_up(profiles)
        shutil.rmtree(maker.root / "logs", ignore_errors=True)
        _TEMPLATES[key] = maker.root
    return _TEMPLATES[key]


class WorkerSampler(threading.Thread):
    """Samples the live workers of a home every 50 ms and keeps the peak per board."""

    def __init__(self, host: HermesHost):
        super().__init__(daemon=True)
        self.host = host
        self.peak: dict[str, int] = {}
        self.peak_total = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            boards: dict[str, int] = {}
            for board in self.host.workers().values():
                boards[board] = boards.get(board, 0) + 1
            for board, count in boards.items():
                self.peak[board] = max(self.peak.get(board, 0), count)
            self.peak_total = max(self.peak_total, sum(boards.values()))
            self._stop_event.wait(0.05)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def pace_until_done(host, boards: dict[str | None, dict], timeout: float = 300):
    """One sub-minute loop per board, started again each time it ends (as cron starts one each
    minute), until every card is done."""
    sampler = WorkerSampler(host)
    sampler.start()
    loops: dict[str | None, subprocess.Popen] = {}
    logs = dict.fromkeys(boards, "")

    def start(board):
        env = {**boards[board], **({"BOARD": board} if board else {})}
        loops[board] = host.subminute(RUNS_PER_MINUTE="30", **env)

    deadline = time.monotonic() + timeout
    finished = False
    try:
        for board in boards:
            start(board)
        while not finished and time.monotonic() < deadline:
            for board, loop in loops.items():
                if loop.poll() is not None:
                    logs[board] += loop.communicate()[0]
                    start(board)
            finished = all(set(host.statuses(b).values()) == {"done"} for b in boards) and not host.workers()
            time.sleep(1)
    finally:
        for board, loop in loops.items():
            os.killpg(loop.pid, signal.SIGTERM)
            logs[board] += loop.communicate()[0]
        sampler.stop()
    logs = list(logs.values())
    assert finished, f"cards not all done: {[host.statuses(b) for b in boards]}\n" + "\n".join(logs)
    return sampler, logs
