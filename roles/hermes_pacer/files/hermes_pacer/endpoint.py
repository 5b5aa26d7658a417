"""Is the LLM endpoint up, and how busy is it: one bounded probe, as a pass makes it before a dispatch.

Health first, then load, each read where the server kind serves it:
- vllm: GET /health (200), then /metrics: vllm:num_requests_running and vllm:num_requests_waiting,
  summed over every series (one per model and engine).
- llamacpp: GET /health (200; 503 while the model loads), then /metrics (llamacpp:requests_processing,
  llamacpp:requests_deferred; only with --metrics) or else /slots (slots with is_processing true; older
  servers give a numeric `state`, 0 = idle; /slots tells nothing of a queue).
- ollama: GET /api/ps (200 = up); it has no request count.
- openai: GET {root}/v1/models; any answer below 500 (401, 403, 404 too) means a server is there.
- auto: the kind is found by what answers (/metrics names, /slots, /api/ps, /v1/models); the caller
  keeps `Reading.kind` and passes it next time, so only the first probe pays for the search.
A /health that answers neither 200 nor 5xx (a proxy that does not route it, an auth wall) is not the
last word: the server is then up when /v1/models answers below 500, as for `openai`.

Bounded: every request has the timeout and the whole probe ends within about two of them; a body is
read up to 1 MiB; a redirect is followed only on the same scheme, host and port (the workers' own
client follows none, so one elsewhere means the endpoint does not work as they see it). Credentials in
the URL (http://user:pass@host) are sent as Basic auth and never appear in `detail`. HTTPS verifies
certificates with the system's default context. probe() never raises.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import math
import os
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from urllib.parse import unquote, urljoin, urlsplit

from . import host

KINDS = host.ENDPOINT_KINDS
BODY_LIMIT = 1 << 20
MAX_REDIRECTS = 3
# How many timeouts one probe may take in all.
BUDGET = 2.0
RUNNING = {"vllm": "vllm:num_requests_running", "llamacpp": "llamacpp:requests_processing"}
WAITING = {"vllm": "vllm:num_requests_waiting", "llamacpp": "llamacpp:requests_deferred"}


@dataclass(frozen=True)
class Reading:
    up: bool  # answered normally: the pass may dispatch
    kind: str  # the kind read ("vllm", ...); for auto, the kind that answered ("auto": none did)
    running: int | None  # requests being processed at the endpoint (all models); None: not reported
    waiting: int | None  # requests queued at the endpoint; None: not reported
    detail: str  # one short phrase for the log: what was read, or why down


def root_url(base_url: str) -> str:
    """The server root: base_url without a trailing "/v1" or "/"."""
    root = base_url.strip().rstrip("/")
    if root.endswith("/v1"):
        root = root[: -len("/v1")].rstrip("/")
    return root


# ---------------------------------------------------------------------------------------------------
# HTTP: one server, one deadline


@dataclass(frozen=True)
class _Answer:
    status: int | None  # None: no HTTP answer (error says why)
    body: bytes = b""
    truncated: bool = False  # the body went on past BODY_LIMIT
    error: str = ""

    @property
    def failed(self) -> bool:
        """No answer, or a server error: the endpoint cannot take work."""
        return self.status is None or self.status >= 500

    def why(self, path: str) -> str:
        if self.status is None:
            return f"{path}: {self.error}"
        text = self.body[:2000].decode("utf-8", "replace").lower()
        loading = " (loading)" if self.status == 503 and "loading" in text else ""
        return f"{path}: HTTP {self.status}{loading}"


class _Server:
    """GETs to one server within one deadline, with the URL's credentials, never to another host."""

    def __init__(self, base_url: str, timeout: float) -> None:
        parts = urlsplit(root_url(base_url))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("the URL needs http:// or https:// and a host")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.prefix = parts.path.rstrip("/")
        self.headers = {
            "Accept": "application/json, text/plain;q=0.9, */*;q=0.1",
            "User-Agent": "hermes-pacer",
        }
        if parts.username is not None or parts.password is not None:
            pair = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
            self.headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        self.timeout = timeout
        self.deadline = time.monotonic() + BUDGET * timeout

    def left(self) -> float:
        return min(self.timeout, self.deadline - time.monotonic())

    def get(self, path: str) -> _Answer:
        target = self.prefix + path
        for _ in range(MAX_REDIRECTS + 1):
            answer, location = self._get_once(target)
            if location is None:
                return answer
            netloc = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
            moved = urlsplit(urljoin(f"{self.scheme}://{netloc}{target}", location))
            try:
                same = (moved.scheme, moved.hostname, moved.port or (443 if moved.scheme == "https" else 80))
            except ValueError:
                same = None
            if same != (self.scheme, self.host, self.port):
                return _Answer(None, error=f"HTTP {answer.status} to another host or port, not followed")
            target = (moved.path or "/") + (f"?{moved.query}" if moved.query else "")
        return _Answer(None, error="too many redirects")

    def _get_once(self, target: str) -> tuple[_Answer, str | None]:
        left = self.left()
        if left <= 0:
            return _Answer(None, error="no time left in this probe"), None
        if self.scheme == "https":
            conn = http.client.HTTPSConnection(
                self.host, self.port, timeout=left, context=ssl.create_default_context()
            )
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=left)
        watchdog = _Watchdog(left)
        try:
            conn.connect()
            watchdog.arm(conn.sock)
            conn.request("GET", target, headers=self.headers)
            response = conn.getresponse()
            if response.status in (301, 302, 303, 307, 308) and response.getheader("Location"):
                return _Answer(response.status), response.getheader("Location")
            body, truncated = _read(response)
            if watchdog.fired:  # the cut socket reads as the end of the body
                raise TimeoutError
            return _Answer(response.status, body, truncated), None
        except Exception as error:  # every failure is a reading, never a traceback
            return _Answer(None, error="timed out" if watchdog.fired else _failure(error)), None
        finally:
            watchdog.cancel()
            conn.close()


