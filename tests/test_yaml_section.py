"""The config editor of the roles keeps every comment and unrelated key, or touches nothing."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

_PATH = Path(__file__).resolve().parent.parent / "library" / "hermes_yaml_section.py"
_SPEC = importlib.util.spec_from_file_location("hermes_yaml_section", _PATH)
module = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(module)

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


def test_sets_and_unsets_keeping_comments_and_other_keys():
    new, removed = module.edit(
        CONFIG, "kanban", {"dispatch_in_gateway": False}, ["max_in_progress", "max_spawn"]
    )
    assert removed == {"max_in_progress": 2, "max_spawn": {"nested": 1}}
    assert "  dispatch_in_gateway: false   # keep this comment\n" in new
    for kept in (
        "# Hermes config, edited by hand",
        "default: qwen  # the small one",
        "# the gateway dispatches every 60 s",
        "failure_limit: 3",
        "skin: dark",
    ):
        assert kept in new
    data = yaml.safe_load(new)
    assert data["kanban"] == {"dispatch_in_gateway": False, "failure_limit": 3}
    assert data["model"]["default"] == "qwen"


def test_a_second_edit_changes_nothing():
    once, _ = module.edit(CONFIG, "kanban", {"dispatch_in_gateway": False}, ["max_in_progress"])
    twice, removed = module.edit(once, "kanban", {"dispatch_in_gateway": False}, ["max_in_progress"])
    assert twice == once and removed == {}


def test_adds_a_missing_key_and_a_missing_section():
    new, _ = module.edit("model:\n  default: x\n", "kanban", {"dispatch_in_gateway": False}, [])
    assert yaml.safe_load(new) == {"model": {"default": "x"}, "kanban": {"dispatch_in_gateway": False}}
    new, _ = module.edit(CONFIG, "kanban", {"dispatch_interval_seconds": 30}, [])
    assert yaml.safe_load(new)["kanban"]["dispatch_interval_seconds"] == 30
    assert new.index("dispatch_interval_seconds") < new.index("display:")


def test_strings_are_quoted_when_they_must_be():
    new, _ = module.edit(
        "", "model", {"base_url": "http://h:1/v1", "api_key": "a: b#c", "default": "yes"}, []
    )
    assert yaml.safe_load(new)["model"] == {
        "base_url": "http://h:1/v1",
        "api_key": "a: b#c",
        "default": "yes",
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("kanban: [unclosed\n", "not valid YAML"),
        ("- a list\n", "not a mapping"),
        ("kanban: {dispatch_in_gateway: true}\n", "block mapping"),
        ("kanban:\n  dispatch_in_gateway:\n    deep: 1\n", "not a scalar"),
    ],
)
def test_what_cannot_be_edited_safely_fails(text, message):
    with pytest.raises(module.EditError, match=message):
        module.edit(text, "kanban", {"dispatch_in_gateway": False}, [])
