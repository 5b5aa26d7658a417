"""The README and docs/ name only what exists: repository paths, tasks, anchors, `reason=` values.

A page that names a file which moved, a task which was renamed or a reason the pass no longer logs
sends an operator the wrong way; these checks make such a page fail the suite instead.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.fast

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
PACKAGE = REPO / "roles" / "hermes_pacer" / "files" / "hermes_pacer"
EXAMPLE_INVENTORY = REPO / "inventory" / "example" / "hosts.yml"

# Paths on a target host (or of the kernel) that the pages may name: they are not in the repository.
HOST_PREFIXES = (
    "/etc/",
    "/opt/hermes",
    "/var/lib/",
    "/var/log/hermes",
    "/var/backups/hermes-",
    "/var/tmp",
    "/run/lock",
    "/usr/bin/python3",
    "/usr/local/bin/hermes-pacer",
    "/proc",
    "/dev/null",
    "/dev/zero",
    "/tmp",
    "/root",
    "/home/",
    "/lib/systemd/systemd",
)
# The HTTP paths of an LLM endpoint the pacer reads (endpoint.py): URLs, not files.
ENDPOINT_PATHS = {"/health", "/metrics", "/slots", "/api/ps", "/v1/models"}
# The pacing core, whose modules the pages name by their file name alone.
CORE = REPO / "roles" / "hermes_pacer" / "files" / "hermes_pacer"
# File names the pages use for things that are not repository files: files on a host or in a
# Hermes home, and the names of example files an operator writes.
NOT_REPO_FILES = {
    "config.yaml",
    "jobs.json",
    "kanban.db",
    "SKILL.md",
    "pacer-vars.yml",
    "nightly-report.yml",
    "release.yml",
    "bad.yml",
    "cycle.yml",
    "hosts.yml",
    "playbook.yml",
    "uninstall.yml",
    "verify.yml",
    "hermes-kanban-dispatch-capped.sh",
    "hermes-kanban-dispatch-subminute.sh",
    "hermes-kanban-flow.sh",
    "hermes-pacer-verify.sh",
    "hermes_pacer-pacer-0.5.0.tar.gz",
}
FILE_SUFFIXES = (".yml", ".yaml", ".py", ".sh", ".md", ".txt", ".toml", ".cfg", ".json", ".png", ".gz")


def _prose(text: str) -> str:
    """The page without its fenced code blocks: what is written there is a command, not a claim."""
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def _spans(text: str) -> list[str]:
    return re.findall(r"`([^`\n]+)`", _prose(text))


def _links(text: str) -> list[str]:
    return re.findall(r"\]\(([^)\s]+)\)", _prose(text))


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to dashes."""
    text = re.sub(r"[`*_]{2,}|`", "", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    anchors = set()
    for heading in re.findall(r"^#+\s+(.*)$", _prose(page.read_text()), re.M):
        slug = _slug(heading)
        anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return anchors


def _page_ids(pages):
    return [str(p.relative_to(REPO)) for p in pages]


def test_the_pages_exist():
    assert (REPO / "README.md").is_file()
    assert len(PAGES) > 5, "docs/ holds the detail the README links to"


@pytest.mark.parametrize("page", PAGES, ids=_page_ids(PAGES))
def test_every_path_in_backticks_exists(page):
    missing = []
    for span in _spans(page.read_text()):
        span = span.strip()
        if any(ch in span for ch in " <>$…=") or "://" in span or span.startswith(("~", "-", ".venv/")):
            continue  # a command, a placeholder, a URL or an option, not a path
        if span.startswith("/"):
            if not span.startswith(HOST_PREFIXES) and span not in ENDPOINT_PATHS:
                missing.append(f"{span} (a host path not in HOST_PREFIXES)")
            continue
        if "/" in span:
            path = span.rstrip("/")
            found = list(REPO.glob(path)) if "*" in path else [REPO / path] if (REPO / path).exists() else []
            if not found:
                missing.append(span)
        elif (
            span.endswith(FILE_SUFFIXES)
            and span not in NOT_REPO_FILES
            and not (REPO / span).exists()
            and not (CORE / span).exists()
        ):
            missing.append(f"{span} (not at the root, nor in the pacing core, nor in NOT_REPO_FILES)")
    assert not missing, f"{page.name} names paths that do not exist: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=_page_ids(PAGES))
def test_every_relative_link_and_anchor_resolves(page):
    broken = []
    for target in _links(page.read_text()):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(target)
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target} (no such heading)")
    assert not broken, f"{page.name} has broken links: {broken}"


