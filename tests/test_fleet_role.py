"""The role's side of a fleet (docs/fleet.md), from a two-host inventory, with the role's own tasks.

Both hosts are this machine (a local connection), each with its own settings directory: preflight,
settings.yml and the fleet report run as site.yml runs them, and each host's settings files are
read back as the pass reads them. Bad inventories go through site.yml in check mode: they stop in
preflight, naming the variable, and nothing changes.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml
from ansible_run import ansible_playbook
from hermes_pacer import host, settings

REPO = Path(__file__).resolve().parent.parent
ROLE = REPO / "roles" / "hermes_pacer"
# The system Python, as the example inventory's; this virtualenv's where there is none.
PYTHON = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
HOSTS = ["hermes-01", "hermes-02"]
GROUP = "gpu_a_fleet"
GPU_A = {"name": "gpu-a", "url": "http://10.0.0.9:8000/v1", "max_parallel": 5, "kind": "vllm", "fleet": GROUP}
# The fleet's board, and one on the host's own endpoint (`local`), which no fleet shares.
BOARDS = [{"name": "fleet", "endpoint": "gpu-a"}, {"name": "default", "max_parallel": 2}]

PLAY = """\
- name: The role's fleet tasks, as site.yml runs them
  hosts: {group}
  gather_facts: true
  gather_subset: [min]
  tasks:
    - name: Preflight
      ansible.builtin.import_role:
        name: hermes_pacer
        tasks_from: preflight.yml
    - name: Settings
      ansible.builtin.import_role:
        name: hermes_pacer
        tasks_from: settings.yml
    - name: Fleet report
      ansible.builtin.import_role:
        name: hermes_pacer
        tasks_from: fleet.yml
