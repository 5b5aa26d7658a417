"""endpoint.probe() against the fake LLM in every flavour and state, and against odd servers."""

from __future__ import annotations

import base64
import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fake_llm import FLAVOURS, foreign_stream, until
from hermes_pacer import endpoint

pytestmark = pytest.mark.slow

LOADS = {"vllm": True, "llamacpp": True, "ollama": False, "openai": False}


@pytest.fixture
def fake(fake_endpoint):
    """fake_endpoint's servers, with the base URL of the OpenAI API (/v1)."""

    def start(**shape):
        server, root = fake_endpoint(**shape)
        return server, root + "/v1"

    return start


class Odd(ThreadingHTTPServer):
    """A plain HTTP server answering each path as a test says: {path: (status, body, headers)} or
    {path: callable(handler)}; anything else 404. It counts the requests it gets."""

    daemon_threads = True

    def __init__(self, routes: dict, tls: ssl.SSLContext | None = None):
        self.routes = routes
        self.hits: list[str] = []
        self.headers_seen: list[dict] = []
        super().__init__(("127.0.0.1", 0), OddHandler)
        if tls:
            self.socket = tls.wrap_socket(self.socket, server_side=True)
        threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True).start()

    def handle_error(self, request, client_address):
        pass  # a client that stops reading (the probe at its limits) is what these tests do

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class OddHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.server.hits.append(self.path)
        self.server.headers_seen.append(dict(self.headers))
        route = self.server.routes.get(self.path, (404, b"not found", {}))
        if callable(route):
            route(self)
            return
        status, body, headers = route
        body = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def odd():
    servers = []

    def start(routes: dict) -> Odd:
        server = Odd(routes)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


OK = (200, '{"status":"ok"}', {"Content-Type": "application/json"})


# --- root_url ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base", "root"),
    [
        ("http://127.0.0.1:8000/v1", "http://127.0.0.1:8000"),
        ("http://127.0.0.1:8000/v1/", "http://127.0.0.1:8000"),
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("http://127.0.0.1:8000/", "http://127.0.0.1:8000"),
        ("https://gpu.example/llm/v1", "https://gpu.example/llm"),
        ("http://u:p@h:1/v1", "http://u:p@h:1"),
        ("http://h/v10", "http://h/v10"),
        (" http://h:1/v1 ", "http://h:1"),
    ],
)
def test_root_url(base, root):
    assert endpoint.root_url(base) == root


# --- the fake in every flavour and state ---------------------------------------------------------


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_each_flavour_is_up_read_by_its_kind_and_found_by_auto(fake, flavour):
    _, url = fake(flavour=flavour)
    for kind in (flavour, "auto"):
        reading = endpoint.probe(url, kind, timeout=2)
        assert reading.up and reading.kind == flavour, reading
        if LOADS[flavour]:
            assert (reading.running, reading.waiting) == (0, 0), reading
        else:
            assert (reading.running, reading.waiting) == (None, None), reading


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_loading_and_down_are_down_and_up_again_after(fake, flavour):
    server, url = fake(flavour=flavour)
    server.set_state("loading")
    for kind in (flavour, "auto"):
        reading = endpoint.probe(url, kind, timeout=2)
        assert not reading.up and "503 (loading)" in reading.detail, reading
        assert reading.kind == kind  # auto found nothing: the pass keeps searching next time
    server.set_state("down")
    for kind in (flavour, "auto"):
        reading = endpoint.probe(url, kind, timeout=2)
        assert not reading.up and reading.running is None, reading
        assert "connection" in reading.detail, reading
    server.set_state("up")
    assert endpoint.probe(url, flavour, timeout=2).up


@pytest.mark.parametrize("flavour", ["vllm", "llamacpp"])
def test_full_slots_report_running_and_the_queue(fake, flavour):
    server, url = fake(flavour=flavour, slots=1)
    stream = foreign_stream(url, concurrency=3, hold=30)
    try:
        until(lambda: server.recorder.stats()["in_flight"] == 3, "3 in flight")
        reading = endpoint.probe(url, flavour, timeout=2)
        assert (reading.up, reading.running, reading.waiting) == (True, 1, 2), reading
        assert endpoint.probe(url, "auto", timeout=2) == reading
    finally:
        stream.stop()
        server.set_state("down")  # cut the held chats: the fixture's shutdown does not wait for them


