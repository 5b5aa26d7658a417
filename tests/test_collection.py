"""The repository builds into the collection hermes_pacer.pacer, and the built tarball, installed
offline from the file, stands alone: its roles, its module and the module's shared path walk
resolve without the checkout."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path, PurePosixPath

import pytest
import yaml

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
NOT_THE_PRODUCT = (".venv", ".git", ".ansible", ".ci", "tests", "molecule", "bench", "pacer", "scripts")


def _run(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [str(BIN / args[0]), *args[1:]],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"{' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def outside(tmp_path_factory):
    """A working directory and an environment that know nothing of the checkout: no ansible.cfg
    (its collections_path names the checkout's link), no roles path, no module library."""
    home = tmp_path_factory.mktemp("outside")
    (home / "ansible.cfg").write_text("[defaults]\n")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")},
        "ANSIBLE_CONFIG": str(home / "ansible.cfg"),
        "ANSIBLE_ROLES_PATH": str(home / "no-roles"),
        "ANSIBLE_LIBRARY": str(home / "no-modules"),
        "ANSIBLE_MODULE_UTILS": str(home / "no-module-utils"),
        "ANSIBLE_NOCOLOR": "1",
        "PATH": f"{BIN}:{os.environ['PATH']}",
    }
    return home, env


@pytest.fixture(scope="module")
def tarball(outside):
    home, env = outside
    _run(
        "ansible-galaxy",
        "collection",
        "build",
        "--output-path",
        str(home / "dist"),
        str(REPO),
        cwd=home,
        env=env,
    )
    (built,) = (home / "dist").glob("*.tar.gz")
    return built


@pytest.fixture(scope="module")
def installed(outside, tarball):
    home, env = outside
    _run(
        "ansible-galaxy",
        "collection",
        "install",
        "--offline",
        "-p",
        str(home / "collections"),
        str(tarball),
        cwd=home,
        env=env,
    )
    root = home / "collections" / "ansible_collections" / "hermes_pacer" / "pacer"
    assert (root / "MANIFEST.json").is_file()
    return home / "collections", {**env, "ANSIBLE_COLLECTIONS_PATH": str(home / "collections")}


def test_the_version_is_the_packages(tarball):
    galaxy = yaml.safe_load((REPO / "galaxy.yml").read_text())
    init = (REPO / "roles" / "hermes_pacer" / "files" / "hermes_pacer" / "__init__.py").read_text()
    assert galaxy["version"] == re.search(r'__version__ = "([^"]+)"', init).group(1)
    assert tarball.name == f"hermes_pacer-pacer-{galaxy['version']}.tar.gz"


def test_the_artifact_holds_the_product_and_nothing_else(tarball):
    with tarfile.open(tarball) as archive:
        members = {m.name: m for m in archive.getmembers()}
        manifest = json.load(archive.extractfile("MANIFEST.json"))
    names = set(members)
    for needed in (
        "meta/runtime.yml",
        "LICENSE",
        "README.md",
        "CHANGELOG.md",
        "roles/hermes_agent/tasks/main.yml",
        "roles/hermes_pacer/tasks/main.yml",
        "roles/hermes_pacer/files/hermes_pacer/safefile.py",
        "roles/hermes_pacer/files/scripts/hermes-kanban-dispatch-capped.sh",
        "plugins/modules/hermes_yaml_section.py",
        "plugins/modules/hermes_files.py",
        "plugins/module_utils/safefile.py",
        "playbooks/site.yml",
        "playbooks/verify.yml",
        "playbooks/uninstall.yml",
        "examples/playbook.yml",
    ):
        assert needed in names, needed
    assert manifest["collection_info"]["license"] == ["MIT"]
    for name in names:
        top = name.split("/", 1)[0]
        assert top not in NOT_THE_PRODUCT, f"{name} is not the product"
        assert "__pycache__" not in name and not name.endswith(".pyc"), name
    for name, member in members.items():
        if not member.issym():
            continue
        # A link stays inside what holds it: inside its role for a role's file, inside the
        # collection for the module_utils link into the role's package.
        target = PurePosixPath(os.path.normpath(PurePosixPath(name).parent / member.linkname))
        assert not target.is_absolute() and not str(target).startswith(".."), f"{name} -> {member.linkname}"
        assert str(target) in names, f"{name} -> {member.linkname}: dangling"
        if name.startswith("roles/"):
            role = "/".join(name.split("/")[:2]) + "/"
            assert str(target).startswith(role), f"{name} leaves its role: -> {member.linkname}"


def test_the_installed_copy_runs_the_example_playbook(outside, installed):
    home, _ = outside
    _, env = installed
    for playbook in (
        str(REPO / "examples" / "playbook.yml"),
        "hermes_pacer.pacer.site",
        "hermes_pacer.pacer.verify",
    ):
        done = _run("ansible-playbook", "-i", "localhost,", "--syntax-check", playbook, cwd=home, env=env)
        assert "ERROR" not in done.stderr, done.stderr


def test_the_installed_module_finds_its_module_utils(outside, installed, tmp_path):
    """The module run by its collection name from the installed copy: Ansible bundles the shared
    path walk from module_utils (through the link into the role), and the walk refuses a link."""
    home, _ = outside
    collections, env = installed
    config = tmp_path / "config.yaml"
    config.write_text("# kept\nkanban:\n  dispatch_in_gateway: true\n")
    # A directory link the Hermes user (uid 65534 here) made: only safefile's walk names it so.
    (tmp_path / "via").symlink_to(tmp_path)
    os.lchown(tmp_path / "via", 65534, 65534)
    common = ("ansible", "localhost", "-c", "local", "-e", f"ansible_python_interpreter={sys.executable}")
    module = ("-m", "hermes_pacer.pacer.hermes_yaml_section")
    args = {"section": "kanban", "set": {"dispatch_in_gateway": False}, "backup": False}
    done = _run(*common, *module, "-a", json.dumps({**args, "path": str(config)}), cwd=home, env=env)
    assert "CHANGED" in done.stdout, done.stdout
    assert config.read_text() == "# kept\nkanban:\n  dispatch_in_gateway: false\n"
    refused = subprocess.run(
        [
            str(BIN / common[0]),
            *common[1:],
            *module,
            "-a",
            json.dumps({**args, "path": str(tmp_path / "via" / "config.yaml")}),
        ],
        cwd=home,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert refused.returncode != 0, refused.stdout
    assert "via is a symbolic link of uid 65534: not followed" in refused.stdout, refused.stdout
    # The code that ran is the installed copy's: the checkout was on no path Ansible searched.
    assert str(REPO) not in env["ANSIBLE_COLLECTIONS_PATH"] and collections.is_relative_to(home)