"""


def _inventory(
    base: Path,
    group_endpoint: dict,
    host_endpoints: dict[str, dict] | None = None,
    hosts: list[str] = HOSTS,
    members: list[str] | None = None,
) -> Path:
    """hosts.yml in `base`: every host in hermes_hosts, `members` (default: all) in the fleet's
    group; the group's endpoint in group_vars, a host's own entry of it in host_vars."""
    local = {"ansible_connection": "local", "ansible_python_interpreter": PYTHON}
    inventory = {
        "all": {
            "children": {
                "hermes_hosts": {"hosts": {name: local for name in hosts}},
                GROUP: {"hosts": {name: None for name in (hosts if members is None else members)}},
            }
        }
    }
    (base / "group_vars").mkdir(parents=True)
    (base / "host_vars").mkdir()
    (base / "group_vars" / "hermes_hosts.yml").write_text(
        yaml.safe_dump({"hermes_pacer_endpoints": [group_endpoint], "hermes_pacer_boards": BOARDS})
    )
    for name in hosts:
        own = {"hermes_pacer_settings_dir": str(host.settings_dir(base / name / "etc"))}
        if name in (host_endpoints or {}):
            own["hermes_pacer_endpoints"] = [host_endpoints[name]]
        (base / "host_vars" / f"{name}.yml").write_text(yaml.safe_dump(own))
    path = base / "hosts.yml"
    path.write_text(yaml.safe_dump(inventory))
    return path


def _converge(inventory: Path, *options: str, group: str = GROUP, home: Path | None = None, **extra):
    """Preflight, settings and the fleet report on every host of the group."""
    home = home or inventory.parent
    playbook = home / "fleet.yml"
    playbook.write_text(PLAY.format(group=group))
    variables = {
        "hermes_pacer_effective_scheduler": "cron",
        "hermes_pacer_user_home": str(home / "home"),
        "hermes_pacer_bin": "/usr/bin/true",
        "hermes_pacer_textfile_dir": "",
        "hermes_pacer_fleet_time_sync_check": False,  # this machine runs none
    } | extra
    return ansible_playbook("-i", str(inventory), str(playbook), *options, extra=variables)


def _recap(output: str) -> dict[str, dict[str, int]]:
    recap = output.split("PLAY RECAP", 1)[1]
    return {
        name: {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", line)}
        for name, line in re.findall(r"^(\S+)\s+:(.*)$", recap, re.M)
    }


def _values(base: Path, name: str, board: str) -> dict[str, str]:
    return settings.read_file(host.settings_file(board, host.settings_dir(base / name / "etc")))


def _fleet_keys(values: dict[str, str]) -> dict[str, str]:
    return {key: value for key, value in values.items() if key.startswith("PACER_FLEET")}


@pytest.fixture(scope="module")
def converged(tmp_path_factory):
    """A fleet of two at cap 5, hermes-02 with a floor of 2 of its own: (base, first converge)."""
    base = tmp_path_factory.mktemp("fleet")
    for name in HOSTS:
        (base / name / "etc").mkdir(parents=True)
    inventory = _inventory(base, GPU_A, {"hermes-02": GPU_A | {"min_share": 2}})
    play = _converge(inventory)
    assert play.returncode == 0, play.stdout[-4000:] + play.stderr[-2000:]
    return base, inventory, play


def test_each_host_renders_its_place_share_floor_and_reserve(converged):
    """Floors first (0 and 2), the other 3 evenly, the remainder to the first host: shares 2 and 3;
    each host keeps the other's floor free."""
    base, _, _ = converged
    common = {
        "PACER_FLEET": GROUP,
        "PACER_FLEET_HOSTS": "2",
        "PACER_FLEET_SLICE_SECONDS": "15",
        "PACER_FLEET_STARTUP_SECONDS": "10",
    }
    expected = {
        "hermes-01": common
        | {
            "PACER_FLEET_INDEX": "0",
            "PACER_FLEET_SHARE": "2",
            "PACER_FLEET_MIN_SHARE": "0",
            "PACER_FLEET_RESERVE": "2",
        },
        "hermes-02": common
        | {
            "PACER_FLEET_INDEX": "1",
            "PACER_FLEET_SHARE": "3",
            "PACER_FLEET_MIN_SHARE": "2",
            "PACER_FLEET_RESERVE": "0",
        },
    }
    for name in HOSTS:
        values = _values(base, name, "fleet")
        assert _fleet_keys(values) == expected[name], name
        assert all(key in host.SETTINGS_KEYS for key in values)
        # As the pass reads it.
        fleet = settings.load(values).endpoint.fleet
        assert (fleet.name, fleet.hosts, fleet.index, fleet.share, fleet.min_share, fleet.reserve) == (
            GROUP,
            2,
            HOSTS.index(name),
            int(expected[name]["PACER_FLEET_SHARE"]),
            int(expected[name]["PACER_FLEET_MIN_SHARE"]),
            int(expected[name]["PACER_FLEET_RESERVE"]),
        )
        assert (fleet.slice_seconds, fleet.startup_seconds) == (15, 10)
        assert values["PACER_ENDPOINT_MAX_PARALLEL"] == "5"


def test_a_board_on_no_fleet_endpoint_gets_no_fleet_settings(converged):
    base, _, _ = converged
    for name in HOSTS:
        values = _values(base, name, "default")
        assert values["PACER_ENDPOINT"] == "local"
        assert _fleet_keys(values) == {}
        assert settings.load(values).endpoint.fleet is None


def test_the_converge_says_each_hosts_place_scheme_and_shares(converged):
    _, _, play = converged
    text = " ".join(play.stdout.split())
    for place in ("this host is 1 of 2 (hermes-01, hermes-02)", "this host is 2 of 2 (hermes-01, hermes-02)"):
        assert f"gpu-a: fleet {GROUP}, {place}" in text, play.stdout[-4000:]
    assert "Sliced admission while the endpoint reports its load" in text
    assert "Static shares while it reports none: hermes-01 2, hermes-02 3 of its 5" in text
    assert "WARNING" not in text


def test_a_second_converge_changes_nothing_even_limited_to_one_host(converged):
    """The place comes from the group, not from the hosts the play runs on: --limit keeps it."""
    _, inventory, play = converged
    assert {name: _recap(play.stdout)[name]["changed"] for name in HOSTS} == {"hermes-01": 2, "hermes-02": 2}
    again = _converge(inventory)
    assert again.returncode == 0, again.stdout[-3000:]
    assert {name: _recap(again.stdout)[name]["changed"] for name in HOSTS} == {"hermes-01": 0, "hermes-02": 0}
    limited = _converge(inventory, "--limit", "hermes-02")
    assert limited.returncode == 0, limited.stdout[-3000:]
    assert _recap(limited.stdout)["hermes-02"]["changed"] == 0
    assert "this host is 2 of 2" in limited.stdout


