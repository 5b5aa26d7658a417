"""`verify` against real Hermes processes: a gateway, a daemon, hand-made cron lines, no pacer."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
from hermes_host import CAPPED, REPO
from hermes_pacer import host

pytestmark = pytest.mark.slow
VERIFY = REPO / "scripts" / "hermes-pacer-verify.sh"


def managed_cron_pacer(etc, env: dict[str, str], log, user: str) -> None:
    """What the role leaves for a cron pacer: the board's settings file and its line in the
    managed cron file, as templates/pacer.env.j2 and cron.j2 write them (tests/test_host_contract)."""
    board = env["BOARD"]
    script = REPO / "scripts" / host.SUBMINUTE_SCRIPT
    path = host.settings_file(board, host.settings_dir(etc))
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = ("HOME", "HERMES_BIN", "PACER_LOCK_DIR", "BOARD", "MAX_PARALLEL")
    values = {key: env[key] for key in keys} | {
        "RUNS_PER_MINUTE": "12",
        "HERMES_TIMEOUT": "60",
        "PACER_HOUSEKEEPING_SECONDS": "60",
        "PACER_SCHEDULER": "cron",
        "PACER_USER": user,
        "PACER_SCRIPT": str(script),
        "PACER_LOG_FILE": str(log),
    }
    path.write_text("".join(f"{key}={value}\n" for key, value in values.items()))
    cron = host.cron_file(etc)
    cron.parent.mkdir(parents=True, exist_ok=True)
    with open(cron, "a") as out:
        out.write(f"* * * * * {user} {script} --settings {path} >> {log} 2>&1\n")


def with_a_logged_cron_pacer(paced_host, etc):
    """The test home with a managed cron pacer of its board `default` (cap 2) in the private /etc
    `etc`, and one logged pass; `paced_host.etc` is set."""
    log = paced_host.home / "log" / "kanban-dispatch-default.log"
    log.parent.mkdir()
    env = paced_host.pacer_env(BOARD="default", MAX_PARALLEL="2")
    managed_cron_pacer(etc, env, log, "root")
    with open(log, "w") as out:
        subprocess.run([str(CAPPED)], env=env, stdout=out, check=True)
    paced_host.etc = etc
    return paced_host


@pytest.fixture
def paced(paced_host, tmp_path):
    """The test home with a managed cron pacer in a private /etc, and one logged pass."""
    with_a_logged_cron_pacer(paced_host, tmp_path / "etc")
    paced_host.processes = []
    yield paced_host
    for process in paced_host.processes:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _verify(host) -> tuple[int, dict, str]:
    args = [str(VERIFY), "--etc", str(host.etc), "--spool", str(host.etc / "spool"), "--home", str(host.root)]
    text = subprocess.run(args, capture_output=True, text=True, check=False)
    data = subprocess.run([*args, "--json"], capture_output=True, text=True, check=False)
    assert text.returncode == data.returncode
    return data.returncode, json.loads(data.stdout), text.stdout


def _board(report: dict, slug: str = "default") -> dict:
    return next(item for item in report["boards"] if item["board"] == slug)


def _start(host, *args: str, config_dispatch: bool | None = None) -> None:
    process = subprocess.Popen(
        [str(host.hermes_bin), *args],
        env=host.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    host.processes.append(process)
    time.sleep(3)  # long enough to be a process with its own command line
    assert process.poll() is None, f"hermes {' '.join(args)} exited with {process.returncode}"


def test_a_paced_host_is_safe_and_says_why(paced):
    code, report, text = _verify(paced)
    assert code == 0, text
    board = _board(report)
    assert board["verdict"] == "ok" and [p["kind"] for p in board["paths"]] == ["pacer"]
    assert "verdict: SAFE" in text and "path: pacer: cron" in text and "last pass" in text


@pytest.mark.alone
def test_a_gateway_with_its_dispatcher_on_is_a_second_path(paced):
    (paced.root / "config.yaml").write_text(
        (paced.root / "config.yaml")
        .read_text()
        .replace("dispatch_in_gateway: false", "dispatch_in_gateway: true")
    )
    _start(paced, "gateway", "run")
    code, report, text = _verify(paced)
    assert code == 1
    board = _board(report)
    assert board["verdict"] == "several" and sorted(p["kind"] for p in board["paths"]) == ["gateway", "pacer"]
    assert "dispatch_in_gateway: true" in text and "NOT SAFE" in text


def test_a_gateway_with_its_dispatcher_off_is_fine(paced):
    _start(paced, "gateway", "run")
    code, report, text = _verify(paced)
    assert code == 0, text
    assert [p["kind"] for p in _board(report)["paths"]] == ["pacer"]


def test_the_environment_override_only_turns_a_gateway_dispatcher_off(paced):
    # Hermes' rule: HERMES_KANBAN_DISPATCH_IN_GATEWAY=0/false/no/off turns it off; any other value
    # leaves the config in charge (measured: "1" with the config false logs "disabled via config").
    paced.env["HERMES_KANBAN_DISPATCH_IN_GATEWAY"] = "1"
    _start(paced, "gateway", "run")
    code, report, text = _verify(paced)
    assert code == 0, text
    assert [p["kind"] for p in _board(report)["paths"]] == ["pacer"]


@pytest.mark.alone
def test_the_environment_override_turns_a_configured_gateway_dispatcher_off(paced):
    config = paced.root / "config.yaml"
    config.write_text(config.read_text().replace("dispatch_in_gateway: false", "dispatch_in_gateway: true"))
    paced.env["HERMES_KANBAN_DISPATCH_IN_GATEWAY"] = "Off"
    _start(paced, "gateway", "run")
    _, report, text = _verify(paced)
    assert [p["kind"] for p in _board(report)["paths"]] == ["pacer"], text
    assert f"FAIL config {config}" in text  # a gateway started without the override would dispatch


@pytest.mark.alone
def test_a_kanban_daemon_is_a_second_path(paced):
    _start(paced, "kanban", "daemon", "--force")
    code, report, text = _verify(paced)
    assert code == 1
    assert sorted(p["kind"] for p in _board(report)["paths"]) == ["daemon", "pacer"]
    assert "kanban daemon" in text


def test_a_hand_made_crontab_line_is_a_second_path(paced):
    spool = paced.etc / "spool"
    spool.mkdir()
    # The crontab of a user no host has, its HOME the test's: on a provisioned host the user
    # `hermes` exists, and its crontab's lines would be its home's.
    (spool / "hermes-pacer-nobody").write_text(
        f"HOME={paced.home}\n"
        "* * * * * MAX_PARALLEL=2 BOARD=default /opt/hermes/scripts/hermes-kanban-dispatch-subminute.sh\n"
        "# * * * * * hermes kanban dispatch   (commented out: not a path)\n"
    )
    code, report, text = _verify(paced)
    assert code == 1
    assert sorted(p["kind"] for p in _board(report)["paths"]) == ["cron", "pacer"]
    assert "crontab of hermes-pacer-nobody" in text


def test_no_pacer_while_cards_are_ready_fails(paced):
    paced.create_cards(2)
    host.cron_file(paced.etc).write_text("")
    host.settings_file("default", host.settings_dir(paced.etc)).unlink()
    code, report, text = _verify(paced)
    assert code == 1
    board = _board(report)
    assert board["verdict"] == "none" and board["queue"]["ready"] == 2
    assert "nothing dispatches board default" in text


def test_a_config_with_the_dispatcher_on_fails_even_without_a_gateway(paced):
    profile = paced.root / "profiles" / "worker" / "config.yaml"
    profile.write_text(profile.read_text().replace("dispatch_in_gateway: false", "dispatch_in_gateway: true"))
    code, _, text = _verify(paced)
    assert code == 1
    assert f"FAIL config {profile}" in text


def test_a_hermes_cron_job_that_dispatches_is_a_second_path(paced):
    scripts = paced.root / "scripts"
    scripts.mkdir(exist_ok=True)
    (scripts / "dispatch.sh").write_text("#!/bin/sh\nhermes kanban dispatch --max 4\n")
    paced.run("cron", "create", "every 1m", "--script", "dispatch.sh", "--no-agent", "--name", "dispatcher")
    code, report, text = _verify(paced)
    assert code == 1
    assert sorted(p["kind"] for p in _board(report)["paths"]) == ["hermes-cron", "pacer"]
    assert "job dispatcher runs a dispatch" in text


@pytest.mark.parametrize("declared", [True, False], ids=["declared", "local"])
def test_a_profile_calling_another_endpoint_is_a_warning(paced, declared):
    """A profile whose model.base_url is not the board's endpoint: its workers are outside the
    budget. The root home's url matches (trailing / and /v1 aside); credentials are never shown."""
    url = f"http://127.0.0.1:{paced.endpoint.server_address[1]}/v1"
    path = host.settings_file("default", host.settings_dir(paced.etc))
    endpoint = {
        "PACER_ENDPOINT": "gpu0",
        "PACER_ENDPOINT_MAX_PARALLEL": "4",
        "PACER_ENDPOINT_BOARDS": "default",
    }
    if declared:
        endpoint["PACER_ENDPOINT_URL"] = url.removesuffix("/v1") + "/"
    else:
        endpoint["PACER_ENDPOINT"] = "local"
    path.write_text(path.read_text() + "".join(f"{key}={value}\n" for key, value in endpoint.items()))
    profile = paced.root / "profiles" / "worker" / "config.yaml"
    profile.write_text(profile.read_text().replace(url, "http://pacer:s3cret@10.9.9.9:8000/v1"))
    code, report, text = _verify(paced)
    assert code == 0, text  # a warning, not a failure
    warnings = [w for w in report["warnings"] if "model.base_url" in w]
    assert len(warnings) == 1, report["warnings"]
    assert f"profile worker ({profile}) calls http://10.9.9.9:8000/v1" in warnings[0]
    assert f"not the endpoint of board default (endpoint {endpoint['PACER_ENDPOINT']}" in warnings[0]
    assert "s3cret" not in text + json.dumps(report)
    shown = endpoint.get("PACER_ENDPOINT_URL") or f"{url} from model.base_url of {paced.root / 'config.yaml'}"
    assert f"endpoint {endpoint['PACER_ENDPOINT']} (cap 4, {shown})" in text


