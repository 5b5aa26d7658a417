"""One line per pass on stdout: key=value (default) or JSON, always the same keys."""

from __future__ import annotations

import json
import sys
import time

FIELDS = (
    "time",
    "board",
    "cap",
    "running",
    "workers",
    "lingering",
    "occupied",
    "slots",
    "ready",
    "max",
    "spawned",
    "reclaimed",
    "reason",
    "warning",
    "error",
    "ms",
)


def _kv_value(value: object) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(item) for item in value) or "-"
    if value is None or value == "":
        return "-"
    text = str(value)
    return json.dumps(text) if any(ch.isspace() or ch in '"=' for ch in text) else text


def emit(record: dict, fmt: str, stream=None) -> None:
    stream = stream or sys.stdout
    record = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **record}
    ordered = {key: record.get(key) for key in FIELDS}
    if fmt == "json":
        line = json.dumps(ordered, separators=(",", ":"))
    else:
        line = " ".join(f"{key}={_kv_value(value)}" for key, value in ordered.items())
    stream.write(line + "\n")
    stream.flush()
