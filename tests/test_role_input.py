"""Bad role input stops `ansible-playbook site.yml` before any change, naming the variable."""

from __future__ import annotations

import os
import pwd
import subprocess
from pathlib import Path

import pytest
from ansible_run import ansible_playbook

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
# A Hermes user no host has yet (the role would create it with this home): the checks that read
# the home then see this one, on a provisioned host too.
NEW_USER = {"hermes_agent_user": "hermes-pacer-new", "hermes_agent_user_home": "/srv/hermes"}
# A user every host has: the one running the tests, whose home is not /srv/hermes.
ME = pwd.getpwuid(os.getuid())

CASES = [
    ({"hermes_pacer_boards": [{"name": "default", "max_parallel": 0}]}, "hermes_pacer_boards[0]"),
    ({"hermes_pacer_boards": [{"name": "Bad Slug"}]}, "hermes_pacer_boards[0]"),
    ({"hermes_pacer_boards": [{"name": "default", "runs_per_minute": -1}]}, "hermes_pacer_boards[0]"),
    ({"hermes_pacer_boards": [{"name": "a"}, {"name": "a"}]}, "distinct names"),
    (
        {"hermes_pacer_boards": [{"name": "default", "max_paralel": 2}]},
        "hermes_pacer_boards[0] has an unknown key max_paralel: expected name, max_parallel, "
        "runs_per_minute, endpoint",
    ),
    (
        {"hermes_pacer_endpoints": [{"name": "gpu0", "url": "http://gpu0:8000/v1", "max_paralel": 4}]},
        "hermes_pacer_endpoints[0] has an unknown key max_paralel: expected name, url, max_parallel, kind",
    ),
    ({"hermes_pacer_boards": []}, "hermes_pacer_boards is invalid"),
    (
        {"hermes_pacer_scheduler": "anacron"},
        "hermes_pacer_scheduler=anacron is invalid: expected auto, cron or systemd",
    ),
    ({"hermes_pacer_hermes_timeout": 0}, "hermes_pacer_hermes_timeout must be 1-3600"),
    ({"hermes_agent_version": "latest"}, "hermes_agent_version must be X.Y.Z"),
    (
        {
            "hermes_pacer_flows": [
                {"name": "f", "board": "ops", "steps": [{"key": "a", "title": "A", "assignee": "w"}]}
            ]
        },
        "hermes_pacer_flows[0] (f) is invalid: board=ops is not a paced board",
    ),
    (
        {
            "hermes_pacer_flows": [
                {
                    "name": "f",
                    "steps": [
                        {"key": "a", "title": "A", "assignee": "w", "parents": ["b"]},
                        {"key": "b", "title": "B", "assignee": "w", "parents": ["a"]},
                    ],
                }
            ]
        },
        "hermes_pacer_flows[0] (flow f) step a: parents form a cycle (a -> b -> a",
    ),
    (
        {"hermes_pacer_flows": [{"name": "f", "steps": [{"key": "a", "title": "", "assignee": "w"}]}]},
        "hermes_pacer_flows[0] (flow f) steps[0] (step a): title='' is invalid: expected a non-empty string",
    ),
    ({"hermes_agent_profiles": ["Not A Profile"]}, "hermes_agent_profiles must be"),
    *[
        ({"hermes_pacer_endpoints": [{"name": "gpu0", "max_parallel": 4} | endpoint]}, message)
        for endpoint, message in [
            ({"url": "10.0.0.5:8000/v1"}, "hermes_pacer_endpoints[0] is invalid"),
            ({"url": "ftp://10.0.0.5/v1"}, "url http://host[:port][/path] or https://"),
            ({"url": "http://10.0.0.5:8000/v%31"}, "without whitespace, quotes, $, backslash or %"),
            ({"url": "http://10.0.0.5", "max_parallel": 0}, "max_parallel an integer from 1 to 1000"),
            ({"url": "http://10.0.0.5", "max_parallel": 1001}, "hermes_pacer_endpoints[0] is invalid"),
            ({"url": "http://10.0.0.5", "max_parallel": "four"}, "max_parallel"),
            ({"url": "http://10.0.0.5", "kind": "tgi"}, "auto, vllm, llamacpp, ollama, openai"),
            ({"url": "http://10.0.0.5", "name": "GPU 0"}, "name must be a slug"),
        ]
    ],
    ({"hermes_pacer_endpoints": [{"name": "gpu0", "max_parallel": 4}]}, "only `local` may leave it out"),
    (
        {"hermes_pacer_endpoints": [{"name": "a", "url": "http://x", "max_parallel": 1}] * 2},
        "hermes_pacer_endpoints must have distinct names (got a, a)",
    ),
    (
        {"hermes_pacer_boards": [{"name": "default", "endpoint": "gpu9"}]},
        "hermes_pacer_boards[0] (default) is invalid: endpoint=gpu9 is not an endpoint: expected one of",
    ),
    ({"hermes_pacer_endpoint_timeout": 31}, "hermes_pacer_endpoint_timeout an integer from 1 to 30 (got 31)"),
    ({"hermes_pacer_endpoint_ramp_seconds": -1}, "hermes_pacer_endpoint_ramp_seconds an integer from 0"),
    # Status and metrics (docs/metrics.md).
    *[
        (
            {"hermes_pacer_state_dir": value},
            f"hermes_pacer_state_dir={value} is invalid: expected an absolute path",
        )
        for value in ["var/lib/hermes-pacer", "/", "/var/lib/hermes pacer"]
    ],
    *[
        ({"hermes_pacer_metrics_dir": value}, "hermes_pacer_metrics_dir must be auto (Debian's")
        for value in ["metrics", "on", "/"]
    ],
    ({"hermes_pacer_node_exporter_install": "maybe"}, "hermes_pacer_node_exporter_install true or false"),
    *[
        ({"hermes_pacer_metrics_dir": value}, "expected two separate directories, neither inside the other")
        for value in ["/var/lib/hermes-pacer", "/var/lib/hermes-pacer/metrics", "/var/lib/hermes-pacer/"]
    ],
    (
        {"hermes_pacer_state_dir": "/var/lib/prometheus/node-exporter/pacer"},
        "(node_exporter's textfile directory /var/lib/prometheus/node-exporter)",
    ),
    (
        {**NEW_USER, "hermes_pacer_state_dir": "/srv/hermes/.hermes/state"},
        "neither in the Hermes home /srv/hermes",
    ),
    (
        {**NEW_USER, "hermes_pacer_metrics_dir": "/srv/hermes/textfiles"},
        "hermes_pacer_metrics_dir=/srv/hermes/textfiles (node_exporter's textfile directory",
    ),
    (
        {"hermes_agent_user": ME.pw_name, "hermes_agent_user_home": "/srv/hermes"},
        f"hermes_agent_user_home=/srv/hermes is invalid: the user {ME.pw_name} exists with the home "
        f"{ME.pw_dir}",
    ),
]


