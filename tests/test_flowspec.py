"""Flow files are read and checked without Hermes: every problem named, with what is accepted."""

from __future__ import annotations

import pytest
from hermes_pacer import flowspec

pytestmark = pytest.mark.fast


def _step(key: str, *parents: str, **fields) -> dict:
    return {"key": key, "title": f"step {key}", "assignee": "worker", "parents": list(parents), **fields}


def _flow(*steps: dict, **fields) -> dict:
    return {"name": "nightly", "board": "default", "steps": list(steps), **fields}


def test_a_chain_and_a_diamond_are_ordered_parents_first():
    document = {
        "flows": [
            _flow(_step("publish", "report"), _step("ingest"), _step("report", "ingest")),
            _flow(
                _step("join", "left", "right"),
                _step("left", "split"),
                _step("split"),
                _step("right", "split"),
                name="diamond",
            ),
        ]
    }
    chain, diamond = flowspec.parse(document, "f.yml")
    assert [s.key for s in chain.ordered()] == ["ingest", "report", "publish"]
    assert [s.key for s in diamond.ordered()] == ["split", "left", "right", "join"]
    assert diamond.steps[0].parents == ("left", "right")


def test_fields_are_read_and_normalised():
    (flow,) = flowspec.parse(
        _flow(
            _step("a", body="Do it.", priority=5, max_runtime="30m", title="  Ingest  "),
            _step("b", "a", max_runtime=90),
            {"key": "c", "title": "C", "assignee": "worker", "parents": "b"},
        ),
        "f.yml",
    )
    a, b, c = flow.steps
    assert (a.title, a.body, a.priority, a.max_runtime) == ("Ingest", "Do it.", 5, 1800)
    assert (b.max_runtime, b.priority, b.body) == (90, 0, None)
    assert c.parents == ("b",)  # one parent may be written without a list


def test_the_board_defaults_to_default():
    document = _flow(_step("a"))
    del document["board"]
    assert flowspec.parse(document, "f.yml")[0].board == "default"


BAD = [
    (
        _flow(_step("a", "missing")),
        "step a: parents names 'missing', which is not a step of this flow (steps: a)",
    ),
    (_flow(_step("a", "a")), "step a: parents names the step itself"),
    (
        _flow(_step("a", "c"), _step("b", "a"), _step("c", "b")),
        "step a: parents form a cycle (a -> c -> b -> a, each waiting for the next)",
    ),
    (_flow(_step("a"), _step("a")), "step key 'a' appears twice: step keys must be distinct in a flow"),
    (_flow(_step("a", title="")), "(step a): title='' is invalid: expected a non-empty string"),
    (_flow({"key": "a", "assignee": "w"}), "(step a): title=None is invalid: expected a non-empty string"),
    (_flow(_step("a"), board="Ops Board"), "board='Ops Board' is invalid: expected a board slug of 1-64"),
    (_flow(_step("a"), name="-x"), "name='-x' is invalid: expected a flow name of 1-64 of a-z 0-9 - _"),
    (_flow(_step("a"), name=None), "name=None is invalid"),
    (
        _flow(_step("a", priority="high")),
        "priority='high' is invalid: expected an integer from -1000 to 1000",
    ),
    (_flow(_step("a", priority=1001)), "priority=1001 is invalid"),
    (_flow(_step("a", priority=True)), "priority=True is invalid"),
    (
        _flow(_step("a", max_runtime="5y")),
        "max_runtime='5y' is invalid: expected seconds (300) or a duration",
    ),
    (_flow(_step("a", max_runtime=0)), "max_runtime=0 is invalid"),
    (_flow(_step("a", max_runtime="31d")), "max_runtime='31d' is invalid"),
    (_flow(_step("a", assignee="Some One")), "assignee='Some One' is invalid: expected a profile name"),
    (_flow(_step("Bad Key")), "key='Bad Key' is invalid: expected a step key of 1-64"),
    (_flow(_step("a", parent=["b"])), "unknown field 'parent': accepted fields are key, title, assignee"),
    (_flow(_step("a"), stpes=[]), "unknown field 'stpes': accepted fields are name, board, steps"),
    (_flow(), "steps must be a non-empty list of steps"),
    (_flow(_step("a", parents=[1])), "parents=[1] is invalid: expected a list of step keys"),
    (_flow(_step("a", body=["x"])), "body is invalid: expected a string"),
    ({"flows": []}, "flows must be a non-empty list of flows"),
    ({"flows": [_flow(_step("a")), _flow(_step("b"))]}, "flow 'nightly' appears twice on board 'default'"),
    (["a"], "expected a flow (a mapping with name, board, steps) or a mapping with a list flows"),
]


@pytest.mark.parametrize(("document", "message"), BAD, ids=[m[:30] for _, m in BAD])
def test_a_bad_file_is_refused_naming_the_step_and_the_accepted_values(document, message):
    with pytest.raises(flowspec.FlowError) as raised:
        flowspec.parse(document, "f.yml")
    assert any(message in problem for problem in raised.value.problems), raised.value.problems


def test_every_problem_is_reported_at_once():
    document = _flow(_step("a", title=""), _step("b", priority="x"), _step("c", "nope"))
    with pytest.raises(flowspec.FlowError) as raised:
        flowspec.parse(document, "f.yml")
    assert len(raised.value.problems) == 3


def test_files_are_yaml_or_json(tmp_path):
    yaml_file = tmp_path / "f.yml"
    yaml_file.write_text("name: n\nsteps:\n  - {key: a, title: A, assignee: w}\n")
    json_file = tmp_path / "f.json"
    json_file.write_text('{"name": "m", "steps": [{"key": "a", "title": "A", "assignee": "w"}]}')
    assert [f.name for f in flowspec.read([yaml_file, json_file])] == ["n", "m"]


def test_a_flow_defined_in_two_files_is_refused(tmp_path):
    for name in ("a.yml", "b.yml"):
        (tmp_path / name).write_text("name: n\nsteps:\n  - {key: a, title: A, assignee: w}\n")
    with pytest.raises(flowspec.FlowError, match="flow 'n' is defined twice for board 'default'"):
        flowspec.read([tmp_path / "a.yml", tmp_path / "b.yml"])


def test_unreadable_and_malformed_files_are_named(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text("steps: [unclosed\n")
    with pytest.raises(flowspec.FlowError) as raised:
        flowspec.read([tmp_path / "absent.yml", broken])
    absent, bad = raised.value.problems
    assert "absent.yml: cannot read the file" in absent
    assert "broken.yml: not valid YAML" in bad
