"""The host contract: what the role's real templates render is what the package reads back.

ansible-playbook renders the role's templates (with its defaults and vars) into a private /etc;
the settings files must load as the pass loads them, and every name the units and the cron line
carry must be the one host.py computes. A template edit that changes the contract fails here.
"""

from __future__ import annotations

import re
import shlex
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from ansible_run import ansible_playbook
from hermes_pacer import cronrules, host, paths, settings

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
ROLE = REPO / "roles" / "hermes_pacer"

# `keeper` is a valid slug: its pacer must not take the board keeper's names. ops and keeper share
# the endpoint gpu0 (keeper without a cap of its own: the endpoint's), default is on `local`.
ENDPOINTS = [{"name": "gpu0", "url": "http://127.0.0.1:8000/v1", "max_parallel": 3, "kind": "vllm"}]
BOARDS = [
    {"name": "default", "max_parallel": 2, "runs_per_minute": 12},
    {"name": "ops", "max_parallel": 1, "runs_per_minute": 6, "endpoint": "gpu0"},
    {"name": "keeper", "runs_per_minute": 4, "endpoint": "gpu0"},
]
BACKUP_UNITS = ["hermes-board-backup.service", "hermes-board-backup.timer"]

PLAY = """
- name: Render the role's templates as the role does
  hosts: localhost
  connection: local
  gather_facts: true
  gather_subset: [min]
  vars_files:
    - {role}/defaults/main.yml
    - {role}/vars/main.yml
  tasks:
    - name: Settings files
      ansible.builtin.template:
        src: {role}/templates/pacer.env.j2
        dest: "{{{{ _hermes_pacer_settings_path | format(board.name) }}}}"
        mode: "0644"
      loop: "{{{{ hermes_pacer_boards }}}}"
      loop_control: {{loop_var: board}}
    - name: Units and timers
      ansible.builtin.template:
        src: "{role}/templates/hermes-pacer.{{{{ item.1 }}}}.j2"
        dest: "{{{{ hermes_pacer_systemd_dir }}}}/{{{{ stem }}}}.{{{{ item.1 }}}}"
        mode: "0644"
      loop: "{{{{ hermes_pacer_boards | product(['service', 'timer']) | list }}}}"
      vars:
        board: "{{{{ item.0 }}}}"
        stem: "{{{{ _hermes_pacer_unit_stem | format(item.0.name) }}}}"
      when: hermes_pacer_effective_scheduler == 'systemd'
    - name: Board keeper and backup units
      ansible.builtin.template:
        src: "{role}/templates/{{{{ item }}}}.j2"
        dest: "{{{{ hermes_pacer_systemd_dir }}}}/{{{{ item }}}}"
        mode: "0644"
      loop: "{{{{ [_hermes_pacer_keeper_unit] + {backup_units} }}}}"
      when: hermes_pacer_effective_scheduler == 'systemd'
    - name: Cron file
      ansible.builtin.template:
        src: {role}/templates/cron.j2
        dest: "{{{{ hermes_pacer_cron_file }}}}"
        mode: "0644"
      when: hermes_pacer_effective_scheduler == 'cron'
"""


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """Per scheduler: the private /etc and Hermes home the templates were rendered into, once."""
    return {s: _render(tmp_path_factory.mktemp(s), s, textfile_dir=TEXTFILE_DIRS[s]) for s in TEXTFILE_DIRS}


# Metrics on (Debian's node_exporter found) for the systemd host, off for the cron host.
TEXTFILE_DIRS = {"systemd": host.DEBIAN_TEXTFILE_DIR, "cron": ""}


def _render(
    tmp_path: Path,
    scheduler: str,
    boards: list[dict] = BOARDS,
    endpoints: list[dict] = ENDPOINTS,
    textfile_dir: str = "",
) -> tuple[Path, Path]:
    """(the private /etc, the Hermes home) after the role's templates rendered into them."""
    etc, home = tmp_path / "etc", tmp_path / "home"
    for folder in (etc / "hermes-pacer", etc / "systemd" / "system", etc / "cron.d", home):
        folder.mkdir(parents=True)
    playbook = tmp_path / "render.yml"
    playbook.write_text(PLAY.format(role=ROLE, backup_units=BACKUP_UNITS))
    extra = {
        "hermes_pacer_boards": boards,
        "hermes_pacer_endpoints": endpoints,
        "hermes_pacer_effective_scheduler": scheduler,
        "hermes_pacer_user_home": str(home),
        "hermes_pacer_bin": shutil.which("true"),
        "hermes_pacer_lock_dir_by_root": False,
        "hermes_pacer_settings_dir": str(etc / "hermes-pacer"),
        "hermes_pacer_systemd_dir": str(etc / "systemd" / "system"),
        "hermes_pacer_cron_file": str(etc / "cron.d" / "hermes-pacer"),
        "hermes_pacer_log_dir": str(tmp_path / "log"),
        "hermes_pacer_textfile_dir": textfile_dir,
        "ansible_python_interpreter": sys.executable,
    }
    play = ansible_playbook("-i", "localhost,", str(playbook), extra=extra)
    assert play.returncode == 0, play.stdout[-3000:] + play.stderr[-2000:]
    return etc, home