def _tasks() -> set[str]:
    tree = ast.parse((REPO / "tasks.py").read_text())
    names = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            for deco in node.decorator_list:
                target = deco.func if isinstance(deco, ast.Call) else deco
                if isinstance(target, ast.Name) and target.id == "task":
                    names.add(node.name.replace("_", "-"))
    return names


@pytest.mark.parametrize("page", PAGES, ids=_page_ids(PAGES))
def test_every_task_named_is_a_task(page):
    tasks = _tasks()
    named = set(re.findall(r"\./tasks\.sh\s+([a-z][\w-]*)", page.read_text()))
    assert named <= tasks, f"{page.name} names tasks that tasks.py lacks: {sorted(named - tasks)}"


def test_the_example_inventory_parses_and_puts_every_host_in_hermes_hosts():
    binary = REPO / ".venv" / "bin" / "ansible-inventory"
    if not binary.exists():
        pytest.skip("no .venv/bin/ansible-inventory: run ./tasks.sh once")
    proc = subprocess.run(
        [str(binary), "-i", str(EXAMPLE_INVENTORY), "--list"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "[WARNING]" not in proc.stderr, proc.stderr
    inventory = json.loads(proc.stdout)
    hosts = set(inventory["_meta"]["hostvars"])
    assert len(hosts) >= 2, "a multi-host example"
    assert hosts <= set(inventory["hermes_hosts"]["hosts"]), "site.yml paces the group hermes_hosts"
    for host, hostvars in inventory["_meta"]["hostvars"].items():
        assert hostvars["hermes_pacer_boards"], host


def test_the_example_inventory_sets_only_variables_the_roles_have():
    known = set()
    for role in ("hermes_agent", "hermes_pacer"):
        spec = yaml.safe_load((REPO / "roles" / role / "meta" / "argument_specs.yml").read_text())
        known |= set(spec["argument_specs"]["main"]["options"])
    known.add("hermes_pacer_hosts")  # site.yml's group
    for path in sorted(EXAMPLE_INVENTORY.parent.rglob("*_vars/*.yml")):
        names = {name for name in yaml.safe_load(path.read_text()) if name.startswith("hermes_")}
        assert names <= known, f"{path.relative_to(REPO)}: unknown variables {sorted(names - known)}"


def _logged_reasons() -> tuple[set[str], set[str]]:
    """Every reason a pass can log, read from the package, and those that fail closed (rc=1)."""
    sys.path.insert(0, str(PACKAGE.parent))
    try:
        from hermes_pacer import passlog
    finally:
        sys.path.remove(str(PACKAGE.parent))
    reasons = set(passlog.FAILED_CLOSED)
    for source in PACKAGE.glob("*.py"):
        text = source.read_text()
        # record.update(reason="x"), {"reason": "x"}, record["reason"] = "x", HermesFailed("x", ...)
        reasons |= set(re.findall(r"""\breason["']?\]?\s*[=:]\s*["']([a-z_]+)["']""", text))
        reasons |= set(re.findall(r"""HermesFailed\(\s*["']([a-z_]+)["']""", text))
    return reasons, set(passlog.FAILED_CLOSED)


def _troubleshooting_rows() -> dict[str, str]:
    """reason -> rc column of the README's troubleshooting table."""
    text = (REPO / "README.md").read_text()
    section = re.search(r"^## Troubleshooting by `reason=`\n(.*?)(?=^## )", text, re.S | re.M)
    assert section, "README.md has a section '## Troubleshooting by `reason=`'"
    rows = re.findall(r"^\| `([a-z_]+)` \| ([^|]+) \|", section.group(1), re.M)
    return {reason: rc.strip() for reason, rc in rows}


def test_passlog_reasons_are_every_reason_the_package_logs():
    """passlog.REASONS gives the metrics one series per reason: one it lacks would never show."""
    from hermes_pacer import passlog

    logged, failed_closed = _logged_reasons()
    assert sorted(passlog.REASONS) == sorted(logged)
    assert len(set(passlog.REASONS)) == len(passlog.REASONS)
    assert failed_closed <= set(passlog.REASONS)


def test_the_troubleshooting_table_has_a_row_for_every_reason_the_package_logs():
    logged, failed_closed = _logged_reasons()
    assert {"dispatched", "no_ready", "at_cap", "terminated", "settings_invalid"} <= logged, logged
    rows = _troubleshooting_rows()
    assert not logged - set(rows), f"reasons with no row: {sorted(logged - set(rows))}"
    assert not set(rows) - logged, f"rows for reasons the package never logs: {sorted(set(rows) - logged)}"
    for reason, rc in rows.items():
        expected = "1" if reason in failed_closed else "0"
        assert rc.startswith(expected), f"{reason}: rc column says {rc!r}, the package logs rc={expected}"
