"""systemd scenario: what an operator's Prometheus sees of the passes (docs/metrics.md).

prepare.yml installs Debian's Prometheus in the container: it scrapes the node_exporter the role
installed every 2 s and evaluates the project's alert rules with their `for:` shortened. These tests
run after test_default.py's (pytest takes the files in name order), so the cards those tests had the
timers dispatch are the work Prometheus saw; every query here asks about that run.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import sys
import time
from pathlib import Path

import pytest
from paced_host import HERMES_USER, board_settings, create_cards, start_llm, statuses, wait_done

REPO = Path(os.environ["HERMES_PACER_REPO"])
sys.path.insert(0, str(REPO / "pacer"))
sys.path.insert(0, str(REPO / "tests"))
from dashboard_queries import queries  # noqa: E402
from hermes_pacer import host as contract  # noqa: E402

PROMETHEUS = "http://127.0.0.1:9090"
NODE_EXPORTER = "http://127.0.0.1:9100/metrics"
TEXTFILE_DIR = contract.DEBIAN_TEXTFILE_DIR
BOARDS = {"default": "main", "ops": "ops-gpu", "flows": "flows-gpu"}  # board: its endpoint (converge.yml)
CAPS = {"default": 2, "ops": 1}
STEP = 2  # seconds: the scrape and evaluation interval of prepare.yml
# Where the run's series go for the README's picture (bench/plot_metrics.py draws it).
SAMPLE_VARIABLE = "HERMES_PACER_METRICS_SAMPLE"
SAMPLE_NAME = "metrics-run.json"
SAMPLE_QUERIES = {
    "live_workers": "hermes_pacer_live_workers",
    "cap": "hermes_pacer_cap",
    "cards": "hermes_pacer_cards",
    "endpoint_used": "hermes_pacer_endpoint_used_slots",
    "endpoint_cap": "hermes_pacer_endpoint_cap",
}


def prometheus(host, path: str, **params) -> dict:
    """One call of Prometheus' HTTP API from inside the container: its JSON answer, errors too."""
    form = " ".join(f"--data-urlencode {shlex.quote(f'{key}={value}')}" for key, value in params.items())
    out = host.run(f"curl -sS {form} {PROMETHEUS}{path}")
    assert out.stdout.strip(), f"no answer from Prometheus at {path}: {out.stderr}"
    return json.loads(out.stdout)


def instant(host, query: str) -> list[dict]:
    answer = prometheus(host, "/api/v1/query", query=query)
    assert answer["status"] == "success", f"{query}: {answer}"
    return answer["data"]["result"]


def scalar(host, query: str) -> float | None:
    result = instant(host, query)
    assert len(result) <= 1, f"{query}: more than one series: {result}"
    return float(result[0]["value"][1]) if result else None


def over_run(host, window: tuple[float, float], query: str, step: float = STEP) -> dict:
    start, end = window
    return prometheus(host, "/api/v1/query_range", query=query, start=start, end=end, step=step)


def now(host) -> float:
    return float(host.check_output("date +%s.%N"))


@pytest.fixture(scope="module")
def window(host) -> tuple[float, float]:
    """From Prometheus' first sample of a pass to now: the whole run of the scenario's tests."""
    end = now(host)
    answer = over_run(host, (end - 7200, end), "count(hermes_pacer_passes_total)", step=10)
    assert answer["status"] == "success" and answer["data"]["result"], (
        f"Prometheus never saw a pass: {answer}\n{host.run(f'curl -sS {NODE_EXPORTER} | tail -n 40').stdout}"
    )
    return float(answer["data"]["result"][0]["values"][0][0]) - 10, end


def test_the_textfiles_are_root_owned_links_node_exporter_serves(host):
    for board, endpoint in BOARDS.items():
        metrics_dir = board_settings(host, board)["PACER_METRICS_DIR"]
        for target in (
            contract.metrics_file(metrics_dir, board),
            contract.endpoint_metrics_file(metrics_dir, endpoint),
        ):
            link = f"{TEXTFILE_DIR}/{target.name}"
            # stat without -L: the link's own owner (testinfra's File.user follows the link).
            assert host.check_output(f"stat -c '%F %U' {link}") == "symbolic link root", link
            assert host.check_output(f"readlink {link}") == str(target)
            assert host.file(str(target)).user == HERMES_USER, f"{target} is not the Hermes user's"
    # The Hermes user writes its own files, never the directory node_exporter reads.
    assert host.run(f"runuser -u {HERMES_USER} -- test -w {TEXTFILE_DIR}").rc != 0
    served = host.check_output(f"curl -sS {NODE_EXPORTER}")
    assert "node_textfile_scrape_error 0" in served.splitlines(), [
        line for line in served.splitlines() if line.startswith("node_textfile")
    ]
    for board in BOARDS:
        assert re.search(rf'^hermes_pacer_info\{{[^}}]*board="{board}"', served, re.M), board
    assert scalar(host, "max(node_textfile_scrape_error)") == 0


def test_live_workers_stayed_under_the_cap_and_every_card_done_was_spawned(host, window):
    seconds = round(window[1] - window[0])
    for board, cap in CAPS.items():
        peak = scalar(host, f'max(max_over_time(hermes_pacer_live_workers{{board="{board}"}}[{seconds}s]))')
        assert peak is not None and 1 <= peak <= cap, f"board {board}: peak {peak} live workers, cap {cap}"
        assert scalar(host, f'hermes_pacer_cap{{board="{board}"}}') == cap
    # The counters are written after every pass: a few passes after the last card, they have them
    # all. A worker handed back after an overrun (reclaimed) was spawned, and its card again later.
    done = spawned = reclaimed = None
    for _ in range(20):
        done = sum(status == "done" for status in statuses(host, "default").values())
        spawned = scalar(host, 'hermes_pacer_spawned_total{board="default"}')
        reclaimed = scalar(host, 'hermes_pacer_reclaimed_total{board="default"}')
        if spawned is not None and reclaimed is not None and spawned - reclaimed == done:
            break
        time.sleep(STEP)
    assert done and spawned is not None and reclaimed is not None and spawned - reclaimed == done, (
        f"board default: {spawned} workers spawned, {reclaimed} reclaimed, {done} cards done"
    )


