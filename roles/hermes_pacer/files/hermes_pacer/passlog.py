"""One line per pass on stdout: key=value (default) or JSON, always the same keys.

`rc` is the pass's exit status: 0 when it did its job (a skip included), 1 when it failed closed.
Writing the line can fail (stdout on a full disk, a closed pipe): the pass then says so once on
stderr and counts as failed, but never ends in a traceback, so a loop of passes goes on.
"""

from __future__ import annotations

import json
import os
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
    "endpoint",
    "endpoint_cap",
    "endpoint_used",
    "foreign",
    "fleet",
    "fleet_mode",
    "fleet_slot",
    "fleet_next",
    "max",
    "spawned",
    "reclaimed",
    "reason",
    "rc",
    "warning",
    "error",
    "ms",
)

# Reasons of a pass that failed closed (rc=1): nothing was dispatched beyond what the record says.
FAILED_CLOSED = frozenset(
    {
        "lock_unavailable",
        "board_corrupt",
        "count_unknown",
        "hermes_failed",
        "hermes_timeout",
        "hermes_unavailable",
        "hermes_bad_json",
        "cap_script_timeout",
        "cap_script_unavailable",
        "internal_error",
        "settings_invalid",
        "terminated",
    }
)

# Every reason a pass can log, those of a pass that did its job first (rc=0). The metrics write one
# series per reason (0, and 1 for the last pass's), so a reason missing here would never show.
REASONS = (
    "dispatched",
    "no_ready",
    "at_cap",
    "housekeeping",
    "none_spawnable",
    "locked",
    "paused",
    "endpoint_down",
    "fleet_slice",
    *sorted(FAILED_CLOSED),
)

_write_failed_said = False


def warn(record: dict, text: str) -> None:
    """Add a warning to the record's `warning` field (`;`-separated)."""
    record["warning"] = f"{record['warning']};{text}" if record.get("warning") else text


def _kv_value(value: object) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(item) for item in value) or "-"
    if value is None or value == "":
        return "-"
    text = str(value)
    return json.dumps(text) if any(ch.isspace() or ch in '"=' for ch in text) else text


def line(record: dict, fmt: str) -> str:
    record = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **record}
    ordered = {key: record.get(key) for key in FIELDS}
    if fmt == "json":
        return json.dumps(ordered, separators=(",", ":"), default=str) + "\n"
    return " ".join(f"{key}={_kv_value(value)}" for key, value in ordered.items()) + "\n"


def emit(record: dict, fmt: str, stream=None) -> bool:
    """Write the record's line; False (said once on stderr) when it could not be written.

    A stream with a descriptor (stdout) is written straight to it, unbuffered: a line that could
    not be written is not left in a buffer for the interpreter to fail on again at exit.
    """
    stream = stream or sys.stdout
    text = line(record, fmt)
    try:
        fd = _descriptor(stream)
        if fd is None:
            stream.write(text)
            stream.flush()
        else:
            _write_all(fd, text.encode("utf-8", "replace"))
    except (OSError, ValueError, AttributeError) as exc:
        _say_write_failed(exc)
        return False
    return True


def _descriptor(stream) -> int | None:
    try:
        fd = stream.fileno()
    except (OSError, ValueError, AttributeError):
        return None  # an in-memory stream
    stream.flush()  # what was written to it before goes first
    return fd


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]


def _say_write_failed(exc: Exception) -> None:
    global _write_failed_said
    if _write_failed_said:
        return
    _write_failed_said = True
    try:
        sys.stderr.write(
            f"hermes-pacer: cannot write pass records to stdout: {exc} (said once; such a pass exits 1)\n"
        )
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
        pass
