"""A fleet seen by `verify`: on one host (its fleet settings, the live workers of its boards, the
clock: time sync service and the offset against the endpoint's Date) and across the inventory
(`./tasks.sh verify`: shares and workers against the cap, members without a report, hosts that
call the endpoint without being in its group)."""

from __future__ import annotations

import ast
import json
import os
import re
import socket
import subprocess
import threading
import time
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from ansible_run import LOCAL_HOST, UNREACHABLE_HOST, invoke, stub_verify_scripts, write_inventory
from hermes_host import CAPPED, REPO
from hermes_pacer import clock, fleet_report, host, paths, settings, status, verify
from test_verify import with_a_logged_cron_pacer

pytestmark = pytest.mark.slow

VERIFY = REPO / "scripts" / "hermes-pacer-verify.sh"
URL = "http://gpu-a.example.net:8000/v1"


# --- across the inventory: a pure function of the hosts' documents ------------------------------


def _entry(index: int, workers: int, share: int = 1, url: str = URL, cap: int = 2, hosts: int = 2) -> dict:
    """A host's fleet entry, as verify.fleet_endpoints makes it."""
    return {
        "fleet": "gpu_a_fleet",
        "endpoint": "gpu-a",
        "url": url,
        "url_from": "settings",
        "cap": cap,
        "kind": "vllm",
        "index": index,
        "hosts": hosts,
        "share": share,
        "min_share": 0,
        "reserve": 0,
        "slice_seconds": 15,
        "startup_seconds": 10,
        "timeout": 2,
        "root": "/var/lib/hermes/.hermes",
        "boards": ["default"],
        "mode": "sliced",
        "workers": workers,
    }


def _document(*fleets: dict, urls: tuple[str, ...] = ()) -> dict:
    calls = [{"url": fleet["url"], "where": "board default (endpoint gpu-a)"} for fleet in fleets]
    calls += [{"url": url, "where": "model.base_url of /home/x/.hermes/config.yaml"} for url in urls]
    return {
        "ok": True,
        "boards": [],
        "checks": [],
        "warnings": [],
        "fleets": list(fleets),
        "endpoint_urls": calls,
    }


GROUPS = {"all": ["a", "b", "c"], "gpu_a_fleet": ["a", "b"], "ungrouped": ["c"]}


def test_a_fleet_within_its_cap_is_ok_and_lists_every_host():
    documents = {"a": _document(_entry(0, 1)), "b": _document(_entry(1, 1)), "c": _document()}
    (summary,) = fleet_report.fleets(documents, GROUPS)
    assert summary["ok"] and summary["problems"] == [] and summary["warnings"] == []
    assert (summary["fleet"], summary["endpoint"], summary["cap"]) == ("gpu_a_fleet", "gpu-a", 2)
    assert [(h["host"], h["share"], h["workers"]) for h in summary["hosts"]] == [("a", 1, 1), ("b", 1, 1)]
    assert (summary["workers"], summary["shares"], summary["missing"], summary["strays"]) == (2, 2, [], [])
    assert "live workers 2 of cap 2" in fleet_report.render([summary])


def test_live_workers_above_the_cap_fail_the_run():
    documents = {"a": _document(_entry(0, 2)), "b": _document(_entry(1, 1))}
    (summary,) = fleet_report.fleets(documents, GROUPS)
    assert not summary["ok"]
    assert summary["problems"] == ["3 live workers on the endpoint together, over its cap of 2"]
    assert "NOT SAFE" in fleet_report.render([summary])


def test_static_shares_above_the_cap_and_a_shared_place_are_said():
    documents = {"a": _document(_entry(0, 0, share=2)), "b": _document(_entry(0, 0, share=1))}
    (summary,) = fleet_report.fleets(documents, GROUPS)
    assert any("two hosts hold the same place (1)" in problem for problem in summary["problems"])
    assert any("static shares add up to 3, over the cap of 2" in warning for warning in summary["warnings"])


