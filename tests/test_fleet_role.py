"""The role's side of a fleet (docs/fleet.md), from a two-host inventory, with the role's own tasks.

Both hosts are this machine (a local connection), each with its own settings directory: preflight,
settings.yml and the fleet report run as site.yml runs them, and each host's settings files are
read back as the pass reads them. Bad inventories go through site.yml in check mode, all in one
play, a pair of hosts each: every host stops in preflight, naming the variable, and nothing changes.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from ansible_run import ansible_playbook
from hermes_pacer import host, settings

pytestmark = pytest.mark.slow

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
    host_vars: dict[str, dict] | None = None,
) -> Path:
    """hosts.yml in `base`: every host in hermes_hosts, `members` (default: all) in the fleet's
    group; the group's endpoint in group_vars, a host's own entry of it in host_vars, with its
    `host_vars`. No host checks for a time sync service unless its host_vars say so: this machine
    runs none."""
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
        own = {
            "hermes_pacer_settings_dir": str(host.settings_dir(base / name / "etc")),
            "hermes_pacer_fleet_time_sync_check": False,
        }
        if name in (host_endpoints or {}):
            own["hermes_pacer_endpoints"] = [host_endpoints[name]]
        own |= (host_vars or {}).get(name, {})
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


@pytest.mark.parametrize(
    ("hosts", "cap", "floors", "shares"),
    [
        # The remainder goes to the host that would get none: 2 + 1, the cap exactly.
        (HOSTS, 3, [2, 0], ["2", "1"]),
        # More hosts than the endpoint serves: 1 each is already over it.
        ([*HOSTS, "hermes-03"], 2, [0, 0, 0], ["1", "1", "1"]),
        # A floor of the whole cap leaves the other host nothing, and it still sends 1.
        (HOSTS, 2, [2, 0], ["2", "1"]),
    ],
)
def test_static_shares_fit_the_cap_or_are_warned_about(tmp_path, hosts, cap, floors, shares):
    for name in hosts:
        (tmp_path / name / "etc").mkdir(parents=True)
    endpoint = GPU_A | {"max_parallel": cap, "kind": "ollama"}
    own = {name: endpoint | {"min_share": floor} for name, floor in zip(hosts, floors, strict=True) if floor}
    play = _converge(_inventory(tmp_path, endpoint, host_endpoints=own, hosts=hosts))
    assert play.returncode == 0, play.stdout[-3000:]
    text = " ".join(play.stdout.split())
    listed = ", ".join(f"{name} {share}" for name, share in zip(hosts, shares, strict=True))
    assert f"Static shares always (kind ollama reports no load): {listed} of its {cap}" in text
    assert [_values(tmp_path, name, "fleet")["PACER_FLEET_SHARE"] for name in hosts] == shares
    total = sum(int(share) for share in shares)
    warning = f"WARNING: the static shares of fleet {GROUP} ({len(hosts)} hosts, floors"
    if total <= cap:
        assert warning not in text
        return
    assert warning in text
    assert f"add up to {total}, but gpu-a serves {cap} at once (max_parallel)" in text


def test_the_example_inventorys_fleet_passes_preflight(tmp_path):
    """inventory/example: big is shared by big_fleet, gpu-02 with a floor of 2 of the 8."""
    example = REPO / "inventory" / "example" / "hosts.yml"
    play = _converge(
        example,
        "--check",
        group="big_fleet",
        home=tmp_path,
        ansible_connection="local",
        hermes_pacer_fleet_time_sync_check=False,  # this machine runs none
    )
    assert play.returncode == 0, play.stdout[-4000:] + play.stderr[-2000:]
    text = " ".join(play.stdout.split())
    for place in ("1 of 2", "2 of 2"):
        assert f"big: fleet big_fleet, this host is {place} (gpu-01.example.net, gpu-02.example.net)" in text
    assert "gpu-01.example.net 3, gpu-02.example.net 5 of its 8" in text, play.stdout[-3000:]


# The bad inventories, all in one play (one ansible-playbook run for every case). Each case is a pair
# of hosts of its own, {first} and {second} (<case>-01 and -02), both in hermes_hosts and in the
# case's group {group} (<case>_fleet); "{group}" in an entry or a message stands for it, and so on.
CASE_A = GPU_A | {"fleet": "{group}"}


@dataclass(frozen=True)
class Bad:
    """site.yml runs on `on` of the pair and stops there in preflight; `message` is in the failure
    of the first of them."""

    message: str
    endpoint: dict = field(default_factory=lambda: CASE_A)  # each host's entry of gpu-a...
    own: dict[str, dict] = field(default_factory=dict)  # ...but these hosts' ("second": entry)
    members: tuple[str, ...] = ("first", "second")  # of the group
    on: tuple[str, ...] = ("first", "second")
    settings: dict = field(default_factory=dict)  # host_vars of both


BAD = {
    "unknown_group": Bad(
        "gpu-a has fleet=gpu_b_fleet, which is not an inventory group: expected the inventory group",
        endpoint=GPU_A | {"fleet": "gpu_b_fleet"},
    ),
    "host_not_in_group": Bad(
        "gpu-a has fleet={group}, which is a group without this host ({second})",
        members=("first",),
        on=("second",),
    ),
    "floors_above_the_cap": Bad(
        "the floors (min_share) of gpu-a in fleet {group} are {first} 3, {second} 3: "
        "expected integers from 0 that add up to at most its max_parallel=5",
        endpoint=CASE_A | {"min_share": 3},
    ),
    "negative_floor": Bad(
        "hermes_pacer_endpoints[0] (gpu-a) is invalid", endpoint=CASE_A | {"min_share": -1}
    ),
    "startup_not_below_the_slice": Bad(
        "hermes_pacer_fleet_startup_seconds an integer from 1 to hermes_pacer_fleet_slice_seconds - 1 "
        "(got 10)",
        settings={"hermes_pacer_fleet_slice_seconds": 10, "hermes_pacer_fleet_startup_seconds": 10},
    ),
    "slice_too_long": Bad(
        "hermes_pacer_fleet_slice_seconds must be an integer from 2 to 300 (got 301)",
        settings={"hermes_pacer_fleet_slice_seconds": 301},
    ),
    "members_disagree": Bad(
        "gpu-a of fleet {group} differs between its members: {first} has "
        "url=http://10.0.0.9:8000/v1, max_parallel=5, kind=vllm, fleet={group}; "
        "{second} has url=http://10.0.0.9:8000/v1, max_parallel=8",
        own={"second": CASE_A | {"max_parallel": 8}},
    ),
    "member_without_the_fleet": Bad(
        "{second} has url=http://10.0.0.9:8000/v1, max_parallel=5, kind=vllm, fleet=unset",
        own={"second": {key: value for key, value in GPU_A.items() if key != "fleet"}},
        on=("first",),
    ),
}


def _names(case: str) -> dict[str, str]:
    return {"group": f"{case}_fleet", "first": f"{case}-01", "second": f"{case}-02"}


def _bad_inventory(base: Path) -> Path:
    """hosts.yml in `base` with every case's pair, each host with its own settings directory and
    its own entry of gpu-a in host_vars; the boards in group_vars."""
    local = {"ansible_connection": "local", "ansible_python_interpreter": PYTHON}
    hosts, groups = {}, {}
    (base / "group_vars").mkdir()
    (base / "host_vars").mkdir()
    (base / "group_vars" / "hermes_hosts.yml").write_text(yaml.safe_dump({"hermes_pacer_boards": BOARDS}))
    for case, bad in BAD.items():
        names = _names(case)
        for place in ("first", "second"):
            entry = bad.own.get(place, bad.endpoint)
            own = {
                "hermes_pacer_settings_dir": str(host.settings_dir(base / names[place] / "etc")),
                "hermes_pacer_endpoints": [
                    {
                        key: value.format(**names) if isinstance(value, str) else value
                        for key, value in entry.items()
                    }
                ],
            } | bad.settings
            (base / "host_vars" / f"{names[place]}.yml").write_text(yaml.safe_dump(own))
            hosts[names[place]] = dict(local)
        groups[names["group"]] = {"hosts": {names[place]: None for place in bad.members}}
    inventory = {"all": {"children": {"hermes_hosts": {"hosts": hosts}, **groups}}}
    path = base / "hosts.yml"
    path.write_text(yaml.safe_dump(inventory))
    return path


# A failed task's line for a host, its result on one line: "fatal: [h]: FAILED! => {...}", or
# "failed: [h] (item=gpu-a) => {...}" for an item of a loop.
FAILED = re.compile(r"^(?:fatal|failed): \[([^\]]+)\].*? => (\{.*\})$", re.M)


def _failures(output: str) -> dict[str, str]:
    """Each host's failure messages, joined, whitespace as in one line."""
    failures: dict[str, list[str]] = {}
    for name, result in FAILED.findall(output):
        failures.setdefault(name, []).append(" ".join(str(json.loads(result).get("msg", "")).split()))
    return {name: " | ".join(messages) for name, messages in failures.items()}


