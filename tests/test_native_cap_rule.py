"""Hermes' own in-progress cap by release: removed before 0.20 (it counts running cards twice),
set from 0.20 on (unset, it is a cap derived from memory), to the sum of the paced boards' caps."""

from __future__ import annotations

import grp
import importlib.util
import json
import os
import pwd
import sys
from pathlib import Path

import pytest
import yaml
from ansible.errors import AnsibleFilterError
from ansible_run import ansible_playbook

pytestmark = pytest.mark.slow

_PATH = Path(__file__).resolve().parent.parent / "plugins" / "filter" / "hermes_kanban.py"
_SPEC = importlib.util.spec_from_file_location("hermes_kanban", _PATH)
plugin = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(plugin)


@pytest.mark.parametrize(
    ("version", "rule"),
    [
        ("0.14.0", "unset"),
        ("0.16.0", "unset"),
        ("0.19.0", "unset"),
        ("0.19.99", "unset"),
        ("0.20.0", "set"),
        ("0.20.1.2", "set"),
        ("0.21.3", "set"),
        ("v0.22.2.post1", "set"),
        ("1.0.0", "set"),
        (" 0.20.0rc1 ", "set"),
    ],
)
def test_the_rule_follows_the_release(version, rule):
    assert plugin.native_in_progress_rule(version) == rule


@pytest.mark.parametrize(
    "version", ["garbage", "", "0.20", "v", "0.x.1", "0.20.0 beta", None, 20, "..0.20.0"]
)
def test_a_version_that_is_no_release_is_refused_by_name(version):
    with pytest.raises(AnsibleFilterError, match=r"Hermes version .* is invalid: expected a release such as"):
        plugin.native_in_progress_rule(version)


def test_the_value_is_the_sum_of_the_boards_caps():
    assert plugin.native_in_progress_value([2]) == 2
    assert plugin.native_in_progress_value([2, 3, "4"]) == 9
    assert plugin.native_in_progress_value([1000, 1000]) == 2000


def test_no_boards_leave_the_key_alone():
    assert plugin.native_in_progress_value([]) == 0


@pytest.mark.parametrize("cap", [0, -1, 1001, "two", None, True, 2.5, [2]])
def test_a_bad_cap_is_refused_by_name(cap):
    with pytest.raises(
        AnsibleFilterError, match=r"max_parallel=.* is invalid: expected a whole number from 1 to 1000"
    ):
        plugin.native_in_progress_value([2, cap])


def test_caps_that_are_no_list_are_refused():
    with pytest.raises(AnsibleFilterError, match="expected a list of board caps"):
        plugin.native_in_progress_value("2,3")


def test_the_filters_carry_their_collection_names():
    assert set(plugin.FilterModule().filters()) == {"native_in_progress_rule", "native_in_progress_value"}


# --- The role's real tasks (roles/hermes_pacer/tasks/config.yml) through ansible-playbook ----------
#
# The version is what discover-hermes.yml notes from `hermes --version`; a 0.20 here is that string
# alone (no 0.20 is installable: it is on GitHub only). The play starts after the task that installs
# the editor's parsers with apt (this machine's Python for Ansible, the test's, has them).

REPO = Path(__file__).resolve().parent.parent
PLAY = """\
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - ansible.builtin.import_role:
        name: hermes_pacer
        tasks_from: config.yml
"""
BEFORE = """\
# hand-written
kanban:
  dispatch_in_gateway: true  # the gateway dispatched
  max_in_progress: 2
  max_spawn: 3
  failure_limit: 2
"""
BOARDS = [{"name": "default", "max_parallel": 2}, {"name": "ops", "max_parallel": 3}, {"name": "triage"}]


@pytest.fixture
def homes(tmp_path):
    root = tmp_path / "home" / ".hermes"
    profile = root / "profiles" / "coder"
    profile.mkdir(parents=True)
    (root / "config.yaml").write_text(BEFORE)
    (profile / "config.yaml").write_text(BEFORE)
    return root, profile


