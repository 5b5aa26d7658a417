"""Calls to the `hermes` CLI, each bounded by a timeout.

The CLI runs in a session of its own so a timeout kills it and anything it started in its
process group. Workers are not in that group: Hermes starts each in a new session.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from dataclasses import dataclass


class HermesFailed(RuntimeError):
    """The CLI timed out, failed or printed something that is not the expected JSON."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Hermes:
    binary: str
    board: str
    timeout: float

    def run(self, *args: str) -> str:
        argv = [self.binary, "kanban", "--board", self.board, *args]
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
        try:
            out, err = proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise HermesFailed("hermes_timeout", f"{' '.join(argv[1:])} ran over {self.timeout:g}s") from None
        if proc.returncode != 0:
            last = (err or out).decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
            raise HermesFailed("hermes_failed", f"exit {proc.returncode}: {last[0][:300]}")
        return out.decode("utf-8", "replace")

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
