"""The Grafana dashboard (grafana/hermes-pacer.json) imports anywhere and every query parses.

Importable: valid JSON whose panels and variables all use the `datasource` variable, so the
operator picks the Prometheus at import. Parsing: promtool checks every panel's PromQL (its
variables filled in by tests/dashboard_queries.py) written as recording rules; running them against
a Prometheus that scraped real textfiles is another test's job.
"""

from __future__ import annotations

import json
import re
import subprocess

import pytest
import yaml
from dashboard_queries import DASHBOARD, queries

pytestmark = pytest.mark.slow

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# What the dashboard must show (issue #14): a metric of each.
SHOWN = {
    "hermes_pacer_live_workers",
    "hermes_pacer_cap",
    "hermes_pacer_endpoint_used_slots",
    "hermes_pacer_endpoint_foreign_requests",
    "hermes_pacer_endpoint_workers",
    "hermes_pacer_endpoint_cap",
    "hermes_pacer_cards",
    "hermes_pacer_last_pass_reason",
    "hermes_pacer_spawned_total",
    "hermes_pacer_oldest_ready_age_seconds",
    "hermes_pacer_endpoint_requests",
    "hermes_pacer_endpoint_up",
    "hermes_pacer_failed_passes_total",
}


def _dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def _panels(panels):
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def test_importable_with_a_datasource_variable():
    dashboard = _dashboard()
    assert 36 <= dashboard["schemaVersion"] <= 41  # Grafana 10 and 11
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("instance", "board", "endpoint"):
        assert variables[name]["type"] == "query"
        assert variables[name]["datasource"] == DATASOURCE
        assert variables[name]["definition"].startswith("label_values(")


def test_every_panel_and_target_uses_the_datasource_variable():
    ids = []
    for panel in _panels(_dashboard()["panels"]):
        if panel["type"] == "row":
            continue
        ids.append(panel["id"])
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
    assert len(ids) == len(set(ids)), "panel ids repeat"


def test_the_dashboard_shows_what_the_issue_asks():
    named = {m for _, expr in queries() for m in re.findall(r"\bhermes_pacer_\w+", expr)}
    assert not SHOWN - named, sorted(SHOWN - named)


def test_every_query_parses(promtool, tmp_path):
    found = queries()
    recorded = [{"record": f"dashboard:query_{i}", "expr": expr} for i, (_, expr) in enumerate(found)]
    rules = {"groups": [{"name": "dashboard", "rules": recorded}]}
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump(rules))
    result = subprocess.run([promtool, "check", "rules", path], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(found)} rules found" in result.stdout
