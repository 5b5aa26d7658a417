"""Project tasks (invoke). Run them through ./tasks.sh, which brings the pinned toolchain."""

from __future__ import annotations

import os
import re
import resource
import shlex
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

from invoke import task

REPO = Path(__file__).resolve().parent
POSIX_SCRIPTS = [
    "roles/hermes_pacer/files/scripts/hermes-kanban-dispatch-capped.sh",
    "bench/baselines/recipe-capped.sh",
    "tasks.sh",
]
BASH_SCRIPTS = [".ci/run", "molecule/images/build.sh"]
PACKAGE = "roles/hermes_pacer/files/hermes_pacer"
PYTHON_SOURCES = [PACKAGE, "tests", "plugins", "molecule", "bench", "tasks.py"]


def _venv_bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


# How long each step of the last run took, for the summary `test` prints at its end.
TIMES: list[tuple[str, float, bool]] = []


def _timed(what: str, action):
    """Run action(); its time (and whether it raised) goes into TIMES."""
    import time

    began = time.monotonic()
    ok = False
    try:
        result = action()
        ok = True
        return result
    finally:
        TIMES.append((what, time.monotonic() - began, ok))


@task
def lint(c):
    """shellcheck on every script, ruff on every Python file, yamllint and ansible-lint (production)."""
    with c.cd(str(REPO)):
        c.run(f"{_venv_bin('shellcheck')} --shell=sh --severity=style {' '.join(POSIX_SCRIPTS)}")
        c.run(f"{_venv_bin('shellcheck')} --severity=style {' '.join(BASH_SCRIPTS)}")
        c.run(f"{_venv_bin('ruff')} check {' '.join(PYTHON_SOURCES)}")
        c.run(f"{_venv_bin('ruff')} format --check {' '.join(PYTHON_SOURCES)}")
        c.run(f"{_venv_bin('yamllint')} --strict .")
        c.run(f"{_venv_bin('ansible-lint')} --profile production --offline")


@task
def hermes(c):
    """Install the pinned hermes-agent releases into cached virtualenvs (HERMES_VERSIONS picks some)."""
    c.run(f"{sys.executable} {REPO / 'tests' / 'hermes_install.py'}")


# Side by side by default: the suite mostly waits (held LLM calls, worker start-up, timers), and on
# the 2-core machine 4 pytest processes and 2 scenarios at a time are what was measured passing
# (docs/development.md, "Where the time goes").
PYTEST_JOBS = 4
MOLECULE_JOBS = 2
PYTEST_HELP = {
    "k": "only tests matching this pytest -k expression",
    "fast": "only the fast tier: no Hermes worker, no container, no network server (tests/conftest.py)",
    "jobs": f"pytest processes side by side (pytest-xdist; default {PYTEST_JOBS}; 1: one after another)",
    "durations": "the 20 slowest tests, and the time of each step at the end",
}


@task(help=PYTEST_HELP)
def pytest(c, k="", fast=False, jobs=PYTEST_JOBS, durations=False):
    """pytest against real Hermes releases (installs them first; the fast tier needs none)."""
    if not fast:
        _timed("hermes releases", lambda: hermes(c))
    options = (" --durations=20" if durations else "") + (f" -k {k!r}" if k else "")
    with c.cd(str(REPO)):
        if fast:
            parallel = f" -n {int(jobs)}" if int(jobs) > 1 else ""
            _timed("pytest -m fast", lambda: c.run(f"{sys.executable} -m pytest -m fast{parallel}{options}"))
        elif int(jobs) <= 1:
            _timed("pytest", lambda: c.run(f"{sys.executable} -m pytest{options}"))
        else:
            # A test marked alone starts a dispatcher the verify of every other test on the machine
            # would see (pyproject.toml): those run after the others, one at a time.
            _timed(
                f"pytest -n {int(jobs)}",
                lambda: c.run(f"{sys.executable} -m pytest -m 'not alone' -n {int(jobs)}{options}"),
            )
            _timed("pytest -m alone", lambda: _pytest_may_select_none(c, f"-m alone{options}"))


def _pytest_may_select_none(c, options: str) -> None:
    """pytest with these options; none of its tests selected (exit 5, a -k elsewhere) is no failure."""
    result = c.run(f"{sys.executable} -m pytest {options}", warn=True)
    if result.exited not in (0, 5):
        raise SystemExit(f"pytest {options}: exit {result.exited}")