def test_a_host_that_calls_the_endpoint_outside_the_group_is_named():
    """Its board's endpoint or a Hermes home's model.base_url is the fleet's URL, written otherwise
    (credentials, the default port, upper case, a trailing / or /v1)."""
    documents = {
        "a": _document(_entry(0, 0)),
        "b": _document(_entry(1, 0)),
        "c": _document(urls=("HTTP://pacer:s3cret@GPU-A.example.net/v1/", "http://other:8000/v1")),
        "d": _document(urls=("http://gpu-a.example.net:80/v1",)),
    }
    url = "http://gpu-a.example.net/v1"  # port 80, as d writes it
    documents["a"]["fleets"][0]["url"] = documents["b"]["fleets"][0]["url"] = url
    (summary,) = fleet_report.fleets(documents, GROUPS)
    assert summary["ok"]  # a warning: the run does not fail on it
    assert [(s["host"], s["where"]) for s in summary["strays"]] == [
        ("c", "model.base_url of /home/x/.hermes/config.yaml"),
        ("d", "model.base_url of /home/x/.hermes/config.yaml"),
    ]
    assert (
        "c calls the endpoint (model.base_url of /home/x/.hermes/config.yaml) but is not in group gpu_a_fleet"
        in (" ".join(summary["warnings"]))
    )
    assert "s3cret" not in json.dumps(summary)


def test_while_the_members_name_several_urls_a_host_calling_any_is_named():
    """Each member's URL may be the endpoint's (the run fails on the disagreement): a host outside
    the group that calls any of them is a stray, written however it is."""
    other = "http://gpu-b.example.net:8000/v1"
    documents = {
        "a": _document(_entry(0, 0)),
        "b": _document(_entry(1, 0, url=other)),
        "c": _document(urls=("HTTP://GPU-B.example.net:8000/",)),
        "d": _document(urls=("http://gpu-a.example.net:8000",)),
        "e": _document(urls=("http://gpu-c.example.net:8000/v1",)),
    }
    (summary,) = fleet_report.fleets(documents, GROUPS)
    assert not summary["ok"] and "name different URLs" in " ".join(summary["problems"])
    assert [(s["host"], s["url"]) for s in summary["strays"]] == [
        ("c", "http://gpu-b.example.net:8000"),
        ("d", "http://gpu-a.example.net:8000"),
    ]
    assert "c calls the endpoint at http://gpu-b.example.net:8000 (model.base_url of " in (
        " ".join(summary["warnings"])
    )


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("http://gpu-a:8000/v1", "http://GPU-A:8000/v1/"),
        ("http://gpu-a:8000", "http://gpu-a:8000/v1"),
        ("http://user:pw@gpu-a:8000/v1", "http://gpu-a:8000/v1"),
        ("http://gpu-a/v1", "http://gpu-a:80"),
        ("https://gpu-a/v1", "https://gpu-a:443/"),
        ("http://[::1]:8000/v1", "http://[::1]:8000"),
    ],
)
def test_urls_are_compared_normalised(one, other):
    assert fleet_report.normal_url(one) == fleet_report.normal_url(other)


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("http://gpu-a:8000/v1", "http://gpu-a:8001/v1"),
        ("http://gpu-a/v1", "https://gpu-a/v1"),
        ("http://gpu-a:8000/a/v1", "http://gpu-a:8000/b/v1"),
    ],
)
def test_other_endpoints_stay_other(one, other):
    assert fleet_report.normal_url(one) != fleet_report.normal_url(other)


def test_members_without_a_report_are_named_with_why():
    groups = {"gpu_a_fleet": ["a", "b", "c", "d"]}
    documents = {
        "a": _document(_entry(0, 1, hosts=4)),
        "b": {"ok": False, "error": "unreachable or failed, no report: fatal: [b]: UNREACHABLE!"},
        "c": _document(),
    }
    (summary,) = fleet_report.fleets(documents, groups)
    assert summary["ok"]
    assert summary["missing"] == [
        {"host": "b", "why": "no report: unreachable or failed, no report: fatal: [b]: UNREACHABLE!"},
        {"host": "c", "why": "its settings name no fleet for endpoint gpu-a: run site.yml there"},
        {
            "host": "d",
            "why": "not in this run (--limit or --hosts left it out): its share and workers are not counted",
        },
    ]
    text = fleet_report.render([summary])
    assert "missing d: not in this run" in text


