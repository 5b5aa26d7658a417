"""A small OpenAI-compatible LLM endpoint for tests and benchmarks (stdlib only, loopback only).

It streams (SSE) like vLLM or llama.cpp would. A Hermes kanban worker's first call is answered with
a `kanban_complete` tool call, the next (the one after the tool result) with final text. Each
request is held for a set time, separately for the final reply (a request may set its own with a
`fake_hold` field), and every request's start and end is recorded with the card it works on: GET
/stats gives the requests in flight, their peaks (all, and foreign: requests for no kanban card) and
the request log.

It also has the shapes of real servers, one `flavour` at a time (what another flavour serves is 404):
- vllm (default): GET /health, GET /metrics (vllm:num_requests_running, vllm:num_requests_waiting)
- llamacpp: GET /health, GET /metrics (llamacpp:requests_processing, llamacpp:requests_deferred),
  GET /slots (one entry per slot, `is_processing`)
- ollama: GET /api/ps (the loaded models), GET / ("Ollama is running")
- openai: only GET /v1/models and the chat.
`metrics=False` takes /metrics away (llama.cpp without --metrics: its load is then read from /slots).
Each request is also recorded with its client (the API key it sends), with the peak per client, so
several Hermes homes on one endpoint can be told apart.
With `slots` it processes at most that many chats at once, the rest wait (reported as waiting /
deferred), as a server with that many slots. An outage switch (`set_state`, or POST /control
{"state": "up"|"loading"|"down"} from another process) makes every request but /control, /stats and
/reset get 503 "Loading model" (loading) or its connection closed without an answer (down); the
chats in flight at a switch away from "up" are cut the same way, as a server restart cuts them.

    python3 tests/fake_llm.py --hold 1 --final-hold 8 --flavour llamacpp --slots 2 --port-file /tmp/port
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

TASK = re.compile(r"work kanban task (\w+)")
FLAVOURS = ("vllm", "llamacpp", "ollama", "openai")
STATES = ("up", "loading", "down")
MODEL = "fake-model"
# llama.cpp's answer to every request but /health while it loads a model.
LOADING = {"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}}
# Paths that answer in every state: the test's own, not the LLM server's.
CONTROL_PATHS = ("/control", "/stats", "/reset")


class Recorder:
    """Every chat request's start and end; in flight and peaks, in all and of foreign requests."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.in_flight = 0
        self.peak = 0
        self.foreign_in_flight = 0
        self.peak_foreign = 0
        self.rejected = 0  # requests refused or dropped by an outage, cut ones included
        self.requests: list[dict] = []
        self.client_in_flight: dict[str, int] = {}
        self.peak_by_client: dict[str, int] = {}

    def start(self, kind: str, task: str = "", client: str = "") -> dict:
        with self.lock:
            foreign = not task
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            self.foreign_in_flight += foreign
            self.peak_foreign = max(self.peak_foreign, self.foreign_in_flight)
            now_in = self.client_in_flight[client] = self.client_in_flight.get(client, 0) + 1
            self.peak_by_client[client] = max(self.peak_by_client.get(client, 0), now_in)
            entry = {
                "kind": kind,
                "task": task,
                "client": client,
                "foreign": foreign,
                "start": time.time(),
                "end": None,
            }
            self.requests.append(entry)
            return entry

    def end(self, entry: dict, cut: bool = False) -> None:
        with self.lock:
            self.in_flight -= 1
            self.foreign_in_flight -= entry["foreign"]
            self.client_in_flight[entry["client"]] -= 1
            entry["end"] = time.time()
            if cut:
                entry["cut"] = True
                self.rejected += 1

    def reject(self) -> None:
        with self.lock:
            self.rejected += 1

    def stats(self) -> dict:
        with self.lock:
            return {
                "in_flight": self.in_flight,
                "peak_in_flight": self.peak,
                "foreign_in_flight": self.foreign_in_flight,
                "peak_foreign_in_flight": self.peak_foreign,
                "peak_by_client": dict(self.peak_by_client),
                "rejected": self.rejected,
                "requests": [dict(entry) for entry in self.requests],
            }

    def reset(self) -> None:
        with self.lock:
            self.peak = self.in_flight
            self.peak_foreign = self.foreign_in_flight
            self.peak_by_client = {client: n for client, n in self.client_in_flight.items() if n}
            self.rejected = 0
            self.requests = []