def test_every_dashboard_query_parses_and_those_of_the_runs_series_have_data(host, window):
    present = set(prometheus(host, "/api/v1/label/__name__/values")["data"])
    empty, broken = [], []
    panels = queries()
    assert panels, "the dashboard has no queries"
    for title, expr in panels:
        answer = over_run(host, window, expr, step=10)
        if answer["status"] != "success":
            broken.append((title, expr, answer.get("error")))
            continue
        # A query whose every metric the scenario has must show something of the run.
        names = set(re.findall(r"\b(?:hermes_pacer|node)_[a-z_]+\b", expr))
        if names and names <= present and not answer["data"]["result"]:
            empty.append((title, expr))
    assert not broken, broken
    assert not empty, empty


def test_the_runs_series_are_saved_for_the_readme_picture(host, window):
    """The run, as bench/plot_metrics.py draws it (docs/img/metrics.png): seconds since the first
    pass Prometheus saw, a value every STEP seconds."""
    start, end = window
    sample = {"start": start, "end": end, "step": STEP, "series": {}}
    for key, query in SAMPLE_QUERIES.items():
        answer = over_run(host, window, query)
        assert answer["status"] == "success", answer
        sample["series"][key] = [
            {
                "labels": {k: v for k, v in series["metric"].items() if k not in ("instance", "job", "home")},
                "values": [[round(float(t) - start, 1), float(v)] for t, v in series["values"]],
            }
            for series in answer["data"]["result"]
        ]
        assert sample["series"][key], f"no series of {query} in the run"
    path = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / SAMPLE_NAME
    path.write_text(json.dumps(sample, separators=(",", ":")) + "\n")
    if os.environ.get(SAMPLE_VARIABLE):
        shutil.copyfile(path, os.environ[SAMPLE_VARIABLE])


def active(host, alert: str, **labels: str) -> list[dict]:
    """The alerts of that name with those labels, pending or firing."""
    alerts = prometheus(host, "/api/v1/alerts")["data"]["alerts"]
    return [
        found
        for found in alerts
        if found["labels"].get("alertname") == alert
        and all(found["labels"].get(key) == value for key, value in labels.items())
    ]


def firing(host, alert: str, **labels: str) -> bool:
    return any(found["state"] == "firing" for found in active(host, alert, **labels))


def wait_for(what: str, check, timeout: float = 240, pause: float = STEP):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(pause)
    raise AssertionError(f"{what}: not within {timeout:.0f}s")


def test_failing_closed_fires_and_resolves_after_repair(host):
    """The ops board's HERMES_BIN set to /bin/false while it has a ready card: every pass fails
    closed (the dispatch fails), HermesPacerFailingClosed fires; the file restored byte for byte,
    the card is done and the alert resolves."""
    board, unit = "ops", "hermes-pacer-ops.service"
    path = str(contract.settings_file(board))
    saved = "/root/ops.env.saved"
    before = host.check_output(f"stat -c '%U %G %a %i' {path} && sha256sum {path}")
    assert "HERMES_BIN" in board_settings(host, board)
    start_llm(host, 18081)
    # Written into the same file (same inode, owner and mode), as an operator's slip would be.
    assert host.run(f"cp -p {path} {saved}").rc == 0
    broken = host.run(
        f"sed 's|^HERMES_BIN=.*|HERMES_BIN=/bin/false|' {saved} > {path}.new && cat {path}.new > {path}"
    )
    host.run(f"rm -f {path}.new")
    card: list[str] = []
    try:
        assert broken.rc == 0, broken.stderr
        # The loop that is running read the file when it started: the next one reads it.
        assert host.run(f"systemctl restart --no-block {unit}").rc == 0
        card = create_cards(host, board, 1, "ops-worker", key=f"failing-{int(time.time())}")
        wait_for(
            "HermesPacerFailingClosed firing for board ops",
            lambda: firing(host, "HermesPacerFailingClosed", board=board),
        )
        assert scalar(host, f'hermes_pacer_last_pass_failed{{board="{board}"}}') == 1
        assert statuses(host, board)[card[0]] == "ready"
    finally:
        host.run(f"cat {saved} > {path} && rm -f {saved}")
        host.run(f"systemctl restart --no-block {unit}")
    assert host.check_output(f"stat -c '%U %G %a %i' {path} && sha256sum {path}") == before
    wait_done(host, {board: card})
    wait_for(
        "HermesPacerFailingClosed resolved",
        lambda: not active(host, "HermesPacerFailingClosed", board=board),
    )
    assert scalar(host, f'hermes_pacer_last_pass_failed{{board="{board}"}}') == 0


def test_endpoint_down_fires_for_the_endpoint_nothing_listens_on(host):
    """The flows board's endpoint has never answered (converge.yml): its probe fails every pass."""
    wait_for(
        "HermesPacerEndpointDown firing for endpoint flows-gpu",
        lambda: firing(host, "HermesPacerEndpointDown", endpoint="flows-gpu"),
    )
    assert not active(host, "HermesPacerEndpointDown", endpoint="main")
