"""Flow files: parent/child pipelines of Kanban cards, read and checked before anything is created.

A file holds one flow (a mapping with `name`, `board`, `steps`) or several (`flows: [...]`). Each
step is one card; `parents` names the steps it waits for (a DAG: fan-out and fan-in allowed).
Every problem is reported at once, each naming the flow, the step, the field and what it accepts,
so a bad file is fixed in one round and nothing of it reaches a board.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .host import DEFAULT_BOARD
from .settings import BOARD_SLUG

# Flow names and step keys make the cards' idempotency keys: the board slug rule keeps them plain.
NAME = BOARD_SLUG
SLUG_RULE = "1-64 of a-z 0-9 - _, not starting with - or _"
PRIORITY_RANGE = (-1000, 1000)
MAX_RUNTIME_SECONDS = 30 * 86400
DURATION = re.compile(r"^([0-9]+)([smhd]?)$")
UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}

FLOW_FIELDS = ("name", "board", "steps")
STEP_FIELDS = ("key", "title", "assignee", "body", "priority", "max_runtime", "parents")


class FlowError(ValueError):
    """The file is not a valid flow file; `problems` lists every reason, one line each."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Step:
    key: str
    title: str
    assignee: str
    body: str | None = None
    priority: int = 0
    max_runtime: int | None = None  # seconds
    parents: tuple[str, ...] = ()


@dataclass(frozen=True)
class Flow:
    name: str
    board: str
    steps: tuple[Step, ...] = field(default_factory=tuple)

    def ordered(self) -> list[Step]:
        """Steps with every parent before its children, otherwise in file order."""
        done: set[str] = set()
        order: list[Step] = []
        while len(order) < len(self.steps):
            for step in self.steps:
                if step.key not in done and all(p in done for p in step.parents):
                    order.append(step)
                    done.add(step.key)
                    break
        return order


def load_text(path: Path) -> object:
    """The document of a YAML (or JSON) file, `-` for stdin. JSON needs nothing; YAML needs PyYAML."""
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FlowError([f"{path}: cannot read the file: {exc}"]) from exc
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        import yaml  # only YAML files need it, and a host may lack it
    except ImportError:
        raise FlowError(
            [
                f"{path}: reading YAML needs PyYAML, which {sys.executable or 'this Python'} lacks: "
                "install python3-yaml (the hermes_pacer role does), set PACER_PYTHON to a Python that has it "
                "(the Hermes virtualenv's), or write the file as JSON"
            ]
        ) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise FlowError([f"{path}: not valid YAML: {' '.join(str(exc).split())}"]) from exc


def parse(document: object, source: str) -> list[Flow]:
    """Flows of one document; raise FlowError listing every problem."""
    problems: list[str] = []
    if isinstance(document, dict) and "flows" in document:
        extra = sorted(set(document) - {"flows"})
        if extra:
            problems.append(f"{source}: unknown top-level field {extra[0]!r}: expected only 'flows'")
        raw_flows = document["flows"]
        if not isinstance(raw_flows, list) or not raw_flows:
            raise FlowError([*problems, f"{source}: flows must be a non-empty list of flows"])
        where = [f"{source}: flows[{i}]" for i in range(len(raw_flows))]
    elif isinstance(document, dict):
        raw_flows, where = [document], [source]
    else:
        raise FlowError(
            [f"{source}: expected a flow (a mapping with name, board, steps) or a mapping with a list flows"]
        )
    flows = [_flow(raw, at, problems) for raw, at in zip(raw_flows, where)]
    _distinct(
        [(f.board, f.name) for f in flows if f],
        lambda board_name: (
            f"{source}: flow {board_name[1]!r} appears twice on board {board_name[0]!r}: "
            "flow names must be distinct per board (they key the cards)"
        ),
        problems,
    )
    if problems:
        raise FlowError(problems)
    return [f for f in flows if f]


def _distinct(items: list, message, problems: list[str]) -> None:
    seen = set()
    for item in items:
        if item in seen:
            problems.append(message(item))
        seen.add(item)


def _flow(raw: object, at: str, problems: list[str]) -> Flow | None:
    if not isinstance(raw, dict):
        problems.append(f"{at}: expected a mapping with name, board and steps, got {_kind(raw)}")
        return None
    for extra in sorted(set(raw) - set(FLOW_FIELDS), key=str):
        problems.append(f"{at}: unknown field {extra!r}: accepted fields are {', '.join(FLOW_FIELDS)}")
    name = raw.get("name")
    if not (isinstance(name, str) and NAME.match(name)):
        problems.append(f"{at}: name={name!r} is invalid: expected a flow name of {SLUG_RULE}")
        name = None
    else:
        at = f"{at} (flow {name})"
    board = raw.get("board", DEFAULT_BOARD)
    if not (isinstance(board, str) and BOARD_SLUG.match(board)):
        problems.append(f"{at}: board={board!r} is invalid: expected a board slug of {SLUG_RULE}")
    raw_steps = raw.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        problems.append(f"{at}: steps must be a non-empty list of steps")
        return None
    steps = [_step(s, f"{at} steps[{i}]", problems) for i, s in enumerate(raw_steps)]
    known = [s for s in steps if s]
    _distinct(
        [s.key for s in known],
        lambda key: f"{at}: step key {key!r} appears twice: step keys must be distinct in a flow",
        problems,
    )
    # Parents are checked against every well-formed key, also those of steps with other problems.
    keys = [s["key"] for s in raw_steps if isinstance(s, dict) and isinstance(s.get("key"), str)]
    dangling = False
    for step in known:
        for parent in step.parents:
            if parent not in keys:
                dangling = True
                problems.append(
                    f"{at} step {step.key}: parents names {parent!r}, which is not a step of this flow "
                    f"(steps: {', '.join(keys)})"
                )
            elif parent == step.key:
                dangling = True
                problems.append(f"{at} step {step.key}: parents names the step itself")
    cycle = None if dangling or len(known) != len(steps) else _cycle(known)
    if cycle:
        problems.append(
            f"{at} step {cycle[0]}: parents form a cycle ({' -> '.join(cycle)}, each waiting for the next): "
            "a flow must be acyclic"
        )
    if name is None or len(known) != len(steps):
        return None
    return Flow(name=name, board=board, steps=tuple(known))