# --- the targets' Pythons ----------------------------------------------------------------------
# What the fast tier imports, in releases that install on every target Python (3.9 and up).
TARGET_TEST_PACKAGES = ("pytest==8.4.2", "PyYAML==6.0.3", "ruamel.yaml==0.19.1")


def _target_pythons() -> list[str]:
    """The Pythons the pacer supports on a host, as the role states them."""
    import yaml

    return yaml.safe_load((REPO / "roles" / "hermes_pacer" / "vars" / "main.yml").read_text())[
        "_hermes_pacer_pythons"
    ]


def _find_python(version: str) -> str | None:
    """An interpreter of `version` (e.g. 3.9): pyenv's newest, else python3.9 on PATH."""
    versions = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    patch = re.compile(rf"{re.escape(version)}\.(\d+)")  # 3.9.18, not 3.9.0rc1 or 3.10.x
    found = {
        int(match[1]): path / "bin" / "python3"
        for path in versions.glob(f"{version}.*")
        if (match := patch.fullmatch(path.name)) and (path / "bin" / "python3").exists()
    }
    if found:
        return str(found[max(found)])
    on_path = shutil.which(f"python{version}")
    return on_path if on_path and "/shims/" not in on_path else None


def _target_venv(version: str, python: str) -> Path:
    """A cached virtualenv of `python` with TARGET_TEST_PACKAGES."""
    import subprocess

    venv = CACHE / "pythons" / version
    stamp = venv / "hermes-pacer-packages.txt"
    wanted = "\n".join(TARGET_TEST_PACKAGES) + "\n"
    if not stamp.exists() or stamp.read_text() != wanted:
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([python, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *TARGET_TEST_PACKAGES], check=True)
        stamp.write_text(wanted)
    return venv


@task(help={"pythons": "comma-separated versions (default: every one the role supports but this one)"})
def pythons(c, pythons=""):
    """The fast tier (the package's and the module's unit tests) under each target Python."""
    import subprocess

    import ansible

    mine = f"{sys.version_info[0]}.{sys.version_info[1]}"
    versions = [v for v in (pythons.split(",") if pythons else _target_pythons()) if v and v != mine]
    missing = [version for version in versions if _find_python(version) is None]
    if missing:
        raise SystemExit(
            f"pythons: no Python {', '.join(missing)} here (looked in pyenv and on PATH): install it, "
            "or name the ones to test with --pythons"
        )
    # The module imports ansible.module_utils, which runs on every target Python: the toolchain's.
    module_utils = CACHE / "pythons" / "ansible-module-utils"
    module_utils.mkdir(parents=True, exist_ok=True)
    link = module_utils / "ansible"
    if not link.is_symlink() or link.resolve() != Path(ansible.__file__).parent.resolve():
        link.unlink(missing_ok=True)
        link.symlink_to(Path(ansible.__file__).parent)
    listing = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "fast", "-p", "no:cacheprovider"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    modules = sorted({line.split("::", 1)[0] for line in listing.stdout.splitlines() if "::" in line})
    for version in versions:
        venv = _timed(f"python {version}: its virtualenv", lambda v=version: _target_venv(v, _find_python(v)))
        command = [str(venv / "bin" / "python"), "-m", "pytest", "-q", "-m", "fast", "-p", "no:cacheprovider"]
        command += ["-o", "addopts=-ra", *modules]
        env = {**os.environ, "PYTHONPATH": str(module_utils)}
        print(f"==== pytest -m fast on Python {version}", flush=True)
        _timed(
            f"pytest -m fast on Python {version}",
            lambda cmd=command, e=env: subprocess.run(cmd, cwd=REPO, env=e, check=True),
        )


# --- Molecule -----------------------------------------------------------------------------------
CACHE = Path(os.environ.get("HERMES_PACER_CACHE") or Path.home() / ".cache" / "hermes-pacer")
PODMAN_PACKAGES = (
    "podman debootstrap runc conmon containernetworking-plugins fuse-overlayfs slirp4netns "
    "uidmap catatonit iptables"
)
# The `ansible` wheel carries the collections Molecule's podman driver needs; Galaxy is not reachable.
ANSIBLE_WHEEL = "ansible==12.3.0"
COLLECTIONS = ("containers/podman", "ansible/posix", "community/general")
# Each scenario: the Debian release its container runs and the hermes-agent release it installs.
SCENARIOS = {
    "systemd": ("bookworm", "0.19.0"),
    "cron": ("bookworm", "0.14.0"),
    "migration": ("bookworm", "0.19.0"),
    "trixie": ("trixie", "0.19.0"),
}
SUITE_PYTHON = {"bookworm": "3.11", "trixie": "3.13"}