def test_llamacpp_slots_say_which_are_processing(fake):
    server, url = fake(flavour="llamacpp", slots=3)
    stream = foreign_stream(url, concurrency=2, hold=30)
    try:
        until(lambda: server.gate.load() == (2, 0), "2 processing")
        slots = json.loads(_get(endpoint.root_url(url) + "/slots"))
        assert [slot["is_processing"] for slot in slots] == [True, True, False]
    finally:
        stream.stop()
        server.set_state("down")


def test_foreign_requests_are_running_at_the_endpoint_and_recorded_apart(fake):
    server, url = fake(flavour="vllm")
    stream = foreign_stream(url, concurrency=2, hold=30)
    try:
        until(lambda: server.recorder.stats()["foreign_in_flight"] == 2, "2 foreign in flight")
        reading = endpoint.probe(url, "vllm", timeout=2)
        assert (reading.running, reading.waiting) == (2, 0), reading
        stats = server.recorder.stats()
        assert stats["peak_in_flight"] == 2 and stats["peak_foreign_in_flight"] == 2
        assert all(entry["foreign"] and entry["task"] == "" for entry in stats["requests"])
    finally:
        stream.stop()
        server.set_state("down")


def test_an_outage_cuts_the_chats_in_flight_and_control_answers_in_every_state(fake):
    server, url = fake(flavour="llamacpp")
    root = endpoint.root_url(url)
    stream = foreign_stream(url, concurrency=2, hold=30)
    try:
        until(lambda: server.recorder.stats()["in_flight"] == 2, "2 in flight")
        assert _post(root + "/control", {"state": "down"}) == (200, {"state": "down"})
        until(lambda: server.recorder.stats()["in_flight"] == 0, "cut")
        assert server.recorder.stats()["rejected"] >= 2
        assert sum(bool(entry.get("cut")) for entry in server.recorder.stats()["requests"]) == 2
        assert json.loads(_get(root + "/control")) == {"state": "down"}
        assert _post(root + "/control", {"state": "loading"}) == (200, {"state": "loading"})
        assert json.loads(_get(root + "/stats"))["in_flight"] == 0
        status, answer = _post(root + "/control", {"state": "sideways"})
        assert status == 400 and "up, loading, down" in answer["error"]
        assert server.state == "loading"
        assert _post(root + "/control", {"state": "up"}) == (200, {"state": "up"})
        # The stream goes on by itself once the endpoint is back.
        until(lambda: server.recorder.stats()["in_flight"] == 2, "2 in flight again")
    finally:
        stream.stop()
        server.set_state("down")


def test_loading_answers_as_llama_cpp_does(fake):
    server, url = fake(flavour="llamacpp")
    server.set_state("loading")
    status, body = _post(url + "/chat/completions", {"messages": [{"role": "user", "content": "hi"}]})
    assert status == 503 and body["error"]["message"] == "Loading model"


def test_other_flavours_paths_are_404(fake):
    _, url = fake(flavour="openai")
    root = endpoint.root_url(url)
    for path in ("/health", "/metrics", "/slots", "/api/ps"):
        with pytest.raises(OSError, match="404"):
            _get(root + path)


# --- odd servers -----------------------------------------------------------------------------


def test_refused_port_is_down():
    reading = endpoint.probe(f"http://127.0.0.1:{free_port()}/v1", "vllm", timeout=1)
    assert (reading.up, reading.kind) == (False, "vllm")
    assert reading.detail == "/health: connection refused"


def test_garbage_200_is_up_only_on_the_health_part(odd):
    garbage = (200, "<html>hello{{{ not metrics", {"Content-Type": "text/html"})
    server = odd({"/health": OK, "/metrics": garbage, "/slots": garbage})
    for kind in ("vllm", "llamacpp"):
        reading = endpoint.probe(server.url + "/v1", kind, timeout=2)
        assert reading.up and reading.running is None and reading.waiting is None, reading
        assert "load not read" in reading.detail
    sick = odd({"/health": (500, "boom", {}), "/metrics": garbage})
    assert not endpoint.probe(sick.url, "vllm", timeout=2).up


