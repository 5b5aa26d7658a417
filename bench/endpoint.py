"""The bench's hold on the fake LLM endpoint: its outage switch, its metrics switch and a foreign
request stream.

tests/fake_llm.py owns both (`server.set_state(...)` and `foreign_stream(...)`); this module uses them
when the fake has them, and otherwise does the least that the bench needs itself, so the bench runs
against the fake of any commit.
"""

from __future__ import annotations

import contextlib
import json
import threading
import urllib.request

import fake_llm

STATES = ("up", "loading", "down")
LOADING = "unavailable_error"  # llama.cpp's error type while it loads the model


def serve(hold: float, final_hold: float):
    """The fake endpoint, switchable; vLLM-style /metrics when the fake serves them (its default)."""
    server = fake_llm.serve(hold, final_hold)
    if not hasattr(server, "set_state"):
        server.RequestHandlerClass = _switchable(server.RequestHandlerClass)
        server.bench_state = "up"
    return server


def set_state(server, state: str) -> None:
    """up, loading (503 to everything) or down (connections closed without an answer)."""
    if state not in STATES:
        raise ValueError(f"endpoint state {state!r}: one of {', '.join(STATES)}")
    if hasattr(server, "set_state"):
        server.set_state(state)
    else:
        server.bench_state = state


def set_flavour(server, flavour: str) -> None:
    """Which server's shapes the fake has from now on: "openai" switches its metrics off (a plain
    OpenAI-compatible server reports no load), "vllm" is its default."""
    if flavour not in fake_llm.FLAVOURS:
        raise ValueError(f"endpoint flavour {flavour!r}: one of {', '.join(fake_llm.FLAVOURS)}")
    server.flavour = flavour


def _switchable(handler):
    """A fake without an outage switch: its handler, refusing requests while the bench says so."""

    class Switchable(handler):
        def _refused(self) -> bool:
            state = getattr(self.server, "bench_state", "up")
            if state == "down":
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.close()
                return True
            if state == "loading":
                self._json(503, {"error": {"code": 503, "message": "Loading model", "type": LOADING}})
                return True
            return False

        def do_GET(self) -> None:
            if not self._refused():
                super().do_GET()

        def do_POST(self) -> None:
            if not self._refused():
                super().do_POST()

    return Switchable


def foreign(base_url: str, concurrency: int, hold: float):
    """Keep `concurrency` plain chat requests (no kanban card) in flight until `.stop()`."""
    if hasattr(fake_llm, "foreign_stream"):
        return fake_llm.foreign_stream(base_url, concurrency, hold)
    return _Stream(base_url, concurrency)


class _Stream:
    """The fake without foreign_stream: plain requests, each held as long as the fake holds a final
    reply; during an outage a failed request is retried after half a second."""

    def __init__(self, base_url: str, concurrency: int):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(concurrency)]
        for thread in self._threads:
            thread.start()

    def _loop(self) -> None:
        body = json.dumps({"model": "fake-model", "messages": [{"role": "user", "content": "hello"}]})
        while not self._stop.is_set():
            request = urllib.request.Request(
                self.url, body.encode(), {"Content-Type": "application/json"}, method="POST"
            )
            try:
                with urllib.request.urlopen(request, timeout=120) as answer:
                    answer.read()
            except OSError:
                self._stop.wait(0.5)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=150)