def _with_metrics(paced, tmp_path):
    """The board's settings name a metrics directory, as the role writes them when metrics are on;
    the board's textfile there (not written yet)."""
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    path = host.settings_file("default", host.settings_dir(paced.etc))
    path.write_text(path.read_text() + f"PACER_METRICS_DIR={metrics}\n")
    return host.metrics_file(metrics, "default")


def _metrics_warnings(report: dict) -> list[str]:
    return [warning for warning in report["warnings"] if "metrics textfile" in warning]


def test_a_fresh_metrics_textfile_of_the_passes_user_is_fine(paced, tmp_path):
    _with_metrics(paced, tmp_path).write_text("hermes_pacer_cap 2\n")
    code, report, text = _verify(paced)
    assert code == 0, text
    assert _metrics_warnings(report) == []


@pytest.mark.parametrize(
    ("how", "said"),
    [
        ("missing", "is missing: node_exporter has no metrics of it"),
        ("stale", "s ago (expected within 75s): node_exporter reports stale metrics"),
        ("link", "is a symbolic link: node_exporter must not be led elsewhere"),
        ("owner", "belongs to nobody, not to the passes' root"),
    ],
)
def test_a_missing_stale_foreign_or_linked_metrics_textfile_is_a_warning(paced, tmp_path, how, said):
    """Metrics are not the cap: verify warns and the host stays SAFE. A link there is the Hermes
    user's doing, and root does not follow it."""
    textfile = _with_metrics(paced, tmp_path)
    if how == "link":
        elsewhere = tmp_path / "elsewhere.prom"
        elsewhere.write_text("hermes_pacer_cap 2\n")
        textfile.symlink_to(elsewhere)
    elif how != "missing":
        textfile.write_text("hermes_pacer_cap 2\n")
    if how == "stale":
        old = time.time() - 1000
        os.utime(textfile, (old, old))
    if how == "owner":
        os.chown(textfile, 65534, -1)
    code, report, text = _verify(paced)
    assert code == 0, text
    (warning,) = _metrics_warnings(report)
    assert warning.startswith("board default: ") and said in warning, warning
    # The text is a second run of verify: the age it says may be a second more.
    assert f"WARNING board default: metrics textfile {textfile}" in text and said in text
