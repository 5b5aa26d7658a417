"""The config editor of the roles keeps every byte outside its edit, or touches nothing; run as root
on a file the Hermes user owns, it never follows, reads or prints anything else."""

from __future__ import annotations

import importlib.util
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.fast

REPO = Path(__file__).resolve().parent.parent
_PATH = REPO / "plugins" / "modules" / "hermes_yaml_section.py"
# The module imports the shared path walk by its collection name, as Ansible runs it; the checkout
# is that collection through the committed link .ansible/collections/ansible_collections/hermes_pacer/pacer.
COLLECTIONS = str(REPO / ".ansible" / "collections")
sys.path.insert(0, COLLECTIONS)
_SPEC = importlib.util.spec_from_file_location("hermes_yaml_section", _PATH)
module = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(module)

NOBODY = 65534
SECRET = "s3cret-0f-r00t"

CONFIG = """\
# Hermes config, edited by hand
model:
  default: qwen  # the small one
  base_url: http://127.0.0.1:8000/v1

kanban:
  # the gateway dispatches every 60 s
  dispatch_in_gateway: true   # keep this comment
  max_in_progress: 2
  max_spawn:
    nested: 1
  failure_limit: 3

display:
  skin: dark
"""

OFF = {"dispatch_in_gateway": False}


# --- The edit itself ------------------------------------------------------------------------------


def test_sets_and_unsets_keeping_comments_and_other_keys():
    new, removed = module.edit(CONFIG, "kanban", OFF, ["max_in_progress", "max_spawn"])
    assert removed == {"max_in_progress": 2, "max_spawn": {"nested": 1}}
    expected = (
        CONFIG.replace("dispatch_in_gateway: true", "dispatch_in_gateway: false")
        .replace("  max_in_progress: 2\n", "")
        .replace("  max_spawn:\n    nested: 1\n", "")
    )
    assert new == expected
    assert yaml.safe_load(new)["kanban"] == {"dispatch_in_gateway": False, "failure_limit": 3}


def test_a_second_edit_changes_nothing():
    once, _ = module.edit(CONFIG, "kanban", OFF, ["max_in_progress"])
    twice, removed = module.edit(once, "kanban", OFF, ["max_in_progress"])
    assert twice == once and removed == {}


def test_adds_a_missing_key_and_a_missing_section():
    new, _ = module.edit("model:\n  default: x\n", "kanban", OFF, [])
    assert new == "model:\n  default: x\nkanban:\n  dispatch_in_gateway: false\n"
    new, _ = module.edit(CONFIG, "kanban", {"dispatch_interval_seconds": 30}, [])
    assert new == CONFIG.replace("failure_limit: 3\n", "failure_limit: 3\n  dispatch_interval_seconds: 30\n")
    new, _ = module.edit("model:\n  default: x", "kanban", OFF, [])  # no final line break
    assert new == "model:\n  default: x\nkanban:\n  dispatch_in_gateway: false\n"


def test_strings_are_quoted_when_they_must_be():
    new, _ = module.edit(
        "", "model", {"base_url": "http://h:1/v1", "api_key": "a: b#c", "default": "yes"}, []
    )
    assert yaml.safe_load(new)["model"] == {
        "base_url": "http://h:1/v1",
        "api_key": "a: b#c",
        "default": "yes",
    }


def test_a_quoted_key_is_the_same_key():
    text = "kanban:\n  \"dispatch_in_gateway\": true  # on\n  'max_spawn': 3\n"
    new, removed = module.edit(text, "kanban", OFF, ["max_spawn"])
    assert new == 'kanban:\n  "dispatch_in_gateway": false  # on\n'
    assert removed == {"max_spawn": 3}


def test_a_quoted_section_gets_no_second_section():
    text = "'kanban':\n  dispatch_in_gateway: true\n\"model\": {default: x}\n"
    new, _ = module.edit(text, "kanban", {"dispatch_interval_seconds": 30}, [])
    assert new == text.replace("true\n", "true\n  dispatch_interval_seconds: 30\n")


def test_a_bom_and_crlf_line_ends_are_kept():
    text = (
        "\ufeff# notes\r\nkanban:\r\n  dispatch_in_gateway: true\r\n  max_spawn: 3\r\n"
        "model:\r\n  default: x\r\n"
    )
    new, _ = module.edit(text, "kanban", {**OFF, "dispatch_interval_seconds": 30}, ["max_spawn"])
    assert new == (
        "\ufeff# notes\r\nkanban:\r\n  dispatch_in_gateway: false\r\n"
        "  dispatch_interval_seconds: 30\r\nmodel:\r\n  default: x\r\n"
    )
    new, _ = module.edit("\ufeffmodel:\r\n  default: x\r\n", "kanban", OFF, [])
    assert new == "\ufeffmodel:\r\n  default: x\r\nkanban:\r\n  dispatch_in_gateway: false\r\n"


