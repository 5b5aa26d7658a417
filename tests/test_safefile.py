"""Reads in places the Hermes user can write: no link it made is followed, nothing but a regular
file is read, and nothing past the bound."""

from __future__ import annotations

import os

import pytest
from hermes_pacer import safefile

pytestmark = pytest.mark.fast

NOBODY = 65534


def test_a_regular_file_is_read(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_bytes(b"kanban:\n  dispatch_in_gateway: false\n\xe9\n")
    assert safefile.read_text(path).startswith("kanban:")
    assert "\ufffd" in safefile.read_text(path)  # Latin-1 is replaced, never a traceback


@pytest.fixture
def home(tmp_path):
    """A directory another user owns, as the Hermes user's home is."""
    folder = tmp_path / "home"
    folder.mkdir()
    os.chown(folder, NOBODY, NOBODY)
    return folder


def test_a_link_as_last_component_is_refused(tmp_path, home):
    secret = tmp_path / "secret"
    secret.write_text("api_key: s3cret\n")
    secret.chmod(0o600)
    link = home / "config.yaml"
    link.symlink_to(secret)
    with pytest.raises(safefile.UnsafeFile, match="symbolic link"):
        safefile.read_text(link)
    assert not safefile.exists(link)


def test_a_link_another_user_owns_in_the_middle_is_refused(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (real / "jobs.json").write_text("[]")
    middle = tmp_path / "cron"
    middle.symlink_to(real)
    os.lchown(middle, NOBODY, NOBODY)
    with pytest.raises(safefile.UnsafeFile, match="uid 65534"):
        safefile.read_text(middle / "jobs.json")


def test_a_root_link_in_a_directory_another_user_owns_is_refused(tmp_path, home):
    (tmp_path / "jobs.json").write_text("[]")
    (home / "jobs.json").symlink_to(tmp_path / "jobs.json")
    with pytest.raises(safefile.UnsafeFile):
        safefile.read_text(home / "jobs.json")


def test_a_link_root_owns_in_the_middle_is_followed(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (real / "jobs.json").write_text("[]")
    (tmp_path / "cron").symlink_to(real)
    if os.lstat(tmp_path / "cron").st_uid != 0:
        pytest.skip("needs root to own the link")
    assert safefile.read_text(tmp_path / "cron" / "jobs.json") == "[]"


def test_a_fifo_is_refused_without_hanging(tmp_path):
    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)
    with pytest.raises(safefile.UnsafeFile, match="not a regular file"):
        safefile.read_text(fifo)


def test_a_device_is_refused():
    with pytest.raises(safefile.UnsafeFile, match="not a regular file"):
        safefile.read_bytes("/dev/zero")


def test_a_file_past_the_bound_is_refused(tmp_path):
    big = tmp_path / "log"
    big.write_bytes(b"x" * 2048)
    with pytest.raises(safefile.UnsafeFile, match="larger than 1024"):
        safefile.read_bytes(big, limit=1024)


def test_the_tail_of_a_log_drops_the_partial_line(tmp_path):
    log = tmp_path / "log"
    log.write_text("".join(f"time=2026-01-01T00:00:{i:02d}Z reason=no_ready\n" for i in range(60)))
    tail = safefile.read_tail(log, size=100)
    assert tail.splitlines()[0].startswith("time=") and tail.endswith("reason=no_ready\n")


def test_a_relative_path_is_refused():
    with pytest.raises(safefile.UnsafeFile, match="absolute"):
        safefile.read_bytes("config.yaml")


def test_open_parent_leaves_the_last_name_to_the_caller(tmp_path, home):
    """The config editor's walk: the directory that holds the name, the name not even looked at
    (a link there is the caller's to refuse, relative to the descriptor)."""
    (home / "config.yaml").symlink_to(tmp_path / "elsewhere")
    fd, name = safefile.open_parent(home / "config.yaml")
    try:
        assert name == "config.yaml"
        assert os.path.samestat(os.fstat(fd), os.stat(home))
    finally:
        os.close(fd)


def test_open_parent_and_open_dir_refuse_a_link_another_user_owns(tmp_path, home):
    (tmp_path / "real").mkdir()
    (home / "profiles").symlink_to(tmp_path / "real")
    os.lchown(home / "profiles", NOBODY, NOBODY)
    with pytest.raises(safefile.UnsafeFile, match="profiles is a symbolic link of uid 65534"):
        safefile.open_parent(home / "profiles" / "config.yaml")
    with pytest.raises(safefile.UnsafeFile, match="profiles is a symbolic link of uid 65534"):
        safefile.open_dir(home / "profiles")
    fd = safefile.open_dir(tmp_path / "real")
    os.close(fd)