class _Watchdog:
    """Shuts a request's socket when its time is up. The socket timeout bounds each read only: a
    server that trickles its answer a byte at a time would hold the probe (and the pass) for ever."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds
        self.fired = False
        self.timer: threading.Timer | None = None

    def arm(self, sock: socket.socket) -> None:
        self.timer = threading.Timer(max(0.0, self.end - time.monotonic()), self._fire, (sock,))
        self.timer.daemon = True
        self.timer.start()

    def _fire(self, sock: socket.socket) -> None:
        self.fired = True
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)

    def cancel(self) -> None:
        if self.timer:
            self.timer.cancel()


def _read(response: http.client.HTTPResponse) -> tuple[bytes, bool]:
    """The body, at most BODY_LIMIT bytes of it; True when there was more."""
    chunks, size = [], 0
    while size <= BODY_LIMIT:
        chunk = response.read1(min(65536, BODY_LIMIT + 1 - size))
        if not chunk:
            return b"".join(chunks), False
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)[:BODY_LIMIT], True


def _failure(error: BaseException) -> str:
    """A short phrase for why a request got no answer (fixed words: no URL, no credentials)."""
    if isinstance(error, (TimeoutError, socket.timeout)):
        return "timed out"
    if isinstance(error, ssl.SSLCertVerificationError):
        return "TLS certificate not accepted"
    if isinstance(error, ssl.SSLError):
        return "TLS failed"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, (ConnectionResetError, BrokenPipeError)):
        return "connection reset"
    if isinstance(error, http.client.RemoteDisconnected):
        return "connection closed without an answer"
    if isinstance(error, socket.gaierror):
        return "host name not resolved"
    if isinstance(error, http.client.HTTPException):
        return f"not an HTTP answer ({type(error).__name__})"
    if isinstance(error, OSError) and error.errno:
        return os.strerror(error.errno).lower()
    return type(error).__name__


# ---------------------------------------------------------------------------------------------------
# What the pages say

# name, optional {labels} (quoted values may hold escaped quotes and braces), value, optional timestamp
_SAMPLE = re.compile(
    r"""^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)"""
    r"""(?:\{(?:\s*[a-zA-Z_][a-zA-Z0-9_]*\s*=\s*"(?:[^"\\\n]|\\.)*"\s*,?)*\s*\})?"""
    r"""[ \t]+(?P<value>\S+)(?:[ \t]+-?\d+)?[ \t]*$"""
)