def test_a_flow_mapping_is_edited_in_place():
    text = "kanban: {dispatch_in_gateway: true, max_spawn: 3}  # inline\nmodel: {default: x}\n"
    new, removed = module.edit(text, "kanban", OFF, ["max_spawn"])
    assert new == "kanban: {dispatch_in_gateway: false}  # inline\nmodel: {default: x}\n"
    assert removed == {"max_spawn": 3}
    new, _ = module.edit(text, "kanban", {"dispatch_interval_seconds": 30}, ["dispatch_in_gateway"])
    assert new == "kanban: {max_spawn: 3, dispatch_interval_seconds: 30}  # inline\nmodel: {default: x}\n"
    new, _ = module.edit("kanban: {}\n", "kanban", OFF, [])
    assert new == "kanban: {dispatch_in_gateway: false}\n"
    new, _ = module.edit("kanban: {max_spawn: 3}\n", "kanban", {}, ["max_spawn"])
    assert new == "kanban: {}\n"


def test_a_null_section_gets_its_keys_beneath():
    for head in ("kanban:", "kanban: ~", "kanban: null"):
        new, _ = module.edit(f"{head}  # later\nmodel: {{}}\n", "kanban", OFF, [])
        assert new == "kanban:  # later\n  dispatch_in_gateway: false\nmodel: {}\n"


def test_a_quoted_string_that_hermes_reads_as_on_is_replaced():
    new, _ = module.edit('kanban:\n  dispatch_in_gateway: "false"\n', "kanban", OFF, [])
    assert new == "kanban:\n  dispatch_in_gateway: false\n"
    new, _ = module.edit("kanban:\n  dispatch_in_gateway: 0\n", "kanban", OFF, [])
    assert new == "kanban:\n  dispatch_in_gateway: false\n"  # 0 == False, but not the same value


def test_a_value_already_set_keeps_its_bytes():
    text = "kanban:\n  dispatch_in_gateway: !!bool 'false'  # by hand\n"
    assert module.edit(text, "kanban", OFF, []) == (text, {})


def test_an_empty_value_and_a_block_scalar_are_replaced():
    text = "kanban:\n  dispatch_in_gateway:\n  note: |\n    text\n  x: 1\n"
    new, _ = module.edit(text, "kanban", {**OFF, "note": "short"}, [])
    assert new == "kanban:\n  dispatch_in_gateway: false\n  note: short\n  x: 1\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("kanban: [unclosed\n", "not valid YAML"),
        ("- a list\n", "not a mapping"),
        ("kanban:\n  dispatch_in_gateway:\n    deep: 1\n", "not a scalar"),
        ("kanban:\n  max_spawn: 1\nkanban:\n  dispatch_in_gateway: true\n", "written 2 times"),
        ("kanban:\n  dispatch_in_gateway: true\n  'dispatch_in_gateway': true\n", "written 2 times"),
        ("on: &x true\nkanban:\n  dispatch_in_gateway: *x\n", "alias"),
        (
            "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n"
            + "".join(f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n" for p, c in zip("abcde", "bcdef")),
            "aliases are expanded",
        ),
        ("{model: {default: x}}\n", "flow mapping"),
        ("base: &b {dispatch_in_gateway: true}\nkanban:\n  <<: *b\n", "alias"),
    ],
)
def test_what_cannot_be_edited_safely_fails(text, message):
    with pytest.raises(module.EditError, match=message):
        module.edit(text, "kanban", OFF, [])


def test_a_key_a_merge_brings_is_not_reported_removed():
    text = "base: &b {max_spawn: 3}\nkanban:\n  dispatch_in_gateway: false\n  <<: *b\n"
    with pytest.raises(module.EditError, match="merge key"):
        module.edit(text, "kanban", OFF, ["max_spawn"])


def test_a_parse_error_names_the_place_not_the_text():
    with pytest.raises(module.EditError) as caught:
        module.edit(f"model:\n  api_key: {SECRET}\nkanban: [unclosed\n", "kanban", OFF, [])
    assert "line" in str(caught.value) and SECRET not in str(caught.value)


def test_secret_looking_values_are_redacted():
    text = (
        f"model:\n  API_KEY: {SECRET}\n  default: x\nauth: {{apikey: '{SECRET}', user: me}}\n"
        f"github_token: |\n  {SECRET}\nsecrets:\n  - {SECRET}\nPassword: {SECRET}  # old\npasswd: ''\n"
    )
    shown = module.redact(text)
    assert SECRET not in shown
    assert "default: x" in shown and "user: me" in shown and "Password: <redacted>  # old" in shown