def _containers_conf() -> Path:
    """podman settings that work on a host whose PID 1 is not systemd and whose cgroups are hybrid."""
    nofile = min(20000, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    nproc = min(32768, resource.getrlimit(resource.RLIMIT_NPROC)[1])
    conf = CACHE / "podman" / "containers.conf"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text(
        "[containers]\n"
        f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
        "[engine]\n"
        'runtime = "runc"\n'
        'cgroup_manager = "cgroupfs"\n'
    )
    return conf


def _collections(c) -> Path:
    target = CACHE / "collections"
    if all((target / "ansible_collections" / name / "MANIFEST.json").exists() for name in COLLECTIONS):
        return target
    wheels = CACHE / "wheels"
    c.run(f"{sys.executable} -m pip download --quiet --no-deps -d {wheels} {ANSIBLE_WHEEL}")
    wheel = next(wheels.glob("ansible-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            if name.startswith(tuple(f"ansible_collections/{n}/" for n in COLLECTIONS)):
                archive.extract(name, target)
    return target


def _wheelhouse(c, version: str, python: str) -> Path:
    """hermes-agent and its dependencies as wheels for the container's Python, installed there
    without a network: <wheelhouse>/<version>-py<python>."""
    house = CACHE / "wheelhouse"
    folder = house / f"{version}-py{python}"
    if not (folder / ".complete").exists():
        c.run(
            f"{sys.executable} -m pip download --quiet --only-binary=:all: --python-version {python} "
            f"-d {folder} hermes-agent=={version}"
        )
        (folder / ".complete").write_text(version)
    return house


def _podman(c) -> None:
    """podman and debootstrap from Debian's packages, once per machine."""
    if shutil.which("podman") is None or shutil.which("debootstrap") is None:
        c.run("apt-get update -qq")
        c.run(
            f"DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends {PODMAN_PACKAGES}"
        )


def _image(c, suite: str) -> str:
    """The systemd-booting image of one Debian release (built once; molecule/images/build.sh)."""
    build = REPO / "molecule" / "images" / "build.sh"
    return c.run(f"{build} {suite}", hide="out").stdout.strip().splitlines()[-1]


def _molecule_envs(c, scenarios: list[str]) -> dict[str, dict[str, str]]:
    """What the scenarios share, prepared once and side by side: podman, one image per Debian
    release, one wheelhouse per Hermes release and Python, the collections. Each scenario's
    environment."""
    from concurrent.futures import ThreadPoolExecutor

    _podman(c)
    conf = str(_containers_conf())
    os.environ["CONTAINERS_CONF"] = conf
    suites = sorted({SCENARIOS[name][0] for name in scenarios})
    houses = sorted({(SCENARIOS[name][1], SUITE_PYTHON[SCENARIOS[name][0]]) for name in scenarios})
    with ThreadPoolExecutor(max_workers=len(suites) + len(houses) + 1) as pool:
        images = {suite: pool.submit(_image, c, suite) for suite in suites}
        wheelhouses = [pool.submit(_wheelhouse, c, version, python) for version, python in houses]
        collections = pool.submit(_collections, c)
        house = next(future.result() for future in wheelhouses)  # one folder holds them all
        images = {suite: future.result() for suite, future in images.items()}
        collections_path = collections.result()
    return {
        name: {
            "CONTAINERS_CONF": conf,
            "HERMES_PACER_IMAGE": images[SCENARIOS[name][0]],
            "HERMES_PACER_REPO": str(REPO),
            "HERMES_PACER_WHEELHOUSE": str(house),
            "ANSIBLE_COLLECTIONS_PATH": str(collections_path),
        }
        for name in scenarios
    }


# Molecule 26 looks for a scenario named "default" on every run (its shared-state feature: a default
# scenario's create and destroy would serve every other scenario). This project has none, so the
# look-up fails, and the exception it raises logs itself as CRITICAL when it is made, although
# Molecule catches it and goes on. That one line, on every passing run, is all that is dropped.
NO_DEFAULT_SCENARIO = re.compile(
    r"CRITICAL\s+'[^']*molecule/default/molecule\.yml'\s+glob\s+failed\.\s+Exiting\."
)


def _shown(line: str) -> bool:
    return not NO_DEFAULT_SCENARIO.search(re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", line))


# Molecule's line as a phase of a scenario starts, e.g. "INFO     cron ➜ converge: Executing".
_PHASE = re.compile(r"➜ (\w+): Executing")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _scenario(name: str, command: str, env: dict[str, str], logs: Path) -> tuple[bool, float, list]:
    """One Molecule scenario in a process of its own, its output in logs/<name>.log; whether it
    passed, its time, and the time of each of its phases (create, converge, verify...)."""
    import subprocess
    import time

    base = REPO / "molecule" / "shared" / "base.yml"
    began = time.monotonic()
    phases: list[list] = []  # [phase, seconds], the last one still running
    with open(logs / f"{name}.log", "w") as out:
        proc = subprocess.Popen(
            [_venv_bin("molecule"), "--base-config", str(base), command, "-s", name],
            cwd=REPO,
            # Unbuffered: each line as Molecule prints it, so each phase's time is its own.
            env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
        mark = began
        for line in proc.stdout:
            out.write(line)
            phase = _PHASE.search(_ANSI.sub("", line))
            if phase:
                now = time.monotonic()
                if phases:
                    phases[-1][1] = now - mark
                phases.append([phase.group(1), 0.0])
                mark = now
        proc.wait()
    if phases:
        phases[-1][1] = time.monotonic() - mark
    return proc.returncode == 0, time.monotonic() - began, phases


@task(
    help={
        "scenario": f"one of {', '.join(SCENARIOS)} (default: all)",
        "command": "molecule command",
        "jobs": f"scenarios side by side (default {MOLECULE_JOBS}; 1: one after another; 0: all at once)",
    }
)
def molecule(c, scenario="", command="test", jobs=MOLECULE_JOBS):
    """Molecule scenarios on real systemd and cron in podman containers. Each one's output is
    printed whole when it ends (and kept in ~/.cache/hermes-pacer/molecule-logs/)."""
    from concurrent.futures import ThreadPoolExecutor, as_completed

    names = [scenario] if scenario else list(SCENARIOS)
    unknown = [name for name in names if name not in SCENARIOS]
    if unknown:
        raise SystemExit(f"molecule: unknown scenario {unknown[0]!r}; one of {', '.join(SCENARIOS)}")
    envs = _timed("molecule: podman, images, wheelhouses", lambda: _molecule_envs(c, names))
    logs = CACHE / "molecule-logs"
    logs.mkdir(parents=True, exist_ok=True)
    failed = []
    with ThreadPoolExecutor(max_workers=int(jobs) or len(names)) as pool:
        runs = {pool.submit(_scenario, name, command, envs[name], logs): name for name in names}
        for run in as_completed(runs):
            name = runs[run]
            ok, seconds, phases = run.result()
            spent = ", ".join(f"{phase} {phase_seconds:.0f}" for phase, phase_seconds in phases)
            TIMES.append((f"molecule {command} -s {name}" + (f"  ({spent})" if spent else ""), seconds, ok))
            print(f"==== molecule {command} -s {name}: {'passed' if ok else 'FAILED'} in {seconds:.0f} s")
            with open(logs / f"{name}.log", errors="replace") as log:
                for line in log:
                    if _shown(line):
                        sys.stdout.write(line)
            sys.stdout.flush()
            if not ok:
                failed.append(name)
    if failed:
        raise SystemExit(f"molecule: failed: {', '.join(failed)}")


@task(
    help={
        **PYTEST_HELP,
        "k": "only pytest tests matching this -k expression (Molecule is skipped)",
        "fast": "lint and the fast tier of pytest only (no Molecule): the quick loop, about a minute",
        "molecule_jobs": f"Molecule scenarios side by side (default {MOLECULE_JOBS}; 1: one after another)",
    }
)
def test(c, k="", fast=False, jobs=PYTEST_JOBS, durations=False, molecule_jobs=MOLECULE_JOBS):
    """The whole test suite: linters, pytest against real Hermes releases, Molecule scenarios.
    Prints the time of each step at the end."""
    import time

    began = time.monotonic()
    try:
        _timed("lint", lambda: lint(c))
        if not k and not fast:
            pythons(c)
        pytest(c, k=k, fast=fast, jobs=jobs, durations=durations)
        if not k and not fast:
            molecule(c, jobs=molecule_jobs)
    finally:
        print("==== time of each step")
        for what, seconds, ok in TIMES:
            print(f"{seconds:8.0f} s  {what}{'' if ok else '  (failed)'}")
        print(f"{time.monotonic() - began:8.0f} s  in all")


@task(
    help={
        "quick": "a short run (newest Hermes, one run a cell, 3 cards, 1 s calls) into bench/results/quick",
        "repeats": "runs of every cell (default 3; the outage cells once): the table shows median and range",
        "cards": "cards in the burst (default 6)",
        "cap": "the cap every strategy gets (default 2)",
        "versions": "hermes-agent releases, comma-separated (default: the pinned ones)",
        "workloads": "workloads, comma-separated: one-board, two-boards, foreign, outage, "
        "two-hosts (and one-host beside it) (default: all)",
        "strategies": "strategies, comma-separated (default: each workload's)",
        "docs": "write the table into docs/benchmark.md (default: yes, unless --quick; --no-docs leaves it)",
        "redraw": "run no trial: draw the plot and table again from bench/results/bench.json",
    }
)
def bench(
    c,
    quick=False,
    repeats=0,
    cards=0,
    cap=2,
    versions="",
    workloads="",
    strategies="",
    docs=True,
    redraw=False,
):
    """Benchmark: requests in flight, live workers, utilisation, makespan, refill and CPU per strategy."""
    hermes(c)
    options = (
        (" --quick" if quick else "")
        + (f" --repeats {repeats}" if repeats else "")
        + (f" --cards {cards}" if cards else "")
        + (f" --cap {cap}" if int(cap) != 2 else "")
        + (f" --versions {versions}" if versions else "")
        + (f" --workloads {workloads}" if workloads else "")
        + (f" --strategies {strategies}" if strategies else "")
        + ("" if docs else " --no-docs")
        + (" --redraw" if redraw else "")
    )
    with c.cd(str(REPO)):
        c.run(f"{sys.executable} -m bench{options}", pty=False)


@task(
    help={
        "sample": "the run's series (default: docs/img/metrics-run.json, which the systemd scenario "
        "writes when HERMES_PACER_METRICS_SAMPLE names it)",
        "out": "the picture (default: docs/img/metrics.png)",
    }
)
def metrics_plot(c, sample="", out=""):
    """Draw docs/img/metrics.png (the README's picture) from a Molecule run's Prometheus series."""
    paths = " ".join(shlex.quote(p) for p in (sample or str(REPO / "docs/img/metrics-run.json"), out) if p)
    with c.cd(str(REPO)):
        c.run(f"{sys.executable} -m bench.plot_metrics {paths}")


def _inventory_options(inventory: str, limit: str) -> str:
    return (f" -i {shlex.quote(inventory)}" if inventory else "") + (
        f" --limit {shlex.quote(limit)}" if limit else ""
    )


@task(
    help={
        "inventory": "inventory (default: ansible.cfg's, this machine)",
        "limit": "limit the play to these hosts (ansible --limit)",
        "tags": "run only the tasks with these tags, comma-separated (ansible --tags)",
        "check": "check mode, with --diff",
    }
)
def provision(c, inventory="", limit="", tags="", check=False):
    """ansible-playbook site.yml: this machine by default (inventory/hosts.yml)."""
    options = (
        _inventory_options(inventory, limit)
        + (f" --tags {shlex.quote(tags)}" if tags else "")
        + (" --check --diff" if check else "")
    )
    with c.cd(str(REPO)):
        c.run(f"{_venv_bin('ansible-playbook')} site.yml{options}")


def _play_hosts(c, playbook: str, options: str) -> list[str]:
    """The hosts a playbook's one play targets, as ansible-playbook --list-hosts resolves them."""
    listing = c.run(f"{_venv_bin('ansible-playbook')} {playbook}{options} --list-hosts", hide=True).stdout
    lines = listing.splitlines()
    start = next(i for i, line in enumerate(lines) if re.fullmatch(r"\s*hosts \(\d+\):", line))
    return [line.strip() for line in lines[start + 1 :] if line.strip()]


def _failure_of(output: str, host: str) -> str:
    """The play's own words for a host that left no report (its first fatal line), if any."""
    line = next((line for line in output.splitlines() if line.startswith(f"fatal: [{host}]")), "")
    return f": {line[:500]}" if line else ""


def _documents(c, playbook: str, options: str, folder_variable: str, what: str) -> dict[str, dict]:
    """Run a playbook that leaves one JSON document per host in a folder it is given; the documents
    by host. A host the play targets writes its document last: none, it was unreachable or failed,
    which its entry says (with the play's own words when it has some)."""
    return _play_documents(c, playbook, options, folder_variable, what)[0]


def _play_documents(
    c, playbook: str, options: str, folder_variable: str, what: str
) -> tuple[dict[str, dict], dict[str, list[str]] | None]:
    """_documents, and the inventory's groups when the play leaves them (inventory/groups.json in
    the folder: every group, whatever --limit keeps), else None."""
    import json as jsonlib

    with tempfile.TemporaryDirectory() as folder, c.cd(str(REPO)):
        expected = _play_hosts(c, playbook, options)
        play = c.run(
            f"{_venv_bin('ansible-playbook')} {playbook}{options} -e {folder_variable}={shlex.quote(folder)}",
            hide=True,
            warn=True,
        )
        documents = {}
        for path in sorted(Path(folder).glob("*.json")):
            try:
                documents[path.stem] = jsonlib.loads(path.read_text())
            except ValueError:
                documents[path.stem] = {"ok": False, "error": f"its {what} is not JSON"}
        try:
            groups = jsonlib.loads((Path(folder) / "inventory" / "groups.json").read_text())
        except (OSError, ValueError):
            groups = None
    for host in expected:
        if not isinstance(documents.get(host), dict):
            documents[host] = {
                "ok": False,
                "error": f"unreachable or failed, no {what}" + _failure_of(play.stdout, host),
            }
    if not documents:
        print(play.stdout[-3000:], play.stderr[-3000:], file=sys.stderr)
    return documents, groups if isinstance(groups, dict) else None


@task(
    help={
        "inventory": "inventory (default: ansible.cfg's, this machine)",
        "limit": "limit to these hosts (ansible --limit)",
        "hosts": "host group or pattern (default: hermes_hosts)",
        "json": "print the reports as JSON",
    }
)
def verify(c, inventory="", limit="", hosts="hermes_hosts", json=False):
    """Check each host: one dispatcher path per board, the cap holding, the config wired; then each
    fleet endpoint across its hosts (docs/fleet.md)."""
    import json as jsonlib

    sys.path.insert(0, str(REPO / "pacer"))
    from hermes_pacer import fleet_report
    from hermes_pacer.terminal import clean
    from hermes_pacer.verify import render

    options = _inventory_options(inventory, limit) + f" -e hermes_pacer_hosts={shlex.quote(hosts)}"
    # The play only reports: the verdict, over the hosts and their fleets, is made here.
    options += " -e hermes_pacer_verify_report_only=true"
    reports, groups = _play_documents(c, "playbooks/verify.yml", options, "hermes_pacer_verify_dir", "report")
    fleets = fleet_report.fleets(reports, groups)
    if json:
        print(jsonlib.dumps({"hosts": reports, "fleets": fleets}, indent=2))
    else:
        for host, report in sorted(reports.items()):
            print(f"== {host}")
            print(clean(report["error"]) if report.get("error") else render(report))
        if fleets:
            print(fleet_report.render(fleets))
    if not reports or not all(report.get("ok") for report in reports.values()):
        raise SystemExit(1)
    if not all(fleet["ok"] for fleet in fleets):
        raise SystemExit(1)


@task(
    help={
        "inventory": "inventory (default: ansible.cfg's, this machine)",
        "limit": "limit to these hosts (ansible --limit)",
        "hosts": "host group or pattern (default: hermes_hosts)",
        "json": "print the documents as JSON, keyed by host",
    }
)
def status(c, inventory="", limit="", hosts="hermes_hosts", json=False):
    """What each host's paced boards last did: one table with a host column (hermes-pacer status)."""
    import json as jsonlib
    import time

    sys.path.insert(0, str(REPO / "pacer"))
    from hermes_pacer.status import render_fleet

    options = _inventory_options(inventory, limit) + f" -e hermes_pacer_hosts={shlex.quote(hosts)}"
    documents = _documents(c, "playbooks/status.yml", options, "hermes_pacer_status_dir", "status")
    if json:
        print(jsonlib.dumps(documents, indent=2))
    else:
        print(render_fleet(documents, time.time()))
    if not documents or not all(document.get("ok") for document in documents.values()):
        raise SystemExit(1)


@task(help={"board": "board slug (default: the current board)", "max_parallel": "the cap (default 2)"})
def pace(c, board="", max_parallel=2):
    """One capped pacing pass against this machine's Hermes board."""
    env = {"MAX_PARALLEL": str(max_parallel)}
    if board:
        env["BOARD"] = board
    if not os.access("/run/lock", os.W_OK):
        env.setdefault("PACER_LOCK_DIR", str(Path.home() / ".cache" / "hermes-pacer" / "locks"))
    c.run(str(REPO / "scripts" / "hermes-kanban-dispatch-capped.sh"), env=env)
