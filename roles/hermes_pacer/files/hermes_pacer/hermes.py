"""Calls to the `hermes` CLI, each bounded in time and in what it may print, and stoppable.

The CLI runs in a session of its own, so ending a call ends it and anything it started in its
process group. Workers are not in that group: Hermes starts each in a new session, so ending a
call never kills a worker.

A call ends when the CLI has exited and its output is read, and never later than HERMES_TIMEOUT:
a child the CLI leaves behind holding its stdout open cannot stretch the call past a short drain
after the CLI itself exited, and what the CLI printed before exiting 0 is still used.

A stop signal (SIGTERM, SIGINT, SIGHUP) to the pass while a call runs ends that call's process
group first (SIGTERM, a short grace, SIGKILL) and waits for it; only then does the pass go on to
log and release its lock, so no dispatch of a stopped pass runs beside the next pass's.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import selectors
import signal
import subprocess
import time
from dataclasses import dataclass

from . import board_health

GRACE = 2.0  # seconds a stopped or overdue call gets between SIGTERM and SIGKILL
DRAIN = 1.5  # seconds to keep reading after the CLI exited: what a leaked pipe may still hold
OUTPUT_LIMIT = 16 << 20  # bytes a call may print on stdout or stderr: far past any real answer
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_POLL = 0.1  # seconds between exit checks where a pidfd is not available


class HermesFailed(RuntimeError):
    """The CLI timed out, failed or printed something that is not the expected JSON."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class Stopped(Exception):
    """A stop signal arrived; any hermes call that was running has been ended."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


class StopSignals:
    """SIGTERM, SIGINT and SIGHUP turned into a flag, checked where stopping is safe.

    A handler that raised could interrupt the pass anywhere (between starting a call and
    watching it, say), so the handler only notes the signal; a descriptor woken by it lets a
    call or a sleep notice at once. Install it in the main thread, as a context manager.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._read = self._write = -1
        self._saved_handlers: dict[int, object] = {}
        self._saved_wakeup = -1

    def __enter__(self) -> StopSignals:
        self._read, self._write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._saved_wakeup = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        for signum in STOP_SIGNALS:
            self._saved_handlers[signum] = signal.signal(signum, self._note)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._saved_handlers.items():
            signal.signal(signum, handler)
        signal.set_wakeup_fd(self._saved_wakeup)
        os.close(self._read)
        os.close(self._write)

    def _note(self, signum: int, _frame: object) -> None:
        if self.received is None:
            self.received = signum

    @property
    def wakeup(self) -> int:
        """A descriptor that turns readable when a signal arrives."""
        return self._read

    def clear_wakeup(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._read, 512):
                pass

    def check(self) -> None:
        if self.received is not None:
            raise Stopped(self.received)

    def sleep(self, seconds: float) -> None:
        """Sleep, or return early when a stop signal arrives."""
        deadline = time.monotonic() + seconds
        while self.received is None and (left := deadline - time.monotonic()) > 0:
            select.select([self._read], [], [], left)
            self.clear_wakeup()


