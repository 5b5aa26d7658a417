"""Prometheus' text exposition format (0.0.4), as node_exporter's textfile collector reads it.

Each family is written once, its HELP and TYPE first and then all its samples: node_exporter
refuses a file whose family is split or typed twice. A label value is escaped (backslash, double
quote, newline), so a Hermes home path with any of them stays one label; a value is a finite
number, since NaN or an infinity in a gauge would break every alert that compares it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
TYPES = ("gauge", "counter")


@dataclass
class Family:
    name: str
    type: str
    help: str
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)

    def add(self, labels: dict[str, str], value: float | int | bool) -> None:
        self.samples.append((labels, value))


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def number(value: float | int | bool) -> str:
    """The sample value as text; ValueError when it is not a finite number."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if not isinstance(value, float) or not math.isfinite(value):
        raise ValueError(f"metric value {value!r} is not a finite number")
    return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    for name in labels:
        if not LABEL.fullmatch(name) or name.startswith("__"):
            raise ValueError(f"label name {name!r} is not a Prometheus label name")
    return "{" + ",".join(f'{name}="{escape_label(str(value))}"' for name, value in labels.items()) + "}"


def render(families: list[Family]) -> str:
    """The families as one textfile; a family with no sample is left out."""
    lines: list[str] = []
    seen: set[str] = set()
    for family in families:
        if not NAME.fullmatch(family.name) or family.type not in TYPES or family.name in seen:
            raise ValueError(f"metric family {family.name!r} ({family.type}) cannot be written")
        seen.add(family.name)
        if not family.samples:
            continue
        lines.append(f"# HELP {family.name} {_escape_help(family.help)}")
        lines.append(f"# TYPE {family.name} {family.type}")
        lines.extend(f"{family.name}{_labels(labels)} {number(value)}" for labels, value in family.samples)
    return "".join(f"{line}\n" for line in lines)
