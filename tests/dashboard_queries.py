"""The PromQL of every panel of the Grafana dashboard, ready to run against a real Prometheus.

Grafana fills the dashboard's template variables in before it sends a query; Prometheus knows none
of them. `queries()` does the same filling with values that select everything (what the dashboard's
"All" does: its variables' allValue is `.*`), so a test can parse every query with promtool or run
it against a Prometheus that scraped real textfiles.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DASHBOARD = REPO / "grafana" / "hermes-pacer.json"

# Grafana's built-in interval variables, by a value each that Prometheus takes as a duration.
BUILTIN = {
    "__rate_interval": "1m",
    "__interval": "1m",
    "__range": "1h",
}
# The dashboard's own variables, matched with `=~"$name"`: `.*` selects every value, also the
# empty `endpoint` of a board on none.
MATCH_ALL = ".*"
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


def _substitute(expr: str, dashboard_variables: set[str]) -> str:
    def value(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        if name in BUILTIN:
            return BUILTIN[name]
        if name in dashboard_variables:
            return MATCH_ALL
        raise ValueError(f"query names ${name}, which is neither a dashboard variable nor {sorted(BUILTIN)}")

    return _VARIABLE.sub(value, expr)


def _panels(panels: list[dict]) -> list[dict]:
    """Every panel, also those inside a collapsed row."""
    found = []
    for panel in panels:
        found.append(panel)
        found.extend(_panels(panel.get("panels", [])))
    return found


def queries(path: Path = DASHBOARD) -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target of every panel, template variables filled in."""
    dashboard = json.loads(Path(path).read_text())
    variables = {v["name"] for v in dashboard.get("templating", {}).get("list", [])}
    found = []
    for panel in _panels(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            expr = target.get("expr")
            if expr:
                found.append((panel.get("title", ""), _substitute(expr, variables)))
    return found