def _play(extra: dict) -> subprocess.CompletedProcess:
    return ansible_playbook("site.yml", "--check", extra=extra)


@pytest.mark.parametrize(
    ("extra", "message"), CASES, ids=[next(iter(e)) + str(i) for i, (e, _) in enumerate(CASES)]
)
def test_bad_input_stops_the_play_before_any_change(extra, message):
    play = _play(extra)
    assert play.returncode != 0
    assert message in play.stdout, play.stdout[-3000:]
    assert "changed=0" in play.stdout.split("PLAY RECAP", 1)[1]


@pytest.mark.skipif(Path("/proc/1/comm").read_text().strip() == "systemd", reason="systemd is PID 1 here")
def test_systemd_is_refused_where_it_is_not_pid_1():
    play = _play({"hermes_pacer_scheduler": "systemd"})
    assert play.returncode != 0
    assert "hermes_pacer_scheduler=systemd but systemd is not PID 1" in play.stdout


def test_an_endpoint_url_with_credentials_is_refused_without_showing_them():
    url = "https://pacer:s3cret-token@gpu.example.net/v1"
    play = _play({"hermes_pacer_endpoints": [{"name": "gpu0", "url": url, "max_parallel": 4}]})
    assert play.returncode != 0
    text = " ".join(play.stdout.split())
    assert "a url without user:password@" in text and "credentials: gpu0" in text, play.stdout[-3000:]
    assert "s3cret" not in play.stdout + play.stderr
    assert "changed=0" in play.stdout.split("PLAY RECAP", 1)[1]


OLD_PYTHON = Path("/root/.pyenv/versions/3.8.18/bin")


@pytest.mark.parametrize(
    ("python_path", "found"),
    [
        pytest.param("/nonexistent", "which is not there", id="none"),
        pytest.param(
            str(OLD_PYTHON),
            "which is Python 3.8.18",
            id="3.8",
            marks=pytest.mark.skipif(not OLD_PYTHON.is_dir(), reason=f"no Python 3.8 at {OLD_PYTHON}"),
        ),
    ],
)
def test_a_python_the_pacer_cannot_run_on_stops_the_play_before_any_change(python_path, found):
    """The gateway dispatcher stays on where the pacer could not run (the host would have none)."""
    play = _play({"_hermes_pacer_python_path": python_path})
    assert play.returncode != 0
    text = " ".join(play.stdout.split())
    assert found in text and "supported are Python 3.9, 3.10, 3.11, 3.12, 3.13" in text, play.stdout[-3000:]
    assert "changed=0" in play.stdout.split("PLAY RECAP", 1)[1]
