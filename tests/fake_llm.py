"""A small OpenAI-compatible LLM endpoint for tests and benchmarks (stdlib only, loopback only).

It streams (SSE) like vLLM or llama.cpp would. A Hermes kanban worker's first call is answered with
a `kanban_complete` tool call, the next (the one after the tool result) with final text. Each
request is held for a set time, separately for the final reply, and every request's start and end
is recorded with the card it works on: GET /stats gives the peak requests in flight and the request
log.

    python3 tests/fake_llm.py --hold 1 --final-hold 8 --port-file /tmp/port
"""

from __future__ import annotations

import argparse
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

TASK = re.compile(r"work kanban task (\w+)")


class Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.in_flight = 0
        self.peak = 0
        self.requests: list[dict] = []

    def start(self, kind: str, task: str = "") -> dict:
        with self.lock:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            entry = {"kind": kind, "task": task, "start": time.time(), "end": None}
            self.requests.append(entry)
            return entry

    def end(self, entry: dict) -> None:
        with self.lock:
            self.in_flight -= 1
            entry["end"] = time.time()

    def stats(self) -> dict:
        with self.lock:
            return {
                "in_flight": self.in_flight,
                "peak_in_flight": self.peak,
                "requests": [dict(entry) for entry in self.requests],
            }

    def reset(self) -> None:
        with self.lock:
            self.peak = self.in_flight
            self.requests = []


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


class Handler(BaseHTTPRequestHandler):
    server_version = "fake-llm/1"
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet: the recorder is the log
        pass

    def _json(self, status: int, payload: object) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path.rstrip("/").endswith("/stats"):
            self._json(200, self.server.recorder.stats())
        elif self.path.rstrip("/").endswith("/models"):
            self._json(
                200,
                {
                    "object": "list",
                    "data": [{"id": "fake-model", "object": "model", "owned_by": "hermes-pacer"}],
                },
            )
        else:
            self._json(404, {"error": "not found"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b"{}"
        if self.path.rstrip("/").endswith("/reset"):
            self.server.recorder.reset()
            self._json(200, {"ok": True})
            return
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._json(404, {"error": "not found"})
            return
        body = json.loads(raw or b"{}")
        final = _is_final(body) or not _offers_complete(body)
        recorder = self.server.recorder
        entry = recorder.start("final" if final else "tool", _task_of(body))
        try:
            time.sleep(self.server.final_hold if final else self.server.hold)
            chunks = _final_chunks() if final else _tool_chunks()
            if body.get("stream"):
                self._stream(chunks)
            else:
                self._json(200, _as_completion(chunks))
        finally:
            recorder.end(entry)

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
                "model": "fake-model",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
        usage = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": "fake-model",
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
        "model": "fake-model",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }


def serve(hold: float, final_hold: float, port: int = 0) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.recorder = Recorder()
    server.hold = hold
    server.final_hold = final_hold
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--hold", type=float, default=1.0, help="seconds each tool-call reply is held")
    parser.add_argument("--final-hold", type=float, default=8.0, help="seconds each final reply is held")
    parser.add_argument("--port-file", type=Path, help="write the chosen port here once listening")
    args = parser.parse_args()
    server = serve(args.hold, args.final_hold, args.port)
    if args.port_file:
        args.port_file.write_text(str(server.server_address[1]))
    server.serve_forever()


if __name__ == "__main__":
    main()
