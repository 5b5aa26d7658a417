"""The alert rules (prometheus/hermes-pacer.rules.yml) load, pass their promtool unit tests, and name
only what docs/metrics.md promises: its metrics and exactly its alerts.

The unit tests (prometheus/tests/hermes-pacer.rules.test.yml) hold the timing: when each alert fires
and the cases where it must not (a full cap, a success between failures, a 60 s cadence).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml
from dashboard_queries import queries

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
RULES = REPO / "prometheus" / "hermes-pacer.rules.yml"
RULE_TESTS = REPO / "prometheus" / "tests" / "hermes-pacer.rules.test.yml"
METRICS_DOC = REPO / "docs" / "metrics.md"
README = REPO / "README.md"
METRIC = re.compile(r"\bhermes_pacer_\w+")


def _rules() -> list[dict]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _doc_section(title_start: str) -> str:
    """The text of docs/metrics.md from the `## <title_start>...` heading to the next `## `."""
    text = METRICS_DOC.read_text()
    start = re.search(rf"^## {re.escape(title_start)}.*$", text, re.M)
    assert start, f"docs/metrics.md has no section starting '## {title_start}'"
    end = re.search(r"^## ", text[start.end() :], re.M)
    return text[start.end() : start.end() + end.start()] if end else text[start.end() :]


def _documented_metrics() -> set[str]:
    """Metric names in the first column of the tables of docs/metrics.md's Metrics section."""
    rows = re.findall(r"^\| `(hermes_pacer_\w+)", _doc_section("Metrics"), re.M)
    assert rows, "no metric table rows found in docs/metrics.md"
    return set(rows)


def _documented_alerts() -> set[str]:
    return set(re.findall(r"^\| `(HermesPacer\w+)`", _doc_section("Alerts"), re.M))


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading (as tests/test_docs.py computes it)."""
    text = re.sub(r"[`*_]{2,}|`", "", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def test_promtool_checks_the_rules(promtool):
    result = subprocess.run([promtool, "check", "rules", RULES], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass(promtool):
    result = subprocess.run(
        [promtool, "test", "rules", RULE_TESTS.name], cwd=RULE_TESTS.parent, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_table_equals_the_rules():
    assert _documented_alerts() == {rule["alert"] for rule in _rules()}


def test_every_alert_has_a_unit_test_that_fires_it():
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    fired = {
        case["alertname"]
        for test in tests
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert fired == {rule["alert"] for rule in _rules()}


def test_rules_and_dashboard_name_only_documented_metrics():
    documented = _documented_metrics()
    named = {(f"rule {rule['alert']}", m) for rule in _rules() for m in METRIC.findall(rule["expr"])}
    named |= {(f"panel {title}", m) for title, expr in queries() for m in METRIC.findall(expr)}
    missing = sorted(f"{where}: {metric}" for where, metric in named if metric not in documented)
    assert not missing, "not in docs/metrics.md's tables:\n" + "\n".join(missing)


def test_every_rule_has_severity_summary_description_and_a_runbook_that_resolves():
    anchors = {_slug(h) for h in re.findall(r"^#+\s+(.*)$", README.read_text(), re.M)}
    for rule in _rules():
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"], rule["alert"]
        page, _, anchor = annotations["runbook_url"].partition("#")
        assert page == "README.md" and anchor in anchors, (rule["alert"], annotations["runbook_url"])


def test_every_for_duration_is_a_line_of_its_own():
    """The Molecule scenario shortens the alerts by rewriting `for: <duration>` lines only."""
    lines = re.findall(r"^\s+for: \d+[smh]$", RULES.read_text(), re.M)
    assert len(lines) == len(_rules()) == sum(1 for rule in _rules() if "for" in rule)
