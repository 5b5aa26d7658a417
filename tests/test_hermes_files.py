"""The roles' file installer writes the files that differ, and only into a real directory: a link
the Hermes user planted is replaced, never followed."""

from __future__ import annotations

import importlib.util
import os
import stat
from pathlib import Path

import pytest

pytestmark = pytest.mark.fast

REPO = Path(__file__).resolve().parent.parent
_SPEC = importlib.util.spec_from_file_location(
    "hermes_files", REPO / "plugins" / "modules" / "hermes_files.py"
)
module = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(module)

ME = {"owner": str(os.getuid()), "group": str(os.getgid())}
FILES = {"__init__.py": "", "pacer.py": "print('{{ not a template }}')\n", "notes.py": "# é\n"}


def _install(dest, files=FILES, **options):
    return module.install(str(dest), files, **{**ME, **options})


def test_a_new_directory_gets_every_file_then_a_second_run_changes_nothing(tmp_path):
    dest = tmp_path / "hermes_pacer"
    assert _install(dest) == (sorted(FILES), True)
    assert stat.S_IMODE(dest.stat().st_mode) == 0o755
    for name, text in FILES.items():
        assert (dest / name).read_text() == text
        assert stat.S_IMODE((dest / name).stat().st_mode) == 0o644
    assert _install(dest) == ([], False)
    assert sorted(os.listdir(dest)) == sorted(FILES)  # no temporary file left


def test_only_a_file_whose_text_or_mode_differs_is_written(tmp_path):
    _install(tmp_path)
    (tmp_path / "pacer.py").write_text("edited\n")
    (tmp_path / "notes.py").chmod(0o600)
    kept = (tmp_path / "__init__.py").stat().st_ino
    (tmp_path / "other.py").write_text("not ours\n")
    assert _install(tmp_path) == (["notes.py", "pacer.py"], False)
    assert (tmp_path / "pacer.py").read_text() == FILES["pacer.py"]
    assert stat.S_IMODE((tmp_path / "notes.py").stat().st_mode) == 0o644
    assert (tmp_path / "__init__.py").stat().st_ino == kept
    assert (tmp_path / "other.py").read_text() == "not ours\n"


def test_a_link_in_a_files_place_is_replaced_and_its_target_untouched(tmp_path):
    dest, target = tmp_path / "dest", tmp_path / "secret"
    dest.mkdir()
    target.write_text("root only\n")
    (dest / "pacer.py").symlink_to(target)
    assert "pacer.py" in _install(dest)[0]
    assert not (dest / "pacer.py").is_symlink() and (dest / "pacer.py").read_text() == FILES["pacer.py"]
    assert target.read_text() == "root only\n"


def test_check_mode_names_the_files_and_writes_nothing(tmp_path):
    _install(tmp_path)
    (tmp_path / "pacer.py").write_text("edited\n")
    assert _install(tmp_path, check=True) == (["pacer.py"], False)
    assert (tmp_path / "pacer.py").read_text() == "edited\n"
    assert _install(tmp_path / "new", check=True) == (sorted(FILES), True)
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize(
    ("dest", "files", "options", "message"),
    [
        ("link", FILES, {}, "is a link: nothing written"),
        ("file", FILES, {}, "is not a directory: nothing written"),
        ("dir", {"../escape.py": "x"}, {}, "is not a file name"),
        ("dir", {"sub": "x"}, {}, "is a directory: not replaced"),
        ("dir", FILES, {"mode": "rw-r--r--"}, "mode must be an octal mode"),
        ("dir", FILES, {"owner": "no-such-user-here"}, "owner 'no-such-user-here' does not exist"),
    ],
    ids=["dest-link", "dest-file", "name-with-a-directory", "directory-in-a-files-place", "mode", "owner"],
)
def test_bad_input_fails_naming_it_and_writes_nothing(tmp_path, dest, files, options, message):
    (tmp_path / "dir" / "sub").mkdir(parents=True)
    (tmp_path / "file").write_text("")
    (tmp_path / "link").symlink_to(tmp_path / "dir")
    before = sorted(os.listdir(tmp_path / "dir"))
    with pytest.raises(ValueError, match=message):
        _install(tmp_path / dest, files, **options)
    assert sorted(os.listdir(tmp_path / "dir")) == before


def test_a_relative_dest_is_refused():
    with pytest.raises(ValueError, match="dest must be an absolute path"):
        module.install("relative/dir", FILES, **ME)