def test_without_the_inventory_the_members_are_those_that_report():
    documents = {"a": _document(_entry(0, 1)), "b": _document(_entry(1, 0))}
    (summary,) = fleet_report.fleets(documents)
    assert summary["missing"] == [] and summary["ok"]
    assert any("group gpu_a_fleet is not known here" in warning for warning in summary["warnings"])


def test_hosts_without_a_fleet_give_no_fleet():
    assert (
        fleet_report.fleets({"a": _document(urls=(URL,)), "b": {"ok": False, "error": "down"}}, GROUPS) == []
    )


# --- the clock ---------------------------------------------------------------------------------


class _Skewed(BaseHTTPRequestHandler):
    """An endpoint whose clock is 30 s ahead (any answer carries its Date)."""

    def date_time_string(self, timestamp=None):
        return formatdate(time.time() + 30, usegmt=True)

    def do_GET(self):
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def skewed():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Skewed)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_the_offset_against_an_endpoint_is_read_from_its_date(fake_endpoint, skewed):
    _, root = fake_endpoint()
    near = clock.endpoint_offset("gpu-a", f"{root}/v1", f"{root}/v1", 2)
    assert near.error == "" and abs(near.offset_seconds) < clock.OFFSET_WARNING
    assert near.uncertainty_seconds >= 0.5
    ahead = clock.endpoint_offset("gpu-b", skewed, skewed, 2)
    assert 28 <= ahead.offset_seconds <= 32


def test_an_endpoint_that_does_not_answer_gives_why():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: refused
        item = clock.endpoint_offset("gpu-a", f"http://127.0.0.1:{port}/v1", "x", 1)
    assert item.offset_seconds is None and item.error == "connection refused"


@pytest.mark.parametrize(
    "url",
    ["http://h:abc/v1", "http://[::1/v1", "http://h:99999/v1", "http://[zz]/v1", "ftp://h/v1", "http:///v1"],
)
def test_a_malformed_endpoint_url_is_a_note_never_a_traceback(url):
    """The URL may be the Hermes user's model.base_url: verify says why it read no offset."""
    item = clock.endpoint_offset("gpu-a", url, url, 1)
    assert (item.offset_seconds, item.error) == (None, clock.BAD_URL)
    entry = _entry(0, 0, url=url) | {"url_from": "model.base_url"}
    _, _, notes, seen = verify.fleet_clock([entry], "/proc", frozenset())
    assert seen["endpoints"][0]["error"] == clock.BAD_URL
    assert f"endpoint gpu-a ({url}) gave no Date: {clock.BAD_URL}; no clock offset read" in " ".join(notes)
    assert "endpoint gpu-a: no Date (bad URL" in verify.render_clock(seen)


def test_the_role_and_verify_accept_the_same_time_sync_services():
    """The role's preflight and `verify` look for the same process names."""
    tasks = yaml.safe_load((REPO / "roles" / "hermes_pacer" / "tasks" / "preflight-fleet.yml").read_text())
    (task,) = [task for task in tasks if task.get("name") == "Check that a time sync service runs"]
    (listed,) = re.findall(r"selectattr\('1', 'in', (\[[^]]*\])\)", task["vars"]["services"])
    assert sorted(ast.literal_eval(listed)) == sorted(clock.SERVICES)


def test_a_time_daemon_lookalike_of_the_hermes_user_is_no_service():
    """Any user can name a process chronyd: one of the Hermes user's uid does not count."""
    rename = "import ctypes, time; ctypes.CDLL(None).prctl(15, b'chronyd', 0, 0, 0); time.sleep(60)"
    process = subprocess.Popen(["/usr/bin/python3", "-c", rename], user=65534 if os.geteuid() == 0 else None)
    try:
        deadline = time.monotonic() + 30
        while "chronyd" not in clock.services() and time.monotonic() < deadline:
            time.sleep(0.1)
        uid = os.stat(f"/proc/{process.pid}").st_uid
        assert "chronyd" in clock.services()
        hostile = {pid for pid in os.listdir("/proc") if pid.isdigit() and _comm(pid) == "chronyd"}
        if hostile == {str(process.pid)}:  # no real chronyd beside it
            assert "chronyd" not in clock.services(hostile_uids=frozenset({uid}))
    finally:
        process.kill()
        process.wait()