def test_metrics_parsing_sums_every_series_and_skips_what_counts_nothing(odd):
    page = "\n".join(
        [
            "# HELP vllm:num_requests_running Number of requests running.",
            "# TYPE vllm:num_requests_running gauge",
            'vllm:num_requests_running{model_name="a",engine="0"} 3.0',
            'vllm:num_requests_running{model_name="b \\"quoted\\" {braced}",engine="1"} 2',
            'vllm:num_requests_running{model_name="c"} NaN',
            'vllm:num_requests_running{model_name="d"} +Inf 1700000000000',
            "vllm:num_requests_running_total 99",
            'vllm:num_requests_waiting{model_name="a"} 1e0',
            'vllm:num_requests_waiting_by_reason{reason="capacity"} 7',
            "",
        ]
    )
    server = odd({"/health": (200, "", {}), "/metrics": (200, page, {})})
    reading = endpoint.probe(server.url + "/v1/", "vllm", timeout=2)
    assert (reading.up, reading.running, reading.waiting) == (True, 5, 1), reading


def test_a_malformed_line_of_the_metric_is_not_a_count(odd):
    page = 'vllm:num_requests_running{model_name="a} 3\nvllm:num_requests_waiting 0\n'
    server = odd({"/health": OK, "/metrics": (200, page, {})})
    reading = endpoint.probe(server.url, "vllm", timeout=2)
    assert reading.up and reading.running is None and "malformed" in reading.detail, reading


def test_a_metrics_page_over_1_mib_is_read_up_to_the_limit(odd):
    padding = "".join(f'other_metric{{i="{i}"}} 1\n' for i in range(60000))
    assert len(padding) > endpoint.BODY_LIMIT
    head = "llamacpp:requests_processing 2\nllamacpp:requests_deferred 1\n"
    first = odd({"/health": OK, "/metrics": (200, head + padding, {})})
    reading = endpoint.probe(first.url, "llamacpp", timeout=2)
    assert (reading.running, reading.waiting) == (2, 1) and "cut at 1 MiB" in reading.detail, reading
    # The counts past the limit are never read: the load is not known, and the detail says why.
    last = odd({"/health": OK, "/metrics": (200, padding + head, {}), "/slots": (404, "", {})})
    reading = endpoint.probe(last.url, "vllm", timeout=2)
    assert reading.up and reading.running is None, reading
    reading = endpoint.probe(last.url, "llamacpp", timeout=2)
    assert reading.up and reading.running is None and "load not read" in reading.detail, reading


def test_a_redirect_to_another_port_is_not_followed(odd):
    elsewhere = odd({"/health": OK, "/v1/models": OK})
    moved = (302, "", {"Location": elsewhere.url + "/health"})
    server = odd({"/health": moved, "/metrics": moved, "/v1/models": moved})
    reading = endpoint.probe(server.url, "vllm", timeout=2)
    assert not reading.up and "another host or port" in reading.detail, reading
    assert not endpoint.probe(server.url, "openai", timeout=2).up
    assert elsewhere.hits == []


def test_a_redirect_on_the_same_server_is_followed(odd):
    server = odd({"/health": (307, "", {"Location": "/healthz"}), "/healthz": OK, "/metrics": (404, "", {})})
    reading = endpoint.probe(server.url, "vllm", timeout=2)
    assert reading.up and "load not read" in reading.detail, reading


def test_a_server_that_never_answers_times_out():
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
        for kind in ("vllm", "auto"):
            reading = endpoint.probe(url, kind, timeout=1)
            assert not reading.up and "timed out after 1s" in reading.detail, reading
    finally:
        listener.close()


def test_a_body_that_trickles_forever_stops_at_the_probes_deadline(odd):
    def trickle(handler):
        handler.send_response(200)
        handler.send_header("Content-Length", "100000000")
        handler.end_headers()
        try:
            for _ in range(100):
                handler.wfile.write(b"#")
                handler.wfile.flush()
                time.sleep(0.1)
        except OSError:
            pass

    server = odd({"/health": trickle})
    reading = endpoint.probe(server.url, "llamacpp", timeout=1)
    assert not reading.up and "timed out" in reading.detail, reading


def test_headers_that_trickle_forever_stop_at_the_probes_deadline(odd):
    def trickle(handler):
        try:
            handler.wfile.write(b"HTTP/1.1 200 OK\r\n")
            for index in range(100):
                handler.wfile.write(f"X-Slow-{index}: y\r\n".encode())
                handler.wfile.flush()
                time.sleep(0.1)
        except OSError:
            pass

    server = odd({"/health": trickle, "/metrics": trickle, "/v1/models": trickle})
    for kind in ("vllm", "auto"):
        reading = endpoint.probe(server.url, kind, timeout=1)
        assert not reading.up and "timed out after 1s" in reading.detail, reading