class Gate:
    """The server's slots and its outage switch: who is processed, who waits, who is cut."""

    def __init__(self, slots: int | None) -> None:
        self.cond = threading.Condition()
        self.slots = slots
        self.processing = 0
        self.waiting = 0
        self.state = "up"
        self.epoch = 0  # bumped when the server leaves "up": every chat of an older epoch is cut

    def set_state(self, state: str) -> None:
        if state not in STATES:
            raise ValueError(f"state {state!r}: expected one of {', '.join(STATES)}")
        with self.cond:
            if self.state == "up" and state != "up":
                self.epoch += 1
            self.state = state
            self.cond.notify_all()

    def acquire(self) -> int | None:
        """Wait for a slot; the epoch it was taken in, or None when cut while waiting."""
        with self.cond:
            epoch = self.epoch
            self.waiting += 1
            try:
                while self.slots and self.processing >= self.slots:
                    if epoch != self.epoch:
                        return None
                    self.cond.wait()
                if epoch != self.epoch:
                    return None
            finally:
                self.waiting -= 1
            self.processing += 1
            return epoch

    def hold(self, epoch: int, seconds: float) -> bool:
        """Process for `seconds`; False when cut by an outage before the end."""
        deadline = time.monotonic() + seconds
        with self.cond:
            while epoch == self.epoch:
                left = deadline - time.monotonic()
                if left <= 0:
                    return True
                self.cond.wait(left)
            return False

    def release(self) -> None:
        with self.cond:
            self.processing -= 1
            self.cond.notify_all()

    def load(self) -> tuple[int, int]:
        with self.cond:
            return self.processing, self.waiting


def _is_final(body: dict) -> bool:
    """The worker has already called a tool: this call is for its final text."""
    return any(message.get("role") == "tool" for message in body.get("messages", []))


def _task_of(body: dict) -> str:
    """The card a worker's request is about: its prompt says `work kanban task <id>`."""
    for message in body.get("messages", []):
        content = message.get("content")
        text = content if isinstance(content, str) else json.dumps(content)
        match = TASK.search(text or "")
        if match:
            return match.group(1)
    return ""


def _offers_complete(body: dict) -> bool:
    return any(tool.get("function", {}).get("name") == "kanban_complete" for tool in body.get("tools") or [])


def _vllm_metrics(running: int, waiting: int) -> str:
    labels = f'engine="0",model_name="{MODEL}"'
    return (
        "# HELP vllm:num_requests_running Number of requests in model execution batches.\n"
        "# TYPE vllm:num_requests_running gauge\n"
        f"vllm:num_requests_running{{{labels}}} {float(running)}\n"
        "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.\n"
        "# TYPE vllm:num_requests_waiting gauge\n"
        f"vllm:num_requests_waiting{{{labels}}} {float(waiting)}\n"
        "# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.\n"
        "# TYPE vllm:kv_cache_usage_perc gauge\n"
        f"vllm:kv_cache_usage_perc{{{labels}}} 0.0\n"
    )


def _llamacpp_metrics(running: int, waiting: int) -> str:
    return (
        "# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed.\n"
        "# TYPE llamacpp:prompt_tokens_total counter\n"
        "llamacpp:prompt_tokens_total 0\n"
        "# HELP llamacpp:requests_processing Number of requests processing.\n"
        "# TYPE llamacpp:requests_processing gauge\n"
        f"llamacpp:requests_processing {running}\n"
        "# HELP llamacpp:requests_deferred Number of requests deferred.\n"
        "# TYPE llamacpp:requests_deferred gauge\n"
        f"llamacpp:requests_deferred {waiting}\n"
    )


def _slots(slots: int | None, running: int) -> list[dict]:
    """llama.cpp's /slots: one entry per slot; without a slot count, the busy ones and one idle."""
    count = slots or running + 1
    return [
        {
            "id": index,
            "id_task": index if index < running else -1,
            "n_ctx": 4096,
            "speculative": False,
            "is_processing": index < running,
            "next_token": {"has_next_token": index < running, "n_remain": -1, "n_decoded": 0},
        }
        for index in range(count)
    ]


def _ps() -> dict:
    """Ollama's /api/ps: the models loaded in memory."""
    return {
        "models": [
            {
                "name": f"{MODEL}:latest",
                "model": f"{MODEL}:latest",
                "size": 5137025024,
                "digest": "0" * 64,
                "details": {"format": "gguf", "family": "llama", "parameter_size": "7B"},
                "expires_at": "2099-01-01T00:00:00Z",
                "size_vram": 5137025024,
            }
        ]
    }