def _lines(path: Path, key: str) -> list[str]:
    return [line.split("=", 1)[1] for line in path.read_text().splitlines() if line.startswith(key + "=")]


def _settings(etc: Path, board: dict, scheduler: str, home: Path) -> dict[str, str]:
    """The board's settings file, read and loaded as the pass does, carrying every required key."""
    path = host.settings_file(board["name"], host.settings_dir(etc))
    values = settings.read_file(path)
    loaded = settings.load(values)
    assert (loaded.board, loaded.max_parallel, loaded.runs_per_minute) == (
        board["name"],
        board.get("max_parallel", ENDPOINTS[0]["max_parallel"]),
        board["runs_per_minute"],
    )
    missing = [key for key in host.required_keys(scheduler) if not values.get(key)]
    assert not missing, f"{path} lacks {missing}"
    assert values["PACER_SCHEDULER"] == scheduler and values["HOME"] == str(home)
    return values


def test_role_defaults_are_the_host_defaults():
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    role_vars = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())
    assert defaults["hermes_pacer_settings_dir"] == str(host.SETTINGS_DIR)
    assert defaults["hermes_pacer_lock_dir"] == host.DEFAULT_LOCK_DIR
    assert defaults["hermes_pacer_log_dir"] == host.DEFAULT_LOG_DIR
    assert role_vars["hermes_pacer_cron_file"] == str(host.CRON_FILE)
    assert role_vars["hermes_pacer_systemd_dir"] == str(host.SYSTEMD_DIR)
    assert role_vars["_hermes_pacer_keeper_unit"] == host.KEEPER_UNIT
    # The keeper's name before 0.2.0 is a board's pacing unit now: converge removes the keeper there.
    assert role_vars["_hermes_pacer_old_keeper_unit"] == host.unit_name("keeper")
    assert set(host.SCRIPT_NAMES) <= set(role_vars["hermes_pacer_script_names"])
    assert tuple(role_vars["_hermes_pacer_endpoint_kinds"]) == host.ENDPOINT_KINDS
    assert defaults["hermes_pacer_state_dir"] == host.DEFAULT_STATE_DIR
    assert role_vars["_hermes_pacer_debian_textfile_dir"] == host.DEBIAN_TEXTFILE_DIR
    metrics = Path("/m")
    assert role_vars["_hermes_pacer_metrics_board_file"] % "b" == host.metrics_file(metrics, "b").name
    assert (
        role_vars["_hermes_pacer_metrics_endpoint_file"] % "e"
        == host.endpoint_metrics_file(metrics, "e").name
    )
    spec = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]
    kind = spec["options"]["hermes_pacer_endpoints"]["options"]["kind"]
    assert tuple(kind["choices"]) == host.ENDPOINT_KINDS


@pytest.mark.parametrize("scheduler", ["systemd", "cron"])
def test_the_settings_files_carry_the_endpoint_budget(rendered, scheduler):
    """Each board's file names its endpoint, the endpoint's cap and url (when known) and every
    board on it; the boards that name none share `local`, whose url the pass reads from config.yaml."""
    etc, home = rendered[scheduler]
    common = {"PACER_ENDPOINT_TIMEOUT": "2", "PACER_ENDPOINT_RAMP_SECONDS": "60"}
    gpu0 = common | {
        "PACER_ENDPOINT": "gpu0",
        "PACER_ENDPOINT_URL": "http://127.0.0.1:8000/v1",
        "PACER_ENDPOINT_KIND": "vllm",
        "PACER_ENDPOINT_MAX_PARALLEL": "3",
        "PACER_ENDPOINT_BOARDS": "keeper:3,ops:1",
    }
    local = common | {
        "PACER_ENDPOINT": "local",
        "PACER_ENDPOINT_KIND": "auto",
        "PACER_ENDPOINT_MAX_PARALLEL": "2",
        "PACER_ENDPOINT_BOARDS": "default:2",
    }
    for board, expected in (("default", local), ("ops", gpu0), ("keeper", gpu0)):
        values = _settings(etc, next(b for b in BOARDS if b["name"] == board), scheduler, home)
        endpoint = {key: value for key, value in values.items() if key.startswith("PACER_ENDPOINT")}
        assert endpoint == expected, board
        assert all(key in host.SETTINGS_KEYS for key in values)