def signal_group(pgid: int, signum: int) -> None:
    """Signal a process group; one already gone is no error."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def end_group(proc: subprocess.Popen, grace: float = GRACE) -> None:
    """End the process group `proc` leads: SIGTERM, up to `grace` seconds, then SIGKILL; reap it."""
    signal_group(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(grace)
    signal_group(proc.pid, signal.SIGKILL)  # whatever of the group is left, the leader included
    proc.wait()


def _exit_watch(proc: subprocess.Popen) -> int | None:
    """A descriptor that turns readable when `proc` exits (a pidfd), or None where there is none."""
    try:
        return os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        return None


@dataclass
class _Output:
    stdout: bytearray
    stderr: bytearray
    closed: bool  # both pipes reached end of file: nothing left behind holds them


def _collect(proc: subprocess.Popen, deadline: float, stop: StopSignals | None) -> _Output:
    """Read the call's stdout and stderr until the CLI exited and both pipes closed, until DRAIN
    seconds after it exited, or until the deadline. Raises Stopped on a stop signal, HermesFailed
    when it prints too much."""
    streams = {proc.stdout.fileno(): bytearray(), proc.stderr.fileno(): bytearray()}
    watch = _exit_watch(proc)
    with selectors.DefaultSelector() as selector:
        for fd in streams:
            os.set_blocking(fd, False)
            selector.register(fd, selectors.EVENT_READ, "stream")
        if watch is not None:
            selector.register(watch, selectors.EVENT_READ, "exit")
        if stop is not None:
            selector.register(stop.wakeup, selectors.EVENT_READ, "stop")
        open_streams = len(streams)
        watching = watch is not None
        exited = False
        try:
            while True:
                if stop is not None:
                    stop.check()
                if not exited and proc.poll() is not None:
                    exited = True
                    deadline = min(deadline, time.monotonic() + DRAIN)
                left = deadline - time.monotonic()
                if (exited and not open_streams) or left <= 0:
                    break
                for key, _ in selector.select(left if watching or exited else min(left, _POLL)):
                    if key.data == "exit":
                        selector.unregister(key.fd)  # the next round's poll() sees the exit
                        watching = False
                    elif key.data == "stop":
                        stop.clear_wakeup()
                    elif _read_into(key.fd, streams[key.fd]):
                        selector.unregister(key.fd)
                        open_streams -= 1
        finally:
            if watch is not None:
                os.close(watch)
    out, err = streams.values()
    return _Output(stdout=out, stderr=err, closed=open_streams == 0)


def _read_into(fd: int, buffer: bytearray) -> bool:
    """Append what `fd` has to `buffer`; True at end of file."""
    try:
        chunk = os.read(fd, 65536)
    except BlockingIOError:
        return False
    if len(buffer) + len(chunk) > OUTPUT_LIMIT:
        raise HermesFailed("hermes_bad_json", f"printed more than {OUTPUT_LIMIT} bytes")
    buffer += chunk
    return not chunk


@dataclass(frozen=True)
class Hermes:
    binary: str
    board: str
    timeout: float
    stop: StopSignals | None = None  # when given, a stop signal ends a running call

    def run(self, *args: str) -> str:
        argv = [self.binary, "kanban", "--board", self.board, *args]
        if self.stop is not None:
            self.stop.check()
        deadline = time.monotonic() + self.timeout
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            raise HermesFailed("hermes_unavailable", f"{self.binary}: {exc.strerror}") from exc
        with proc.stdout, proc.stderr:
            try:
                output = _collect(proc, deadline, self.stop)
            except BaseException:
                end_group(proc)
                raise
            if proc.poll() is None:
                end_group(proc)
                raise HermesFailed("hermes_timeout", f"{' '.join(argv[1:])} ran over {self.timeout:g}s")
            if not output.closed:
                # The CLI exited but left something in its group holding the pipes open.
                signal_group(proc.pid, signal.SIGKILL)
        refused = board_health.refusal(output.stderr.decode("utf-8", "replace"))
        if refused:  # Hermes refuses a corrupt board, and exits 0 (0.14 - 0.19)
            raise HermesFailed("board_corrupt", refused)
        if proc.returncode != 0:
            last = (output.stderr or output.stdout).decode("utf-8", "replace").strip().splitlines()[-1:]
            raise HermesFailed("hermes_failed", f"exit {proc.returncode}: {(last or [''])[0][:300]}")
        return output.stdout.decode("utf-8", "replace")

    def dispatch(self, max_arg: int) -> list[str]:
        """Ids of the cards this dispatch pass spawned."""
        text = self.run("dispatch", "--max", str(max_arg), "--json")
        try:
            result = json.loads(text)
            return [_task_id(entry) for entry in result["spawned"]]
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise HermesFailed("hermes_bad_json", f"dispatch printed no usable JSON: {text[:200]!r}") from exc

    def reclaim(self, task_id: str, reason: str) -> None:
        self.run("reclaim", task_id, "--reason", reason)

    def create(self, title: str, options: list[str]) -> dict:
        """The card `create` made, or the live card that already holds its idempotency key."""
        text = self.run("create", *options, "--json", "--", title)
        try:
            card = json.loads(text)
            if not isinstance(card, dict) or not isinstance(card.get("id"), str):
                raise TypeError("no id")
            return card
        except (ValueError, TypeError) as exc:
            raise HermesFailed("hermes_bad_json", f"create printed no usable JSON: {text[:200]!r}") from exc


def _task_id(entry: object) -> str:
    # 0.14 - 0.19 print [task_id, assignee, workspace]; accept an object with task_id too.
    if isinstance(entry, dict):
        return str(entry["task_id"])
    if isinstance(entry, list):
        return str(entry[0])
    raise TypeError(f"unexpected spawned entry {entry!r}")