@pytest.fixture(scope="module")
def bad_play(tmp_path_factory):
    """site.yml --check over every bad case at once: (the run, failures by host, recap by host)."""
    inventory = _bad_inventory(tmp_path_factory.mktemp("bad"))
    on = [_names(case)[place] for case, bad in BAD.items() for place in bad.on]
    play = ansible_playbook(
        "-i",
        str(inventory),
        "site.yml",
        "--check",
        extra={"hermes_pacer_hosts": ":".join(on), "hermes_pacer_fleet_time_sync_check": False},
    )
    assert play.returncode != 0, play.stdout[-4000:]
    assert "PLAY RECAP" in play.stdout, play.stdout[-4000:] + play.stderr[-4000:]
    return play, _failures(play.stdout), _recap(play.stdout)


@pytest.mark.parametrize("case", BAD)
def test_bad_fleet_input_stops_site_yml_before_any_change(bad_play, case):
    play, failures, recap = bad_play
    bad, names = BAD[case], _names(case)
    on = [names[place] for place in bad.on]
    for name in on:
        assert name in recap, play.stdout[-4000:]
        assert (recap[name]["failed"], recap[name]["changed"]) == (1, 0), (name, recap[name])
    assert bad.message.format(**names) in failures.get(on[0], ""), failures.get(on[0])