@pytest.mark.parametrize("scheduler", ["systemd", "cron"])
def test_the_settings_files_name_the_state_and_metrics_directories(rendered, scheduler):
    """Every board's passes write their status into the state directory; their metrics into its
    metrics/ subdirectory only where node_exporter reads them (systemd here), else none."""
    etc, home = rendered[scheduler]
    for board in BOARDS:
        values = _settings(etc, board, scheduler, home)
        assert values["PACER_STATE_DIR"] == host.DEFAULT_STATE_DIR
        assert values.get("PACER_METRICS_DIR") == (
            host.DEFAULT_METRICS_DIR if TEXTFILE_DIRS[scheduler] else None
        )
        if scheduler == "systemd":
            service = host.systemd_dir(etc) / host.unit_name(board["name"])
            assert f"-{host.DEFAULT_STATE_DIR}" in _lines(service, "ReadWritePaths")


def test_the_systemd_units_run_the_settings_files(rendered):
    etc, home = rendered["systemd"]
    units = host.systemd_dir(etc)
    for board in BOARDS:
        name = board["name"]
        values = _settings(etc, board, "systemd", home)
        assert values["PACER_JOURNAL_ID"] == host.journal_id(name)
        service = units / host.unit_name(name)
        assert _lines(service, "EnvironmentFile") == [str(host.settings_file(name, host.settings_dir(etc)))]
        assert _lines(service, "Environment") == [], "pacer settings belong in the settings file"
        assert _lines(service, "SyslogIdentifier") == [values["PACER_JOURNAL_ID"]]
        assert _lines(service, "ExecStart") == [values["PACER_SCRIPT"]]
        assert Path(values["PACER_SCRIPT"]).name == host.CAPPED_SCRIPT
        assert _lines(service, "User") == [values["PACER_USER"]]
        timer = units / host.timer_name(name)
        assert _lines(timer, "Unit") == [host.unit_name(name)]
        (interval,) = _lines(timer, "OnUnitActiveSec")
        assert re.fullmatch(r"\d+ms", interval)
        assert round(60000 / int(interval[:-2])) == int(values["RUNS_PER_MINUTE"])
    found = paths.managed(etc, systemd_running=False)
    assert found.problems == [] and found.orphans == []
    assert sorted((p.board, p.scheduler, p.problem) for p in found.pacers) == [
        ("default", "systemd", ""),
        ("keeper", "systemd", ""),
        ("ops", "systemd", ""),
    ]


def test_no_rendered_unit_takes_another_ones_name(rendered):
    """A unit per board and timer, the keeper's and the backup's: as many files as were rendered
    (a name written twice leaves one file), each with its own journal identifier."""
    etc, home = rendered["systemd"]
    units = host.systemd_dir(etc)
    names = sorted(p.name for p in units.iterdir())
    assert len(names) == 2 * len(BOARDS) + 1 + len(BACKUP_UNITS), names
    assert names == sorted(
        [host.KEEPER_UNIT, *BACKUP_UNITS]
        + [name for b in BOARDS for name in (host.unit_name(b["name"]), host.timer_name(b["name"]))]
    )
    identifiers = [i for name in names for i in _lines(units / name, "SyslogIdentifier")]
    assert len(identifiers) == len(set(identifiers)), identifiers
    keeper = units / host.KEEPER_UNIT
    assert _lines(keeper, "SyslogIdentifier") == [host.KEEPER_ID]
    (command,) = _lines(keeper, "ExecStart")
    assert command.split()[1] == "keep-open"
    assert command.split()[2:] == ["--hermes-root", f"{home}/.hermes"] + [
        word for b in BOARDS for word in ("--board", b["name"])
    ]
    assert len(list(host.settings_dir(etc).glob(f"*{host.SETTINGS_SUFFIX}"))) == len(BOARDS)