class _Metrics:
    """The sums of some metric families of a Prometheus text page; None where a family is absent."""

    def __init__(self, text: str, names: tuple[str, ...], truncated: bool) -> None:
        self.sums: dict[str, float | None] = dict.fromkeys(names)
        self.bad: set[str] = set()
        closed: set[str] = set()
        current = None
        lines = text.split("\n")
        if truncated:
            lines = lines[:-1]  # the last line may be cut
        for line in lines:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            name = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line)
            name = name.group(0) if name else ""
            if current and name != current:
                closed.add(current)
            current = name
            if name not in self.sums:
                continue
            sample = _SAMPLE.match(line)
            value = _number(sample.group("value")) if sample else None
            if sample is None or (value is None and not _ignored(sample.group("value"))):
                self.bad.add(name)
                continue
            if value is not None:
                self.sums[name] = (self.sums[name] or 0.0) + value
        if not truncated and current:
            closed.add(current)
        # A page cut short may hold more series of a family it was still listing: that sum is unknown.
        self.cut = {name for name in names if truncated and name not in closed}

    def count(self, name: str) -> int | None:
        value = self.sums.get(name)
        if value is None or name in self.bad or name in self.cut:
            return None
        return max(0, round(value))


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _ignored(text: str) -> bool:
    """NaN and infinities: a valid sample that counts nothing."""
    return text.lower() in ("nan", "+inf", "-inf", "inf")


def _json(answer: _Answer) -> object:
    if answer.truncated:
        return None
    try:
        return json.loads(answer.body)
    except ValueError:
        return None


def _busy_slots(slots: object) -> int | None:
    """Slots processing a request in a llama.cpp /slots answer; None: not that shape."""
    if not isinstance(slots, list) or not slots or not all(isinstance(slot, dict) for slot in slots):
        return None
    busy = 0
    for slot in slots:
        if isinstance(slot.get("is_processing"), bool):
            busy += slot["is_processing"]
        elif isinstance(slot.get("state"), int) and not isinstance(slot.get("state"), bool):
            busy += slot["state"] != 0  # 0 is SLOT_STATE_IDLE in every release that had `state`
        else:
            return None
    return busy


# ---------------------------------------------------------------------------------------------------
# The probe


def probe(base_url: str, kind: str = "auto", timeout: float = 2.0) -> Reading:
    """Health, then load, of the endpoint at base_url; never raises."""
    if kind not in KINDS:
        return Reading(False, kind, None, None, f"unknown kind {kind!r}, expected one of {', '.join(KINDS)}")
    try:
        server = _Server(base_url, timeout)
    except ValueError:
        return Reading(False, kind, None, None, "bad URL: needs http(s)://, a host, a numeric port")
    try:
        reading = _KINDS[kind](server)
    except Exception as error:  # a probe never takes the pass down
        reading = Reading(False, kind, None, None, f"probe failed: {type(error).__name__}")
    detail = reading.detail.replace("timed out", f"timed out after {timeout:g}s")
    return Reading(reading.up, reading.kind, reading.running, reading.waiting, detail)


def _models(server: _Server, kind: str, first: tuple[str, _Answer]) -> Reading:
    """The first request answered neither 200 nor a server error (a proxy that does not route it, an
    auth wall): the server is up if /v1/models answers below 500, load unknown."""
    path, answer = first
    models = server.get("/v1/models")
    if models.failed:
        return Reading(False, kind, None, None, f"{answer.why(path)}, {models.why('/v1/models')}")
    return Reading(True, kind, None, None, f"{answer.why(path)}, /v1/models answers: load not read")


def _health(server: _Server, kind: str) -> Reading | None:
    """None when /health says the server is ready; else the reading that ends the probe."""
    health = server.get("/health")
    if health.status == 200:
        return None
    if health.failed:
        return Reading(False, kind, None, None, health.why("/health"))
    return _models(server, kind, ("/health", health))


def _from_metrics(kind: str, page: _Answer) -> Reading:
    """An up reading with the load of a /metrics page (None where the page does not give it)."""
    running_name, waiting_name = RUNNING[kind], WAITING[kind]
    if page.status != 200:
        return Reading(True, kind, None, None, f"load not read: {page.why('/metrics')}")
    metrics = _Metrics(page.body.decode("utf-8", "replace"), (running_name, waiting_name), page.truncated)
    running, waiting = metrics.count(running_name), metrics.count(waiting_name)
    if running is None:
        if running_name in metrics.bad:
            why = f"/metrics has a malformed {running_name}"
        elif running_name in metrics.cut:
            why = f"/metrics is over {BODY_LIMIT >> 20} MiB, {running_name} not read whole before it"
        else:
            why = f"/metrics has no {running_name}"
        return Reading(True, kind, None, waiting, f"load not read: {why}")
    queue = "not reported" if waiting is None else str(waiting)
    cut = f" (page cut at {BODY_LIMIT >> 20} MiB)" if page.truncated else ""
    return Reading(True, kind, running, waiting, f"running {running}, waiting {queue} (/metrics){cut}")