def test_auto_tells_vllm_by_its_families_when_the_counts_are_past_the_limit(odd):
    head = 'vllm:cache_config_info{block_size="16"} 1.0\n'
    padding = "".join(f'vllm:some_histogram_bucket{{le="{i}"}} 1\n' for i in range(50000))
    tail = "vllm:num_requests_running 1\n"
    server = odd({"/health": (200, "", {}), "/metrics": (200, head + padding + tail, {})})
    reading = endpoint.probe(server.url, "auto", timeout=2)
    assert (reading.up, reading.kind, reading.running) == (True, "vllm", None), reading
    assert "over 1 MiB" in reading.detail


def test_credentials_are_sent_and_never_shown(odd):
    secret = "s3cr@t pass"
    expected = "Basic " + base64.b64encode(f"pacer:{secret}".encode()).decode()

    def guarded(handler):
        ok = handler.headers.get("Authorization") == expected
        body = b'{"status":"ok"}' if ok else b'{"error":"unauthorized"}'
        handler.send_response(200 if ok else 401)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    server = odd({"/health": guarded, "/metrics": (200, "vllm:num_requests_running 1\n", {})})
    port = server.server_address[1]
    reading = endpoint.probe(f"http://pacer:s3cr%40t%20pass@127.0.0.1:{port}/v1", "vllm", timeout=2)
    assert reading.up and reading.running == 1, reading
    assert server.headers_seen[0]["Authorization"] == expected
    wrong = endpoint.probe(f"http://pacer:wr0ngpass@127.0.0.1:{port}/v1", "vllm", timeout=2)
    refused = endpoint.probe(f"http://pacer:{secret}@127.0.0.1:{free_port()}/v1", "auto", timeout=1)
    for got in (reading, wrong, refused):
        assert "s3cr" not in got.detail and "wr0ng" not in got.detail and "pacer" not in got.detail, got


def test_openai_is_up_on_any_answer_below_500(odd):
    for status in (200, 401, 403, 404):
        server = odd({"/v1/models": (status, "{}", {})})
        reading = endpoint.probe(server.url + "/v1", "openai", timeout=2)
        assert reading.up and reading.running is None, (status, reading)
    server = odd({"/v1/models": (502, "bad gateway", {})})
    assert not endpoint.probe(server.url, "openai", timeout=2).up


def test_health_not_routed_falls_back_to_the_models_list(odd):
    server = odd({"/v1/models": OK})
    reading = endpoint.probe(server.url, "vllm", timeout=2)
    assert reading.up and reading.running is None and "/health: HTTP 404" in reading.detail, reading


def test_older_llama_cpp_slots_with_a_numeric_state(odd):
    slots = json.dumps([{"id": 0, "state": 1}, {"id": 1, "state": 0}, {"id": 2, "state": 1}])
    server = odd({"/health": OK, "/metrics": (501, "metrics disabled", {}), "/slots": (200, slots, {})})
    for kind in ("llamacpp", "auto"):
        reading = endpoint.probe(server.url, kind, timeout=2)
        assert (reading.up, reading.kind, reading.running, reading.waiting) == (True, "llamacpp", 2, None)


def test_ollama_garbage_ps_is_up_without_a_load(odd):
    server = odd({"/api/ps": (200, "not json", {})})
    reading = endpoint.probe(server.url, "ollama", timeout=2)
    assert reading.up and reading.running is None and "not as Ollama" in reading.detail, reading


def test_bad_kind_and_bad_url_are_down_with_a_clear_detail():
    reading = endpoint.probe("http://127.0.0.1:1/v1", "tgi")
    assert not reading.up and "auto, vllm, llamacpp, ollama, openai" in reading.detail
    for url in ("127.0.0.1:8000/v1", "ftp://h/v1", "http://h:port/v1", ""):
        reading = endpoint.probe(url, "vllm")
        assert not reading.up and reading.detail.startswith("bad URL"), (url, reading)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_https_verifies_the_certificate(tmp_path):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = Odd({"/health": OK, "/v1/models": OK}, tls=context)
    try:
        reading = endpoint.probe(f"https://127.0.0.1:{server.server_address[1]}/v1", "vllm", timeout=2)
        assert not reading.up and "certificate" in reading.detail, reading
    finally:
        server.shutdown()
        server.server_close()


# --- helpers -------------------------------------------------------------------------------------


def _get(url: str) -> bytes:
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read()


def _post(url: str, payload: dict) -> tuple[int, dict]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        url, json.dumps(payload).encode(), {"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