def test_a_fleet_removed_from_the_endpoint_leaves_no_fleet_settings(tmp_path):
    for name in HOSTS:
        (tmp_path / name / "etc").mkdir(parents=True)
    play = _converge(_inventory(tmp_path, GPU_A))
    assert play.returncode == 0, play.stdout[-3000:]
    assert _values(tmp_path, "hermes-01", "fleet")["PACER_FLEET_SHARE"] == "3"
    single = tmp_path / "single"
    single.mkdir()
    alone = {key: value for key, value in GPU_A.items() if key != "fleet"}
    inventory = _inventory(single, alone)
    for name in HOSTS:  # the same settings files as before
        (single / "host_vars" / f"{name}.yml").write_text(
            yaml.safe_dump({"hermes_pacer_settings_dir": str(host.settings_dir(tmp_path / name / "etc"))})
        )
    play = _converge(inventory)
    assert play.returncode == 0, play.stdout[-3000:]
    for name in HOSTS:
        values = _values(tmp_path, name, "fleet")
        assert _fleet_keys(values) == {} and values["PACER_ENDPOINT"] == "gpu-a"
        assert _recap(play.stdout)[name]["changed"] == 1
    assert "fleet gpu_a_fleet" not in play.stdout


def test_a_fleet_larger_than_the_cap_is_warned_about(tmp_path):
    """Three hosts on an endpoint that serves 2: static shares of 1 each send it 3."""
    hosts = [*HOSTS, "hermes-03"]
    for name in hosts:
        (tmp_path / name / "etc").mkdir(parents=True)
    play = _converge(_inventory(tmp_path, GPU_A | {"max_parallel": 2, "kind": "ollama"}, hosts=hosts))
    assert play.returncode == 0, play.stdout[-3000:]
    text = " ".join(play.stdout.split())
    assert "Static shares always (kind ollama reports no load): hermes-01 1, hermes-02 1, hermes-03 1" in text
    assert f"WARNING: fleet {GROUP} has 3 hosts but gpu-a serves 2 at once (max_parallel)" in text
    assert "they can send it 3" in text
    assert [_values(tmp_path, name, "fleet")["PACER_FLEET_SHARE"] for name in hosts] == ["1", "1", "1"]


def test_the_example_inventorys_fleet_passes_preflight(tmp_path):
    """inventory/example: big is shared by big_fleet, gpu-02 with a floor of 2 of the 8."""
    example = REPO / "inventory" / "example" / "hosts.yml"
    play = _converge(example, "--check", group="big_fleet", home=tmp_path, ansible_connection="local")
    assert play.returncode == 0, play.stdout[-4000:] + play.stderr[-2000:]
    text = " ".join(play.stdout.split())
    for place in ("1 of 2", "2 of 2"):
        assert f"big: fleet big_fleet, this host is {place} (gpu-01.example.net, gpu-02.example.net)" in text
    assert "gpu-01.example.net 3, gpu-02.example.net 5 of its 8" in text, play.stdout[-3000:]