# --- The module as root on a file the Hermes user owns -----------------------------------------


@pytest.fixture
def home(tmp_path):
    """A directory another user owns, as the Hermes user's home is."""
    folder = tmp_path / "home"
    folder.mkdir(mode=0o700)
    os.chown(folder, NOBODY, NOBODY)
    return folder


@pytest.fixture
def backups(tmp_path):
    return tmp_path / "backups"


def run_module(tmp_path, check=False, diff=True, **args):
    """Run the module as Ansible would (a subprocess given its arguments), returning its result."""
    args.setdefault("section", "kanban")
    args.setdefault("set", OFF)
    args.setdefault("backup_dir", str(tmp_path / "backups"))
    args = {k: (str(v) if isinstance(v, Path) else v) for k, v in args.items()}
    file = tmp_path / "args.json"
    file.write_text(
        json.dumps({"ANSIBLE_MODULE_ARGS": {**args, "_ansible_check_mode": check, "_ansible_diff": diff}})
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [COLLECTIONS, os.environ.get("PYTHONPATH")])),
    }
    done = subprocess.run(
        [sys.executable, str(_PATH), str(file)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    result = json.loads(done.stdout)
    result["output"] = done.stdout + done.stderr
    return result


def snapshot(folder):
    return {p.name: (os.lstat(p).st_ino, os.lstat(p).st_mode) for p in folder.iterdir()}


def test_a_link_to_a_root_only_secret_is_refused(tmp_path, home, backups):
    secret = tmp_path / "shadow"
    secret.write_text(f"api_key: {SECRET}\n")
    secret.chmod(0o600)
    link = home / "config.yaml"
    link.symlink_to(secret)
    os.lchown(link, NOBODY, NOBODY)
    before = snapshot(home)
    for check in (False, True):
        result = run_module(tmp_path, path=link, create=True, check=check)
        assert result["failed"] and f"{link} is a symbolic link" in result["msg"]
        assert SECRET not in result["output"]
    assert os.readlink(link) == str(secret) and snapshot(home) == before
    info = os.stat(secret)
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (0, 0o600)
    assert secret.read_text() == f"api_key: {SECRET}\n"
    assert not backups.exists()


def test_a_hard_link_to_a_root_file_is_refused(tmp_path, home):
    secret = tmp_path / "shadow"
    secret.write_text(f"api_key: {SECRET}\n")
    secret.chmod(0o600)
    os.link(secret, home / "config.yaml")  # what the Hermes user can do where protected_hardlinks=0
    result = run_module(tmp_path, path=home / "config.yaml", create=True)
    assert result["failed"] and f"{home}/config.yaml has 2 hard links" in result["msg"]
    assert SECRET not in result["output"] and secret.read_text() == f"api_key: {SECRET}\n"
    assert os.stat(home / "config.yaml").st_ino == os.stat(secret).st_ino


def test_a_link_in_the_middle_of_the_path_is_refused(tmp_path, home):
    root_dir = tmp_path / "root-profiles" / "worker"
    root_dir.mkdir(parents=True)
    (root_dir / "config.yaml").write_text(f"model:\n  api_key: {SECRET}\n")
    (home / "profiles").symlink_to(root_dir.parent)
    os.lchown(home / "profiles", NOBODY, NOBODY)
    result = run_module(tmp_path, path=home / "profiles" / "worker" / "config.yaml", create=True)
    assert (
        result["failed"]
        and f"{home}/profiles/worker/config.yaml: profiles is a symbolic link" in result["msg"]
    )
    assert SECRET not in result["output"]
    assert (root_dir / "config.yaml").read_text() == f"model:\n  api_key: {SECRET}\n"


@pytest.mark.parametrize("kind", ["FIFO", "character device", "directory", "dev-zero link"])
def test_what_is_no_regular_file_fails_at_once(tmp_path, home, kind):
    path = home / "config.yaml"
    if kind == "FIFO":
        os.mkfifo(path)
    elif kind == "character device":
        os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(1, 5))  # as /dev/zero
    elif kind == "directory":
        path.mkdir()
    else:
        path.symlink_to("/dev/zero")
    result = run_module(tmp_path, path=path, create=True)  # a hang would end in the timeout
    assert result["failed"] and str(path) in result["msg"]
    assert ("symbolic link" if kind == "dev-zero link" else kind) in result["msg"]
    assert sorted(p.name for p in home.iterdir()) == ["config.yaml"]


def test_a_file_over_one_mebibyte_is_not_read(tmp_path, home):
    path = home / "config.yaml"
    path.write_text("kanban:\n  dispatch_in_gateway: true\n" + "# padding\n" * 120_000)
    result = run_module(tmp_path, path=path)
    assert result["failed"] and "larger than 1048576 bytes" in result["msg"]


def test_an_edit_keeps_owner_group_mode_and_every_other_byte(tmp_path, home, backups):
    path = home / "config.yaml"
    text = '\ufeff# by hand\r\nkanban:\r\n  "dispatch_in_gateway": true  # on\r\n  max_spawn: 3\r\n'
    path.write_bytes(text.encode())
    os.chown(path, NOBODY, NOBODY)
    path.chmod(0o640)
    inode = os.stat(path).st_ino
    result = run_module(tmp_path, path=path, unset=["max_spawn"], owner="root", group="root", mode="0644")
    assert result["changed"] and not result.get("failed")
    assert (
        path.read_bytes() == '\ufeff# by hand\r\nkanban:\r\n  "dispatch_in_gateway": false  # on\r\n'.encode()
    )
    info = os.stat(path)
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (NOBODY, NOBODY, 0o640)
    assert info.st_ino != inode  # replaced by a rename, never written in place
    assert sorted(p.name for p in home.iterdir()) == ["config.yaml"]  # no temp file, no backup left here
    backup = Path(result["backup_file"])
    assert backup.parent == backups and backup.read_bytes() == text.encode()
    assert (os.stat(backup).st_uid, stat.S_IMODE(os.stat(backup).st_mode)) == (0, 0o600)
    assert stat.S_IMODE(os.stat(backups).st_mode) == 0o700
    again = run_module(tmp_path, path=path, unset=["max_spawn"])
    assert not again["changed"] and "backup_file" not in again


def test_a_created_file_gets_the_asked_owner_and_mode(tmp_path, home):
    path = home / "config.yaml"
    result = run_module(tmp_path, path=path, create=True, owner="nobody", group=str(NOBODY), mode="0600")
    assert result["changed"] and "backup_file" not in result
    assert path.read_text() == "kanban:\n  dispatch_in_gateway: false\n"
    info = os.stat(path)
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (NOBODY, NOBODY, 0o600)


def test_check_mode_writes_nothing(tmp_path, home, backups):
    path = home / "config.yaml"
    path.write_text("kanban:\n  dispatch_in_gateway: true\n")
    before = snapshot(home)
    result = run_module(tmp_path, path=path, check=True)
    assert result["changed"] and "dispatch_in_gateway: false" in result["diff"]["after"]
    assert snapshot(home) == before and path.read_text() == "kanban:\n  dispatch_in_gateway: true\n"
    assert not backups.exists()
    missing = run_module(tmp_path, path=tmp_path / "no-home-yet" / "config.yaml", create=True, check=True)
    assert missing["changed"] and not missing.get("failed")


def test_the_diff_never_shows_a_secret(tmp_path, home):
    path = home / "config.yaml"
    path.write_text(f"model:\n  api_key: {SECRET}\n  default: x\nkanban:\n  dispatch_in_gateway: true\n")
    result = run_module(tmp_path, path=path, check=True)
    assert (
        "api_key: <redacted>" in result["diff"]["before"] and "api_key: <redacted>" in result["diff"]["after"]
    )
    assert SECRET not in result["output"]
    removed = run_module(tmp_path, path=path, section="model", set={}, unset=["api_key"], check=True)
    assert removed["removed"] == {"api_key": "<redacted>"} and SECRET not in removed["output"]
    given = run_module(tmp_path, path=path, section="model", set={"api_key": "n3w-" + SECRET}, check=True)
    assert given["changed"] and SECRET not in given["output"]  # nor in the echoed invocation


def test_a_failure_leaves_the_original_untouched(tmp_path, home, backups):
    path = home / "config.yaml"
    path.write_text("kanban:\n  dispatch_in_gateway: true\n")
    backups.mkdir()
    os.chown(backups, NOBODY, NOBODY)  # the Hermes user could plant files here: refused
    before = snapshot(home)
    result = run_module(tmp_path, path=path)
    assert result["failed"] and f"backup_dir {backups}" in result["msg"]
    assert snapshot(home) == before and path.read_text() == "kanban:\n  dispatch_in_gateway: true\n"
    assert list(backups.iterdir()) == []


def test_latin1_is_refused_with_a_message(tmp_path, home):
    path = home / "config.yaml"
    path.write_bytes(b"# caf\xe9\nkanban:\n  dispatch_in_gateway: true\n")
    result = run_module(tmp_path, path=path)
    assert result["failed"] and "not UTF-8" in result["msg"] and str(path) in result["msg"]