@pytest.mark.parametrize(
    ("endpoints", "expected"),
    [
        # Implicit: two boards at caps 1 and 3 share 3, as one board at 3 did alone.
        ([], {"PACER_ENDPOINT_MAX_PARALLEL": "3", "PACER_ENDPOINT_KIND": "auto"}),
        # Declared, `local` replaces the implicit endpoint: its cap, url and kind apply.
        (
            [{"name": "local", "url": "https://llm.internal/v1", "max_parallel": 8, "kind": "llamacpp"}],
            {
                "PACER_ENDPOINT_MAX_PARALLEL": "8",
                "PACER_ENDPOINT_KIND": "llamacpp",
                "PACER_ENDPOINT_URL": "https://llm.internal/v1",
            },
        ),
    ],
    ids=["implicit", "declared"],
)
def test_the_boards_that_name_no_endpoint_share_local(tmp_path, endpoints, expected):
    boards = [{"name": "default", "max_parallel": 1}, {"name": "ops", "max_parallel": 3}]
    etc, _ = _render(tmp_path, "cron", boards, endpoints)
    for board in boards:
        values = settings.read_file(host.settings_file(board["name"], host.settings_dir(etc)))
        assert values["MAX_PARALLEL"] == str(board["max_parallel"])
        endpoint = {key: value for key, value in values.items() if key.startswith("PACER_ENDPOINT_")}
        assert endpoint == expected | {
            "PACER_ENDPOINT_BOARDS": "default:1,ops:3",
            "PACER_ENDPOINT_TIMEOUT": "2",
            "PACER_ENDPOINT_RAMP_SECONDS": "60",
        }
        assert values["PACER_ENDPOINT"] == "local"


def test_the_keeper_under_its_old_name_is_no_pacer(tmp_path):
    """A host converged before 0.2.0 ran the keeper as hermes-pacer-keeper.service: verify holds
    it against no board, and says site.yml moves it."""
    etc, _ = _render(tmp_path, "systemd")
    units = host.systemd_dir(etc)
    old = units / host.unit_name("keeper")
    (units / host.KEEPER_UNIT).rename(old)
    (units / host.timer_name("keeper")).unlink()
    host.settings_file("keeper", host.settings_dir(etc)).unlink()
    found = paths.managed(etc, systemd_running=False)
    assert sorted(p.board for p in found.pacers) == ["default", "ops"]
    assert found.orphans == []
    assert found.problems == [
        f"{old} runs the board keeper under a pacer's name (as hermes-pacer before 0.2.0 named it): "
        f"site.yml moves it to {host.KEEPER_UNIT}"
    ]
    assert paths.other_units(etc) == []  # the keeper dispatches nothing


def test_the_cron_lines_run_the_settings_files(rendered):
    etc, home = rendered["cron"]
    text = host.cron_file(etc).read_text()
    loops = {}
    for line in cronrules.lines(text, None):
        for argv, _env in cronrules.commands(line):
            if Path(argv[0]).name == host.SUBMINUTE_SCRIPT:
                loops[cronrules.settings_option(argv)] = (line, argv)
    for board in BOARDS:
        name = board["name"]
        values = _settings(etc, board, "cron", home)
        path = str(host.settings_file(name, host.settings_dir(etc)))
        line, argv = loops.pop(path)
        assert line.user == values["PACER_USER"]
        assert argv[0] == values["PACER_SCRIPT"]
        assert shlex.split(line.command.partition(">>")[2])[0] == values["PACER_LOG_FILE"]
        assert values["PACER_LOG_FILE"] == str(host.log_file(name, etc.parent / "log"))
        # The board, as cron-line readers (verify, adoption) work it out, is the file's.
        assert [d.board for d in cronrules.dispatches(line)] == [name]
    assert loops == {}, f"cron lines of no board: {loops}"
    found = paths.managed(etc, systemd_running=False)
    assert found.problems == [] and found.orphans == []
    assert sorted((p.board, p.cap, p.cadence_seconds, p.problem) for p in found.pacers) == [
        ("default", 2, 5.0, ""),
        ("keeper", 3, 15.0, ""),
        ("ops", 1, 10.0, ""),
    ]


@pytest.mark.parametrize("scheduler", ["systemd", "cron"])
def test_a_settings_file_with_no_scheduler_entry_or_an_entry_without_one_fails(tmp_path, scheduler):
    etc, _ = _render(tmp_path, scheduler)
    ops = host.settings_file("ops", host.settings_dir(etc))
    ops.unlink()
    if scheduler == "systemd":
        (host.systemd_dir(etc) / host.unit_name("default")).unlink()
    else:
        cron = host.cron_file(etc)
        cron.write_text(
            "".join(line for line in cron.read_text().splitlines(True) if "default.env" not in line)
        )
    found = paths.managed(etc, systemd_running=False)
    problems = {pacer.board: pacer.problem for pacer in found.pacers}
    assert sorted(problems) == ["default", "keeper"] and problems["keeper"] == ""
    assert "run site.yml" in problems["default"]
    assert [orphan.board for orphan in found.orphans] == ["ops"]
    assert any("ops" in problem and "settings file" in problem for problem in found.problems)