class Handler(BaseHTTPRequestHandler):
    server_version = "fake-llm/1"
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet: the recorder is the log
        pass

    def _send(self, status: int, data: bytes, content_type: str) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _json(self, status: int, payload: object) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def _text(self, status: int, text: str, content_type: str = "text/plain; version=0.0.4") -> None:
        self._send(status, text.encode(), content_type)

    def _path(self) -> str:
        return urlsplit(self.path).path.rstrip("/") or "/"

    def _outage(self) -> bool:
        """Answer as the server's state says; True when the request got its outage answer."""
        state = self.server.gate.state
        if state == "up":
            return False
        self.server.recorder.reject()
        if state == "loading":
            self._json(503, LOADING)
        else:
            self.close_connection = True  # down: no answer at all
        return True

    def do_GET(self) -> None:
        path = self._path()
        flavour = self.server.flavour
        if path.endswith("/stats"):
            self._json(200, self.server.recorder.stats())
        elif path == "/control":
            self._json(200, {"state": self.server.gate.state})
        elif self._outage():
            return
        elif path.endswith("/models"):
            self._json(
                200, {"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "fake"}]}
            )
        elif path == "/health" and flavour in ("vllm", "llamacpp"):
            self._json(200, {"status": "ok"})
        elif path == "/metrics" and flavour in ("vllm", "llamacpp") and self.server.metrics:
            render = _vllm_metrics if flavour == "vllm" else _llamacpp_metrics
            self._text(200, render(*self.server.gate.load()))
        elif path == "/slots" and flavour == "llamacpp":
            self._json(200, _slots(self.server.gate.slots, self.server.gate.load()[0]))
        elif path == "/api/ps" and flavour == "ollama":
            self._json(200, _ps())
        elif path == "/" and flavour == "ollama":
            self._text(200, "Ollama is running", "text/plain; charset=utf-8")
        else:
            self._json(404, {"error": "not found"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b"{}"
        path = self._path()
        if path.endswith("/reset"):
            self.server.recorder.reset()
            self._json(200, {"ok": True})
        elif path == "/control":
            self._control(raw)
        elif self._outage():
            return
        elif path.endswith("/chat/completions"):
            self._chat(json.loads(raw or b"{}"))
        else:
            self._json(404, {"error": "not found"})

    def _control(self, raw: bytes) -> None:
        try:
            state = json.loads(raw or b"{}").get("state")
            self.server.set_state(state)
        except (ValueError, AttributeError):
            self._json(400, {"error": f'expected {{"state": one of {", ".join(STATES)}}}'})
            return
        self._json(200, {"state": state})

    def _chat(self, body: dict) -> None:
        final = _is_final(body) or not _offers_complete(body)
        hold = body.get("fake_hold")
        if not isinstance(hold, int | float) or isinstance(hold, bool) or hold < 0:
            hold = self.server.final_hold if final else self.server.hold
        recorder, gate = self.server.recorder, self.server.gate
        client = (self.headers.get("Authorization") or "").removeprefix("Bearer ").strip()
        entry = recorder.start("final" if final else "tool", _task_of(body), client)
        epoch = gate.acquire()
        cut = epoch is None or not gate.hold(epoch, hold)
        # The request ends when its work does, before the answer is written: a client that sends
        # its next request as soon as it has the answer never overlaps itself in the record.
        if epoch is not None:
            gate.release()
        recorder.end(entry, cut=cut)
        if cut:
            self.close_connection = True  # cut by an outage: the client gets no answer
            return
        chunks = _final_chunks() if final else _tool_chunks()
        try:
            if body.get("stream"):
                self._stream(chunks)
            else:
                self._json(200, _as_completion(chunks))
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _stream(self, deltas: list[tuple[dict, str | None]]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        for delta, finish in deltas:
            chunk = {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": MODEL,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
        usage = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": MODEL,
            "choices": [],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        }
        self.wfile.write(f"data: {json.dumps(usage)}\n\ndata: [DONE]\n\n".encode())
        self.wfile.flush()
        self.close_connection = True


def _tool_chunks() -> list[tuple[dict, str | None]]:
    arguments = json.dumps({"summary": "done by the fake LLM", "result": "ok"})
    call = {
        "index": 0,
        "id": "call_fake_1",
        "type": "function",
        "function": {"name": "kanban_complete", "arguments": arguments},
    }
    return [({"role": "assistant", "content": None, "tool_calls": [call]}, None), ({}, "tool_calls")]


def _final_chunks() -> list[tuple[dict, str | None]]:
    return [({"role": "assistant", "content": "Task complete."}, None), ({}, "stop")]


def _as_completion(deltas: list[tuple[dict, str | None]]) -> dict:
    message = {"role": "assistant", "content": None}
    for delta, _ in deltas:
        message.update({key: value for key, value in delta.items() if key != "role"})
    finish = deltas[-1][1]
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": MODEL,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }


class FakeLLM(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, port: int, hold: float, final_hold: float, flavour: str, slots: int | None, metrics: bool = True
    ) -> None:
        if flavour not in FLAVOURS:
            raise ValueError(f"flavour {flavour!r}: expected one of {', '.join(FLAVOURS)}")
        if slots is not None and slots < 1:
            raise ValueError(f"slots {slots}: expected at least 1, or None for no limit")
        super().__init__(("127.0.0.1", port), Handler)
        self.recorder = Recorder()
        self.gate = Gate(slots)
        self.hold = hold
        self.final_hold = final_hold
        self.flavour = flavour
        self.metrics = metrics

    @property
    def state(self) -> str:
        return self.gate.state

    def set_state(self, state: str) -> None:
        """ "up", "loading" (503 to all) or "down" (connections closed unanswered); leaving "up"
        cuts the chats in flight."""
        self.gate.set_state(state)


def until(check, what: str, limit: float = 20.0) -> None:
    """Wait for a state of the servers under test (a bound, not a timing claim); fail naming `what`."""
    end = time.monotonic() + limit
    while not check():
        assert time.monotonic() < end, f"still not {what} after {limit:g}s"
        time.sleep(0.02)


def serve(
    hold: float,
    final_hold: float,
    port: int = 0,
    flavour: str = "vllm",
    slots: int | None = None,
    metrics: bool = True,
) -> FakeLLM:
    return FakeLLM(port, hold, final_hold, flavour, slots, metrics)


class ForeignStream:
    """`concurrency` plain chats (no kanban card) kept in flight at an endpoint, each held `hold` s,
    as interactive users or other hosts would; bounded: it stops by itself after `limit` seconds."""

    def __init__(self, url: str, concurrency: int, hold: float, limit: float) -> None:
        base = url.rstrip("/")
        parts = urlsplit(base if base.endswith("/v1") else base + "/v1")
        self.host, self.port, self.path = parts.hostname, parts.port or 80, parts.path + "/chat/completions"
        self.hold = hold
        self.body = json.dumps(
            {"model": MODEL, "messages": [{"role": "user", "content": "hello"}], "fake_hold": hold}
        ).encode()
        self.answered = 0
        self.failed = 0
        self._lock = threading.Lock()
        self._conns: set[http.client.HTTPConnection] = set()
        self._stop = threading.Event()
        self._end = time.monotonic() + limit
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(concurrency)]
        for thread in self._threads:
            thread.start()

    def _run(self) -> None:
        while not self._stop.is_set() and time.monotonic() < self._end:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.hold + 30)
            with self._lock:
                self._conns.add(conn)
            try:
                conn.request("POST", self.path, self.body, {"Content-Type": "application/json"})
                response = conn.getresponse()
                response.read()
                ok = response.status == 200
            except (OSError, http.client.HTTPException):
                ok = False
            finally:
                with self._lock:
                    self._conns.discard(conn)
                conn.close()
            with self._lock:
                self.answered += ok
                self.failed += not ok
            if not ok:
                self._stop.wait(0.1)  # an outage: try again soon, not in a tight loop

    def stop(self) -> None:
        """Stop sending; the chats in flight are abandoned (the server still holds them to the end)."""
        self._stop.set()
        with self._lock:
            for conn in self._conns:
                if conn.sock is not None:
                    with contextlib.suppress(OSError):
                        conn.sock.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(timeout=5)


def foreign_stream(url: str, concurrency: int, hold: float, limit: float = 900.0) -> ForeignStream:
    """Keep `concurrency` foreign chats in flight at the endpoint (base URL or server root) until
    `.stop()`, or `limit` seconds."""
    return ForeignStream(url, concurrency, hold, limit)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--hold", type=float, default=1.0, help="seconds each tool-call reply is held")
    parser.add_argument("--final-hold", type=float, default=8.0, help="seconds each final reply is held")
    parser.add_argument("--flavour", choices=FLAVOURS, default="vllm", help="which server's shapes it has")
    parser.add_argument(
        "--slots", type=int, help="chats processed at once, the rest wait (default: no limit)"
    )
    parser.add_argument(
        "--no-metrics", action="store_true", help="no /metrics (llama.cpp without --metrics: /slots only)"
    )
    parser.add_argument("--port-file", type=Path, help="write the chosen port here once listening")
    args = parser.parse_args()
    try:
        server = serve(args.hold, args.final_hold, args.port, args.flavour, args.slots, not args.no_metrics)
    except ValueError as error:
        parser.error(str(error))
    if args.port_file:
        args.port_file.write_text(str(server.server_address[1]))
    server.serve_forever()


if __name__ == "__main__":
    main()