def _time_sync_runs() -> bool:
    names = {"systemd-timesyn", "chronyd", "ntpd", "ntpsec", "openntpd"}
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            if status.read_text().split("\n", 1)[0].split()[-1] in names:
                return True
        except (OSError, IndexError):
            continue
    return False


@pytest.mark.skipif(_time_sync_runs(), reason="a time sync service runs on this machine")
def test_a_fleet_host_without_time_sync_stops_the_play_unless_the_check_is_off(tmp_path):
    """One play: hermes-01 checks (the role's default), hermes-02 has the check off."""
    for name in HOSTS:
        (tmp_path / name / "etc").mkdir(parents=True)
    inventory = _inventory(
        tmp_path, GPU_A, host_vars={"hermes-01": {"hermes_pacer_fleet_time_sync_check": True}}
    )
    play = _converge(inventory, "--check")
    assert play.returncode != 0
    text = " ".join(play.stdout.split())
    assert "but no time sync service runs on hermes-01" in text, play.stdout[-3000:]
    assert "or set hermes_pacer_fleet_time_sync_check: false where the clock is kept otherwise" in text
    recap = _recap(play.stdout)
    assert (recap["hermes-01"]["failed"], recap["hermes-01"]["changed"]) == (1, 0), recap
    assert not list((tmp_path / "hermes-01" / "etc").iterdir())
    # The check off, hermes-02 went on to its fleet report.
    assert "runs on hermes-02" not in text and recap["hermes-02"]["failed"] == 0, play.stdout[-3000:]
    assert "this host is 2 of 2 (hermes-01, hermes-02)" in text


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