def _step(raw: object, at: str, problems: list[str]) -> Step | None:
    if not isinstance(raw, dict):
        problems.append(f"{at}: expected a mapping with key, title and assignee, got {_kind(raw)}")
        return None
    before = len(problems)
    key = raw.get("key")
    if isinstance(key, str) and NAME.match(key):
        at = f"{at} (step {key})"
    else:
        problems.append(f"{at}: key={key!r} is invalid: expected a step key of {SLUG_RULE}")
    for extra in sorted(set(raw) - set(STEP_FIELDS), key=str):
        problems.append(f"{at}: unknown field {extra!r}: accepted fields are {', '.join(STEP_FIELDS)}")
    title = raw.get("title")
    if not (isinstance(title, str) and title.strip()):
        problems.append(f"{at}: title={title!r} is invalid: expected a non-empty string")
    assignee = raw.get("assignee")
    if not (isinstance(assignee, str) and NAME.match(assignee)):
        problems.append(f"{at}: assignee={assignee!r} is invalid: expected a profile name of {SLUG_RULE}")
    body = raw.get("body")
    if body is not None and not isinstance(body, str):
        problems.append(f"{at}: body is invalid: expected a string")
    priority = raw.get("priority", 0)
    low, high = PRIORITY_RANGE
    if not (isinstance(priority, int) and not isinstance(priority, bool) and low <= priority <= high):
        problems.append(
            f"{at}: priority={priority!r} is invalid: expected an integer from {low} to {high} "
            "(higher runs first among ready cards)"
        )
    max_runtime = _seconds(raw.get("max_runtime"))
    if max_runtime is False:
        problems.append(
            f"{at}: max_runtime={raw.get('max_runtime')!r} is invalid: expected seconds (300) or a "
            f"duration (90s, 30m, 2h, 1d), from 1 s to {MAX_RUNTIME_SECONDS // 86400} days"
        )
    parents = raw.get("parents", [])
    if isinstance(parents, str):
        parents = [parents]
    if not (isinstance(parents, list) and all(isinstance(p, str) for p in parents)):
        problems.append(f"{at}: parents={parents!r} is invalid: expected a list of step keys of this flow")
        parents = []
    elif len(set(parents)) != len(parents):
        problems.append(f"{at}: parents={parents!r} names a step twice")
    if len(problems) > before:
        return None
    return Step(
        key=key,
        title=title.strip(),
        assignee=assignee,
        body=body,
        priority=priority,
        max_runtime=max_runtime or None,
        parents=tuple(parents),
    )


def _seconds(raw: object) -> int | bool | None:
    """Seconds of a max_runtime, None when unset, False when invalid."""
    if raw is None:
        return None
    if isinstance(raw, bool):
        return False
    match = DURATION.match(str(raw).strip().lower()) if isinstance(raw, (int, str)) else None
    if not match:
        return False
    seconds = int(match.group(1)) * UNITS[match.group(2)]
    return seconds if 1 <= seconds <= MAX_RUNTIME_SECONDS else False


def _cycle(steps: list[Step]) -> list[str] | None:
    """One cycle of the parent graph as a list of keys (first repeated last), or None."""
    parents = {s.key: s.parents for s in steps}
    state: dict[str, int] = {}  # 1 on the current path, 2 finished
    path: list[str] = []

    def visit(key: str) -> list[str] | None:
        state[key] = 1
        path.append(key)
        for parent in parents.get(key, ()):
            if state.get(parent) == 1:
                return [*path[path.index(parent) :], parent]
            if parent not in state:
                found = visit(parent)
                if found:
                    return found
        state[key] = 2
        path.pop()
        return None

    for step in steps:
        if step.key not in state:
            found = visit(step.key)
            if found:
                return found
    return None


def _kind(value: object) -> str:
    return "nothing" if value is None else type(value).__name__


def read(paths: list[Path]) -> list[Flow]:
    """Flows of every file; FlowError lists the problems of all of them."""
    flows: list[Flow] = []
    problems: list[str] = []
    for path in paths:
        try:
            flows += parse(load_text(path), str(path))
        except FlowError as exc:
            problems += exc.problems
    _distinct(
        [(f.board, f.name) for f in flows],
        lambda board_name: (
            f"flow {board_name[1]!r} is defined twice for board {board_name[0]!r} "
            "(in two files): flow names must be distinct per board"
        ),
        problems,
    )
    if problems:
        raise FlowError(problems)
    return flows
