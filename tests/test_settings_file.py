"""The host rules (host.py) and the settings file the role writes per board (settings.read_file)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from hermes_host import CAPPED
from hermes_pacer import host, settings

pytestmark = pytest.mark.fast

GOOD = """\
# hermes-pacer settings of board ops
BOARD=ops
MAX_PARALLEL=3
RUNS_PER_MINUTE=6
HERMES_BIN=/bin/true

HOME=/var/lib/hermes
PACER_LOG_FILE=/var/log/hermes/kanban-dispatch-ops.log
"""


def test_the_names_of_a_board():
    assert host.settings_file("ops") == Path("/etc/hermes-pacer/ops.env")
    assert host.board_of_settings_file(host.settings_file("ops")) == "ops"
    assert host.unit_name("ops") == "hermes-pacer-ops.service"
    assert host.timer_name("ops") == "hermes-pacer-ops.timer"
    assert host.board_of_unit(host.timer_name("my-board")) == "my-board"
    assert host.journal_id("ops") == "hermes-pacer-ops"
    assert host.log_file("ops") == Path("/var/log/hermes/kanban-dispatch-ops.log")
    assert host.log_file("ops", "/srv/log") == Path("/srv/log/kanban-dispatch-ops.log")
    lock = Path(host.DEFAULT_LOCK_DIR)
    assert host.pass_lock(lock, "ops") == lock / "board-ops.lock"
    assert host.loop_lock(lock, "ops") == lock / "subminute-ops.lock"
    assert host.cron_file(Path("/x/etc")) == Path("/x/etc/cron.d/hermes-pacer")
    assert host.settings_dir(Path("/x/etc")) == Path("/x/etc/hermes-pacer")


@pytest.mark.parametrize(
    ("raw", "slug", "refused"),
    [
        ("ops", "ops", False),
        (" OPS ", "ops", False),
        ("", "default", False),
        ("-x", "-x", True),
        ("a b", "a b", True),
    ],
)
def test_slugs_are_normalised_as_hermes_does(raw, slug, refused):
    assert host.normalise_slug(raw)[0] == slug
    assert bool(host.normalise_slug(raw)[1]) == refused
    assert host.SLUG.match("a" * 64) and not host.SLUG.match("a" * 65)


def test_required_keys_follow_the_scheduler():
    assert "PACER_LOG_FILE" in host.required_keys("cron") and "PACER_JOURNAL_ID" not in host.required_keys(
        "cron"
    )
    assert "PACER_JOURNAL_ID" in host.required_keys("systemd")
    assert {"BOARD", "MAX_PARALLEL", "RUNS_PER_MINUTE", "HERMES_BIN", "HOME"} <= set(
        host.required_keys("cron")
    )


def test_the_homes_of_a_root_are_the_root_and_its_profiles(tmp_path):
    (tmp_path / "profiles" / "b").mkdir(parents=True)
    (tmp_path / "profiles" / "a").mkdir()
    (tmp_path / "profiles" / "link").symlink_to(tmp_path / "profiles" / "a")
    (tmp_path / "profiles" / "file").write_text("")
    assert host.hermes_homes(tmp_path) == [tmp_path, *(tmp_path / "profiles" / n for n in ("a", "b", "link"))]
    assert host.hermes_homes(tmp_path, include_links=False) == [
        tmp_path,
        *(tmp_path / "profiles" / n for n in "ab"),
    ]


def test_a_good_file_is_read(tmp_path):
    path = tmp_path / "ops.env"
    path.write_text(GOOD)
    values = settings.read_file(path)
    assert values["BOARD"] == "ops" and values["MAX_PARALLEL"] == "3" and len(values) == 6
    loaded = settings.load(values)
    assert (loaded.board, loaded.max_parallel, loaded.runs_per_minute) == ("ops", 3, 6)


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ('BOARD="ops"', "line 2 is invalid"),
        ("BOARD=o ps", "line 2 is invalid"),
        ("BOARD=$OTHER", "line 2 is invalid"),
        ("BOARD=a\\b", "line 2 is invalid"),
        ("BOARD=50%", "line 2 is invalid"),
        (" BOARD=ops", "line 2 is invalid"),
        ("export BOARD=ops", "line 2 is invalid"),
        ("BORAD=ops", "line 2: BORAD is not a setting: expected one of BOARD, MAX_PARALLEL"),
    ],
)
def test_a_bad_line_names_the_file_the_line_and_the_format(tmp_path, line, why):
    path = tmp_path / "ops.env"
    path.write_text(f"# settings\n{line}\n")
    with pytest.raises(settings.SettingError) as error:
        settings.read_file(path)
    assert str(path) in str(error.value) and why in str(error.value)
    if "invalid" in why:
        assert "KEY=value" in str(error.value)


def test_a_link_a_fifo_a_missing_file_and_a_huge_one_are_refused(tmp_path):
    real = tmp_path / "real.env"
    real.write_text(GOOD)
    (tmp_path / "link.env").symlink_to(real)
    os.mkfifo(tmp_path / "fifo.env")
    (tmp_path / "huge.env").write_text("# x\n" * 20000)
    for name, why in [
        ("link.env", "symbolic link"),
        ("fifo.env", "not a regular file"),
        ("missing.env", "No such file"),
        ("huge.env", "larger than"),
    ]:
        with pytest.raises(settings.SettingError, match=why):
            settings.read_file(tmp_path / name)


def test_the_environment_overrides_the_file(tmp_path):
    path = tmp_path / "ops.env"
    path.write_text(GOOD)
    merged = settings.environment({"MAX_PARALLEL": "1", "PATH": "/bin"}, path)
    assert merged["MAX_PARALLEL"] == "1" and merged["BOARD"] == "ops" and merged["PATH"] == "/bin"
    by_variable = settings.environment({settings.SETTINGS_FILE_VARIABLE: str(path)})
    assert by_variable["BOARD"] == "ops"
    assert settings.environment({"BOARD": "x"}) == {"BOARD": "x"}


@pytest.mark.parametrize("how", ["option", "variable"])
def test_a_pass_with_a_missing_settings_file_fails_closed_naming_it(tmp_path, how):
    missing = tmp_path / "nope.env"
    args, env = [str(CAPPED)], {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    if how == "option":
        args += ["--settings", str(missing)]
    else:
        env[settings.SETTINGS_FILE_VARIABLE] = str(missing)
    result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert f"settings file {missing}" in result.stderr
    assert "reason=settings_invalid" in result.stdout


def test_a_pass_reads_its_cap_from_the_file_and_the_environment_wins(tmp_path):
    path = tmp_path / "ops.env"
    path.write_text("BOARD=ops\nMAX_PARALLEL=0\n")
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    bad = subprocess.run(
        [str(CAPPED), "--settings", str(path)], env=env, capture_output=True, text=True, check=False
    )
    assert bad.returncode == 2 and "MAX_PARALLEL='0' is invalid" in bad.stderr
    assert "board=ops" in bad.stdout
    # MAX_PARALLEL=2 on a crontab line wins over the file; HERMES_BIN is missing, so the pass
    # stops at the next setting it checks, proving the cap was taken from the environment.
    env["MAX_PARALLEL"] = "2"
    env["HERMES_BIN"] = str(tmp_path / "no-hermes")
    good = subprocess.run(
        [str(CAPPED), "--settings", str(path)], env=env, capture_output=True, text=True, check=False
    )
    assert good.returncode == 2 and "HERMES_BIN=" in good.stderr and "MAX_PARALLEL" not in good.stderr