def _comm(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


# --- the mode: the endpoint's status file, else the newest pass that logged one -----------------


def _pass(stamp: str, reason: str, mode: str = "") -> dict[str, str]:
    fleet = f" fleet=gpu_a_fleet fleet_mode={mode} fleet_slot=2/2" if mode else ""
    return verify.parse_record(f"time={stamp} board=default endpoint=gpu-a{fleet} reason={reason} rc=0")


LOGGED = [
    _pass("2026-12-01T04:00:00Z", "dispatched", "sliced"),
    _pass("2026-12-01T04:00:05Z", "fleet_slice", "static"),
    _pass("2026-12-01T04:00:10Z", "no_ready"),  # an idle pass probes nothing and logs no mode
    _pass("2026-12-01T04:00:15Z", "locked"),
]


def _pacer(state_dir: Path | None = None) -> paths.Pacer:
    env = {"BOARD": "default", "PACER_ENDPOINT": "gpu-a"}
    env |= {"PACER_STATE_DIR": str(state_dir)} if state_dir else {}
    return paths.Pacer("default", "cron", env, "/etc/hermes-pacer/default.env")


def _endpoint_status(state_dir: Path, when: float, static: object) -> Path:
    document = {
        "version": status.VERSION,
        "endpoint": "gpu-a",
        "time": when,
        "up": True,
        "ramp": False,
        "detail": "",
        "kind": "vllm",
        **dict.fromkeys(("cap", "used", "foreign", "workers", "running", "waiting"), 0),
        "fleet_static": static,
    }
    path = host.endpoint_status_file(state_dir, "gpu-a")
    path.write_text(json.dumps(document))
    return path


def test_the_mode_is_the_newest_logged_when_the_last_pass_was_idle():
    assert verify.fleet_mode([_pacer()], "gpu-a", [LOGGED]) == "static"
    assert verify.fleet_mode([_pacer()], "gpu-a", [LOGGED[2:]]) == ""
    assert verify.fleet_mode([_pacer()], "gpu-a", [[]]) == ""


def test_the_mode_of_the_endpoints_status_file_wins_when_newer(tmp_path):
    logged = verify._stamp(LOGGED[1])
    _endpoint_status(tmp_path, logged + 60, False)
    assert verify.fleet_mode([_pacer(tmp_path)], "gpu-a", [LOGGED]) == "sliced"
    _endpoint_status(tmp_path, logged - 60, False)  # the log has a newer pass
    assert verify.fleet_mode([_pacer(tmp_path)], "gpu-a", [LOGGED]) == "static"
    _endpoint_status(tmp_path, logged + 60, True)
    assert verify.fleet_mode([_pacer(tmp_path)], "gpu-a", [[]]) == "static"
    _endpoint_status(tmp_path, logged + 60, None)  # the endpoint was down: no mode known then
    assert verify.fleet_mode([_pacer(tmp_path)], "gpu-a", [LOGGED]) == "static"


@pytest.mark.parametrize("hostile", ["not json", "a mode of another type", "too large", "a fifo"])
def test_a_hostile_status_file_or_log_gives_no_mode(tmp_path, hostile):
    """Both are the Hermes user's: a file status refuses says nothing, a logged mode is one of two."""
    path = host.endpoint_status_file(tmp_path, "gpu-a")
    if hostile == "a fifo":
        os.mkfifo(path)  # never opened for a read that waits
    elif hostile == "a mode of another type":
        _endpoint_status(tmp_path, 2e9, "\x1b[31mstatic")
    else:
        path.write_bytes(b"x" * (status.STATUS_LIMIT + 1) if hostile == "too large" else b"{not json")
    odd = [{**LOGGED[0], "fleet_mode": "\x1b[31msliced"}]
    assert verify.fleet_mode([_pacer(tmp_path)], "gpu-a", [odd]) == ""
    assert verify.fleet_mode([_pacer(tmp_path)], "gpu-a", [LOGGED]) == "static"


# --- one host: a real `hermes-pacer verify` ------------------------------------------------------

FLEET = {
    "PACER_ENDPOINT": "gpu-a",
    "PACER_ENDPOINT_MAX_PARALLEL": "2",
    "PACER_ENDPOINT_BOARDS": "default",
    "PACER_FLEET": "gpu_a_fleet",
    "PACER_FLEET_HOSTS": "2",
    "PACER_FLEET_INDEX": "1",
    "PACER_FLEET_SHARE": "1",
    "PACER_FLEET_MIN_SHARE": "1",
    "PACER_FLEET_RESERVE": "1",
    "PACER_FLEET_SLICE_SECONDS": "20",
    "PACER_FLEET_STARTUP_SECONDS": "8",
}


@pytest.fixture
def fleet_host(paced_host, tmp_path):
    """The test home with a managed cron pacer in a private /etc whose settings put its endpoint
    (the fake LLM) in a fleet, and one logged pass."""
    etc = with_a_logged_cron_pacer(paced_host, tmp_path / "etc").etc
    paced_host.settings = host.settings_file("default", host.settings_dir(etc))
    paced_host.url = f"http://127.0.0.1:{paced_host.endpoint.server_address[1]}/v1"
    return paced_host


def _in_fleet(fleet_host, **more: str) -> None:
    keys = FLEET | {"PACER_ENDPOINT_URL": fleet_host.url} | more
    path = fleet_host.settings
    path.write_text(path.read_text() + "".join(f"{key}={value}\n" for key, value in keys.items()))
    settings.read_file(path)  # the keys are the contract's


def _verify(fleet_host) -> tuple[int, dict, str]:
    args = [
        str(VERIFY),
        "--etc",
        str(fleet_host.etc),
        "--spool",
        str(fleet_host.etc / "spool"),
        "--home",
        str(fleet_host.root),
    ]
    text = subprocess.run(args, capture_output=True, text=True, check=False)
    data = subprocess.run([*args, "--json"], capture_output=True, text=True, check=False)
    assert text.returncode == data.returncode, text.stdout + text.stderr
    return data.returncode, json.loads(data.stdout), text.stdout


@pytest.mark.slow
def test_a_fleet_host_reports_its_place_workers_and_clock(fleet_host):
    _in_fleet(fleet_host)
    fleet_host.create_cards(1)
    log = fleet_host.home / "log" / "kanban-dispatch-default.log"
    with open(log, "a") as out:
        env = fleet_host.pacer_env(
            BOARD="default", MAX_PARALLEL="2", PACER_ENDPOINT_URL=fleet_host.url, **FLEET
        )
        subprocess.run([str(CAPPED)], env=env, stdout=out, check=True)  # a worker lives for 9 s and more
        subprocess.run([str(CAPPED)], env=env, stdout=out, check=True)  # nothing ready: an idle pass
    *_, spawning, idle = map(verify.parse_record, log.read_text().splitlines())
    assert spawning["fleet_mode"] in ("sliced", "static") and not idle["fleet_mode"], (spawning, idle)
    code, report, text = _verify(fleet_host)

    (entry,) = report["fleets"]
    board = next(item for item in report["boards"] if item["board"] == "default")
    assert {key: entry[key] for key in ("fleet", "endpoint", "url", "cap", "index", "hosts")} == {
        "fleet": "gpu_a_fleet",
        "endpoint": "gpu-a",
        "url": fleet_host.url,
        "cap": 2,
        "index": 1,
        "hosts": 2,
    }
    assert (entry["share"], entry["min_share"], entry["reserve"]) == (1, 1, 1)
    assert (entry["slice_seconds"], entry["startup_seconds"], entry["boards"]) == (20, 8, ["default"])
    assert entry["workers"] == board["queue"]["workers"] == 1  # the pass's own count
    assert "fleet gpu_a_fleet: endpoint gpu-a (cap 2, " in text and "host 2/2, share 1, floor 1" in text
    assert "live workers 1 (boards default)" in text
    assert entry["mode"] == spawning["fleet_mode"] and f"mode {entry['mode']}; live workers" in text

    (offset,) = report["clock"]["endpoints"]
    assert offset["endpoint"] == "gpu-a" and offset["error"] == ""
    assert abs(offset["offset_seconds"]) < clock.OFFSET_WARNING  # the fake LLM's Date: this host's clock
    assert "endpoint gpu-a Date offset " in text
    assert not [w for w in report["warnings"] if "gpu-a's clock" in w]

    (check,) = [c for c in report["checks"] if c["name"] == "time sync of fleet gpu_a_fleet"]
    if clock.services():
        assert check["ok"], check
    else:  # this machine runs none: a fleet host without one fails, naming it
        assert code == 1 and not check["ok"] and not report["ok"]
        assert "no time sync service runs" in check["detail"]
        assert "FAIL time sync of fleet gpu_a_fleet: no time sync service runs" in text


@pytest.mark.slow
def test_an_endpoint_clock_far_off_is_a_warning_and_one_down_a_note(fleet_host, skewed):
    _in_fleet(fleet_host, PACER_ENDPOINT_URL=skewed)
    _, report, text = _verify(fleet_host)
    warnings = [w for w in report["warnings"] if "gpu-a's clock" in w]
    assert len(warnings) == 1, report["warnings"]
    (warning,) = warnings
    assert "endpoint gpu-a's clock is " in warning and "s ahead of this host's" in warning
    assert "assume the hosts' clocks agree" in warning

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
        fleet_host.settings.write_text(fleet_host.settings.read_text().replace(skewed, down))
        _, report, text = _verify(fleet_host)
    assert [c["name"] for c in report["checks"] if not c["ok"]] in ([], ["time sync of fleet gpu_a_fleet"])
    assert any("endpoint gpu-a" in note and "connection refused" in note for note in report["notes"])
    assert "note endpoint gpu-a" in text


@pytest.mark.slow
def test_a_host_without_a_fleet_reports_nothing_new(fleet_host):
    code, report, text = _verify(fleet_host)
    assert code == 0, text
    assert report["fleets"] == [] and "clock" not in report and report["notes"] == []
    assert not [line for line in text.splitlines() if line.startswith(("fleet ", "clock: ", "note "))]
    assert "time sync" not in text
    assert {"url": fleet_host.url, "where": f"model.base_url of {fleet_host.root / 'config.yaml'}"} in (
        report["endpoint_urls"]
    )


# --- `./tasks.sh verify` over an inventory -------------------------------------------------------


def test_tasks_verify_sums_the_fleet_and_names_the_missing_and_the_strays(tmp_path):
    def member(name: str, index: int, workers: int) -> dict:
        scripts = stub_verify_scripts(tmp_path / name, _document(_entry(index, workers, hosts=3)))
        return {**LOCAL_HOST, "hermes_pacer_scripts_dir": str(scripts)}

    stray = stub_verify_scripts(tmp_path / "d", _document(urls=(URL,)))
    inventory = write_inventory(
        tmp_path / "hosts.yml",
        {"d": {**LOCAL_HOST, "hermes_pacer_scripts_dir": str(stray)}},
        children={"gpu_a_fleet": {"a": member("a", 0, 2), "b": member("b", 1, 1), "c": UNREACHABLE_HOST}},
    )

    def run(*args: str) -> subprocess.CompletedProcess:
        return invoke("verify", "--inventory", inventory, "--limit", "a,b,d", *args)

    data = run("--json")
    assert data.returncode == 1, data.stderr  # every host is ok; the fleet is over its cap
    printed = json.loads(data.stdout)
    assert sorted(printed["hosts"]) == ["a", "b", "d"] and all(r["ok"] for r in printed["hosts"].values())
    (fleet,) = printed["fleets"]
    assert (fleet["workers"], fleet["cap"], fleet["ok"]) == (3, 2, False)
    assert [m["host"] for m in fleet["missing"]] == ["c"] and "not in this run" in fleet["missing"][0]["why"]
    assert [s["host"] for s in fleet["strays"]] == ["d"]

    text = run()
    assert text.returncode == 1
    assert "== fleet gpu_a_fleet, endpoint gpu-a (http://gpu-a.example.net:8000): NOT SAFE" in text.stdout
    assert "PROBLEM: 3 live workers on the endpoint together, over its cap of 2" in text.stdout
    assert "missing c: not in this run" in text.stdout
    assert "WARNING d calls the endpoint (model.base_url of /home/x/.hermes/config.yaml)" in text.stdout