def _from_slots(answer: _Answer) -> Reading:
    if answer.status != 200:
        return Reading(True, "llamacpp", None, None, f"load not read: {answer.why('/slots')}")
    slots = _json(answer)
    busy = _busy_slots(slots)
    if busy is None:
        return Reading(True, "llamacpp", None, None, "load not read: /slots is not a list of slots")
    return Reading(True, "llamacpp", busy, None, f"{busy} of {len(slots)} slots processing (/slots)")


def _vllm(server: _Server, page: _Answer | None = None) -> Reading:
    return _health(server, "vllm") or _from_metrics("vllm", page or server.get("/metrics"))


def _llamacpp(server: _Server, page: _Answer | None = None) -> Reading:
    ended = _health(server, "llamacpp")
    if ended:
        return ended
    page = page or server.get("/metrics")
    if page.status == 200:
        reading = _from_metrics("llamacpp", page)
        if reading.running is not None:
            return reading
    # /metrics is there only with --metrics (it also gives the queue); /slots unless --no-slots.
    reading = _from_slots(server.get("/slots"))
    if reading.running is None and page.status == 200:
        return _from_metrics("llamacpp", page)
    return reading


def _ollama(server: _Server, ps: _Answer | None = None) -> Reading:
    ps = ps or server.get("/api/ps")
    if ps.failed:
        return Reading(False, "ollama", None, None, ps.why("/api/ps"))
    if ps.status != 200:
        return _models(server, "ollama", ("/api/ps", ps))
    if _is_ps(ps):
        return Reading(True, "ollama", None, None, f"models loaded: {len(_json(ps)['models'])} (/api/ps)")
    return Reading(True, "ollama", None, None, "/api/ps answers 200, not as Ollama does: load not read")


def _openai(server: _Server) -> Reading:
    models = server.get("/v1/models")
    if models.failed:
        return Reading(False, "openai", None, None, models.why("/v1/models"))
    return Reading(True, "openai", None, None, f"/v1/models answers HTTP {models.status}: load not reported")


def _auto(server: _Server) -> Reading:
    """Find the kind by what answers, the most telling first; down or unknown: kind "auto"."""
    page = server.get("/metrics")
    if page.status is None:
        return Reading(False, "auto", None, None, page.why("/metrics"))
    if page.failed:
        # llama.cpp answers 503 to all but /health while it loads: /health says whether it is ready.
        health = server.get("/health")
        if health.status != 200:
            why = health.why("/health") if health.failed else page.why("/metrics")
            return Reading(False, "auto", None, None, why)
    elif page.status == 200:
        text = page.body.decode("utf-8", "replace")
        if _names(text, "vllm:"):
            return _vllm(server, page)
        if _names(text, "llamacpp:"):
            return _llamacpp(server, page)
    slots = server.get("/slots")
    if slots.status == 200 and _busy_slots(_json(slots)) is not None:
        return _health(server, "llamacpp") or _from_slots(slots)
    ps = server.get("/api/ps")
    if _is_ps(ps):
        return _ollama(server, ps)
    reading = _openai(server)
    return reading if reading.up else Reading(False, "auto", None, None, reading.detail)


def _names(text: str, prefix: str) -> bool:
    """The page has a sample of a metric named with that prefix (the server's own families)."""
    return re.search(rf"^{re.escape(prefix)}[a-zA-Z0-9_:]*[{{ \t]", text, re.M) is not None


def _is_ps(answer: _Answer) -> bool:
    loaded = _json(answer) if answer.status == 200 else None
    return isinstance(loaded, dict) and isinstance(loaded.get("models"), list)


_KINDS = {"auto": _auto, "vllm": _vllm, "llamacpp": _llamacpp, "ollama": _ollama, "openai": _openai}
