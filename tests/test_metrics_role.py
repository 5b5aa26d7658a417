"""The role's metrics plumbing (roles/hermes_pacer/tasks/metrics.yml) run for real on this host,
in a private state directory and textfile directory: root-owned links in the textfile directory to
textfiles of the Hermes user, idempotent, and nothing left of a board no longer paced."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import stat
import sys
import tempfile
from pathlib import Path

import pytest
from ansible_run import ansible_playbook
from hermes_pacer import host

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
PLAY = """\
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - ansible.builtin.import_role:
        name: hermes_pacer
        tasks_from: discover-metrics.yml
    - ansible.builtin.import_role:
        name: hermes_pacer
        tasks_from: metrics.yml
      when: hermes_pacer_state == 'present'
    # What absent.yml runs of it (the rest of absent.yml works on this host's real paths).
    - ansible.builtin.import_role:
        name: hermes_pacer
        tasks_from: remove-metrics.yml
      when: hermes_pacer_state == 'absent'
"""
ENDPOINTS = [{"name": "gpu0", "url": "http://127.0.0.1:8000/v1", "max_parallel": 3}]
# The system Python, as the inventory's: the Hermes user runs modules with it too (this virtualenv
# may sit where only root can read).
PYTHON = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
BOARDS = [{"name": "default", "max_parallel": 2}, {"name": "ops", "max_parallel": 1, "endpoint": "gpu0"}]


def _hermes_user() -> pwd.struct_passwd:
    """A user other than root with a shell, to tell its files from root's; else the test's own."""
    for entry in pwd.getpwall():
        if 1000 <= entry.pw_uid < 65534 and entry.pw_shell.endswith("sh"):
            return entry
    return pwd.getpwuid(os.getuid())


@pytest.fixture
def place():
    """A directory that user can reach (pytest's tmp_path is root's alone); removed afterwards."""
    if os.geteuid() != 0:
        pytest.skip("the role's metrics tasks make root-owned links: run as root")
    base = Path(tempfile.mkdtemp(prefix="hermes-pacer-metrics-"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base)


def _play(base: Path, boards: list[dict], metrics_dir: str, *options: str, state: str = "present"):
    """Run the role's metrics tasks as the role does (discover, then metrics) on this host."""
    user = _hermes_user()
    play = base / "play.yml"
    play.write_text(PLAY)
    variables = {
        "hermes_pacer_state": state,
        "hermes_pacer_boards": boards,
        "hermes_pacer_endpoints": ENDPOINTS,
        "hermes_pacer_user": user.pw_name,
        "hermes_pacer_group": grp.getgrgid(user.pw_gid).gr_name,
        "hermes_pacer_become_method": "ansible.builtin.su",
        "hermes_pacer_state_dir": str(base / "state"),
        "hermes_pacer_metrics_dir": metrics_dir,
        # Plays Debian's textfile directory: where links are swept when metrics are off.
        "_hermes_pacer_debian_textfile_dir": str(base / "textfile"),
        "ansible_python_interpreter": PYTHON,
    }
    return ansible_playbook(
        "-i",
        "localhost,",
        str(play),
        *options,
        extra=variables,
        cwd=base,
        env={"ANSIBLE_ROLES_PATH": str(REPO / "roles")},
    )


def converge(base: Path, boards: list[dict], metrics_dir: str, state: str = "present") -> int:
    """The number of tasks the run changed."""
    run = _play(base, boards, metrics_dir, state=state)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    recap = run.stdout.split("PLAY RECAP", 1)[1]
    return int(recap.split("changed=", 1)[1].split()[0])


def ours(textfile: Path) -> list[str]:
    """Links named as ours in the textfile directory."""
    names = (p.name for p in textfile.iterdir() if p.is_symlink())
    return sorted(name for name in names if name.startswith(host.METRICS_PREFIX))


def test_links_to_the_users_textfiles_once_then_nothing_of_dropped_boards(place):
    user = _hermes_user()
    state, textfile = place / "state", place / "textfile"
    metrics = Path(host.DEFAULT_METRICS_DIR.replace(host.DEFAULT_STATE_DIR, str(state), 1))
    textfile.mkdir(mode=0o755)
    # Not ours: a file of another collector, a link of that name pointing elsewhere.
    (textfile / "node.prom").write_text("up 1\n")
    (textfile / "hermes-pacer-board-stray.prom").symlink_to("/dev/null")

    # A dry run on the fresh host says what it would do and makes nothing.
    dry = _play(place, BOARDS, str(textfile), "--check")
    assert dry.returncode == 0, dry.stdout[-3000:]
    assert not state.exists() and ours(textfile) == ["hermes-pacer-board-stray.prom"]

    assert converge(place, BOARDS, str(textfile)) > 0
    expected = [
        host.metrics_file(metrics, "default").name,
        host.metrics_file(metrics, "ops").name,
        host.endpoint_metrics_file(metrics, "gpu0").name,
        host.endpoint_metrics_file(metrics, "local").name,
    ]
    assert ours(textfile) == sorted([*expected, "hermes-pacer-board-stray.prom"])
    for folder in (state, metrics):
        info = folder.lstat()
        assert stat.S_ISDIR(info.st_mode) and info.st_uid == user.pw_uid
        assert stat.S_IMODE(info.st_mode) == 0o755
    for name in expected:
        link = textfile / name
        assert link.lstat().st_uid == 0
        assert os.readlink(link) == str(metrics / name)
        target = (metrics / name).lstat()
        assert stat.S_ISREG(target.st_mode) and target.st_uid == user.pw_uid and target.st_size == 0

    # A pass wrote its metrics: a second converge keeps them and changes nothing.
    written = metrics / expected[0]
    written.write_text("hermes_pacer_cap 2\n")
    assert converge(place, BOARDS, str(textfile)) == 0
    assert written.read_text() == "hermes_pacer_cap 2\n"

    # ops (and so gpu0, which no board is on now) is no longer paced: its links go.
    assert converge(place, BOARDS[:1], str(textfile)) > 0
    assert ours(textfile) == sorted([expected[0], expected[3], "hermes-pacer-board-stray.prom"])

    # Metrics off: every link of ours goes; what is not ours stays.
    assert converge(place, BOARDS[:1], "") > 0
    assert ours(textfile) == ["hermes-pacer-board-stray.prom"]
    assert (textfile / "node.prom").read_text() == "up 1\n"
    assert converge(place, BOARDS[:1], "") == 0


def test_an_uninstall_removes_the_links_and_both_directories(place):
    state, textfile = place / "state", place / "textfile"
    textfile.mkdir(mode=0o755)
    (textfile / "node.prom").write_text("up 1\n")
    assert converge(place, BOARDS, str(textfile)) > 0
    assert len(ours(textfile)) == 4
    assert converge(place, BOARDS, str(textfile), state="absent") > 0
    assert ours(textfile) == [] and not state.exists()
    assert (textfile / "node.prom").read_text() == "up 1\n"


def test_a_textfile_directory_the_hermes_user_can_write_is_refused(place):
    textfile = place / "textfile"
    textfile.mkdir()
    textfile.chmod(0o777)
    run = _play(place, BOARDS, str(textfile))
    assert run.returncode != 0
    text = " ".join(run.stdout.split())
    assert f"hermes_pacer_metrics_dir={textfile}: node_exporter's textfile directory" in text, text[-3000:]
    assert "is writable by the Hermes user" in text
    assert ours(textfile) == []