def converge(tmp_path, homes, version, **extra):
    play = tmp_path / "play.yml"
    play.write_text(PLAY)
    variables = {
        "hermes_pacer_homes": [str(home) for home in homes],
        "hermes_pacer_hermes_version": version,
        "hermes_pacer_boards": BOARDS,
        "hermes_pacer_user": pwd.getpwuid(os.getuid()).pw_name,
        "hermes_pacer_group": grp.getgrgid(os.getgid()).gr_name,
        "hermes_pacer_backup_dir": str(tmp_path / "backups"),
        "hermes_pacer_active_gateways": [],
        "ansible_python_interpreter": sys.executable,
        **extra,
    }
    run = ansible_playbook(
        "-i",
        "localhost,",
        str(play),
        "--start-at-task",
        "Decide Hermes' own in-progress cap for the paced home",
        extra=variables,
        cwd=tmp_path,
        env={
            "ANSIBLE_ROLES_PATH": str(REPO / "roles"),
            "ANSIBLE_COLLECTIONS_PATH": str(REPO / ".ansible" / "collections"),
        },
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    recap = run.stdout.split("PLAY RECAP", 1)[1]
    return int(recap.split("changed=", 1)[1].split()[0])


def kanban(home):
    return yaml.safe_load((home / "config.yaml").read_text())["kanban"]


def test_hermes_0_19_loses_both_native_caps_once(tmp_path, homes):
    root, profile = homes
    assert converge(tmp_path, homes, "0.19.0") > 0
    assert kanban(root) == {"dispatch_in_gateway": False, "failure_limit": 2}
    assert kanban(profile)["max_in_progress"] == 2  # a profile's dispatcher is off; its keys stay
    assert "# hand-written" in (root / "config.yaml").read_text()
    assert converge(tmp_path, homes, "0.19.0") == 0


def test_hermes_0_20_gets_the_sum_of_the_caps_and_no_max_spawn(tmp_path, homes):
    root, profile = homes
    assert converge(tmp_path, homes, "0.20.0") > 0
    assert kanban(root) == {"dispatch_in_gateway": False, "max_in_progress": 7, "failure_limit": 2}
    assert kanban(profile)["max_in_progress"] == 2
    assert converge(tmp_path, homes, "0.21.3") == 0


def test_caps_left_to_the_operator_stay_as_they_are(tmp_path, homes):
    root, _ = homes
    converge(tmp_path, homes, "0.20.0", hermes_pacer_unset_native_caps=False)
    assert kanban(root) == {
        "dispatch_in_gateway": False,
        "max_in_progress": 2,
        "max_spawn": 3,
        "failure_limit": 2,
    }


# Keys 0.20 and 0.21 read that 0.19 does not (vars/main.yml); auto_subscribe_on_create is read since
# 0.17. With hermes_pacer_remove_unknown_kanban_keys on, a release keeps every key it reads.
NEWER = {
    "review_dispatch": False,
    "reconcile_orphans": False,
    "done_sub_retention_days": 7,
    "notify_in_gateway": False,
    "dispatch_profiles": ["coder"],
}


def with_newer_keys(root):
    keys = {**NEWER, "auto_subscribe_on_create": False, "no_such_key": 1}
    (root / "config.yaml").write_text(
        BEFORE + "".join(f"  {key}: {json.dumps(value)}\n" for key, value in keys.items())
    )


def test_hermes_0_21_keeps_the_keys_it_reads_when_unknown_ones_are_removed(tmp_path, homes):
    root, _ = homes
    with_newer_keys(root)
    assert converge(tmp_path, homes, "0.21.3", hermes_pacer_remove_unknown_kanban_keys=True) > 0
    assert kanban(root) == {
        "dispatch_in_gateway": False,
        "max_in_progress": 7,
        "failure_limit": 2,
        **NEWER,
        "auto_subscribe_on_create": False,
    }
    assert converge(tmp_path, homes, "0.21.3", hermes_pacer_remove_unknown_kanban_keys=True) == 0


def test_hermes_0_19_removes_the_keys_only_later_releases_read(tmp_path, homes):
    root, _ = homes
    with_newer_keys(root)
    converge(tmp_path, homes, "0.19.0", hermes_pacer_remove_unknown_kanban_keys=True)
    assert kanban(root) == {
        "dispatch_in_gateway": False,
        "failure_limit": 2,
        "auto_subscribe_on_create": False,
    }