# (group's entry, host_vars entries, members of the group, hosts the play runs on, extra vars, message)
BAD = {
    "unknown_group": (
        GPU_A | {"fleet": "gpu_b_fleet"},
        {},
        None,
        GROUP,
        {},
        "gpu-a has fleet=gpu_b_fleet, which is not an inventory group: expected the inventory group",
    ),
    "host_not_in_group": (
        GPU_A,
        {},
        ["hermes-01"],
        "hermes-02",
        {},
        "gpu-a has fleet=gpu_a_fleet, which is a group without this host (hermes-02)",
    ),
    "floors_above_the_cap": (
        GPU_A | {"min_share": 3},
        {},
        None,
        GROUP,
        {},
        "the floors (min_share) of gpu-a in fleet gpu_a_fleet are hermes-01 3, hermes-02 3: "
        "expected integers from 0 that add up to at most its max_parallel=5",
    ),
    "negative_floor": (
        GPU_A | {"min_share": -1},
        {},
        None,
        GROUP,
        {},
        "hermes_pacer_endpoints[0] (gpu-a) is invalid",
    ),
    "startup_not_below_the_slice": (
        GPU_A,
        {},
        None,
        GROUP,
        {"hermes_pacer_fleet_slice_seconds": 10, "hermes_pacer_fleet_startup_seconds": 10},
        "hermes_pacer_fleet_startup_seconds an integer from 1 to hermes_pacer_fleet_slice_seconds - 1 "
        "(got 10)",
    ),
    "slice_too_long": (
        GPU_A,
        {},
        None,
        GROUP,
        {"hermes_pacer_fleet_slice_seconds": 301},
        "hermes_pacer_fleet_slice_seconds must be an integer from 2 to 300 (got 301)",
    ),
    "members_disagree": (
        GPU_A,
        {"hermes-02": GPU_A | {"max_parallel": 8}},
        None,
        GROUP,
        {},
        "gpu-a of fleet gpu_a_fleet differs between its members: hermes-01 has "
        "url=http://10.0.0.9:8000/v1, max_parallel=5, kind=vllm, fleet=gpu_a_fleet; "
        "hermes-02 has url=http://10.0.0.9:8000/v1, max_parallel=8",
    ),
    "member_without_the_fleet": (
        GPU_A,
        {"hermes-02": {key: value for key, value in GPU_A.items() if key != "fleet"}},
        None,
        "hermes-01",
        {},
        "hermes-02 has url=http://10.0.0.9:8000/v1, max_parallel=5, kind=vllm, fleet=unset",
    ),
}


@pytest.mark.parametrize("case", BAD.values(), ids=BAD.keys())
def test_bad_fleet_input_stops_site_yml_before_any_change(tmp_path, case):
    endpoint, own, members, targets, extra, message = case
    inventory = _inventory(tmp_path, endpoint, own, members=members)
    play = ansible_playbook(
        "-i",
        str(inventory),
        "site.yml",
        "--check",
        extra={"hermes_pacer_hosts": targets, "hermes_pacer_fleet_time_sync_check": False} | extra,
    )
    assert play.returncode != 0
    assert message in " ".join(play.stdout.split()), play.stdout[-4000:]
    recap = _recap(play.stdout)
    assert recap and all(counts["changed"] == 0 for counts in recap.values()), recap


def _time_sync_runs() -> bool:
    names = {"systemd-timesyn", "chronyd", "ntpd", "openntpd"}
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            if status.read_text().split("\n", 1)[0].split()[-1] in names:
                return True
        except (OSError, IndexError):
            continue
    return False


@pytest.mark.skipif(_time_sync_runs(), reason="a time sync service runs on this machine")
def test_a_fleet_host_without_time_sync_stops_the_play_unless_the_check_is_off(tmp_path):
    for name in HOSTS:
        (tmp_path / name / "etc").mkdir(parents=True)
    inventory = _inventory(tmp_path, GPU_A)
    play = _converge(inventory, "--check", hermes_pacer_fleet_time_sync_check=True)
    assert play.returncode != 0
    text = " ".join(play.stdout.split())
    assert "but no time sync service runs on hermes-01" in text, play.stdout[-3000:]
    assert "or set hermes_pacer_fleet_time_sync_check: false where the clock is kept otherwise" in text
    assert all(counts["changed"] == 0 for counts in _recap(play.stdout).values())
    assert not list((tmp_path / "hermes-01" / "etc").iterdir())
    off = _converge(inventory, "--check", hermes_pacer_fleet_time_sync_check=False)
    assert off.returncode == 0, off.stdout[-3000:]


def test_the_role_and_the_pass_accept_the_same_fleet_names():
    role_vars = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())
    rule = re.compile(role_vars["_hermes_pacer_fleet_name_rule"])
    names = ["gpu_a_fleet", "GPU.a-1", "_x", "a" * 64, "a" * 65, "-a", ".a", "a b", "", "a$", "a%"]
    assert [bool(rule.match(n)) for n in names] == [bool(settings.FLEET_NAME.match(n)) for n in names]
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    spec = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]
    for name in ("slice_seconds", "startup_seconds", "time_sync_check"):
        key = f"hermes_pacer_fleet_{name}"
        assert spec["options"][key]["default"] == defaults[key], key
