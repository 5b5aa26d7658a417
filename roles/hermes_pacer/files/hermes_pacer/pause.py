"""Hermes' emergency stop (`hermes pause` / `resume`, Hermes 0.20 and later), as a board's pass sees it.

`hermes pause` writes `$HERMES_HOME/ESTOP`; while it holds, Hermes' own dispatchers spawn nothing
(in-flight workers go on). Only the gateway honours it: the CLI `hermes kanban dispatch` the pass
runs does not, so the pass checks it itself, the way Hermes' agent/estop.py does:
- the sentinels are the process home's `ESTOP` and, when it is another directory, the Hermes root's
  (`~/.hermes` for a profile home under it; `<root>` for `<root>/profiles/<name>` elsewhere; else
  HERMES_HOME itself), so an operator's `~/.hermes/ESTOP` stops a profile's dispatcher too. A
  profile's own ESTOP does not stop the root home's dispatcher, in Hermes nor here;
- the body is optional JSON `{"reason", "engaged_at", "expires_at", ...}`; an empty, corrupt or
  unreadable file still holds (`touch ~/.hermes/ESTOP` pauses);
- `expires_at` (ISO 8601, naive means UTC) is a deadman: from that instant on the sentinel no longer
  holds. An `expires_at` that does not parse never expires. Hermes deletes an expired sentinel; the
  pass only reads;
- `ESTOP_KANBAN` (`hermes kanban pause`, in some 0.21 builds) pauses the kanban dispatcher alone and
  holds while it exists.
The pass runs as the Hermes user and follows links as Hermes does, but never opens a FIFO or a
device (it would hang) nor reads past 64 KiB: such a sentinel holds (fail closed).
"""

from __future__ import annotations

import errno
import json
import os
import stat
import time
from datetime import datetime, timezone
from pathlib import Path

from . import board

SENTINEL = "ESTOP"
KANBAN_SENTINEL = "ESTOP_KANBAN"
LIMIT = 64 << 10
_REASON_LIMIT = 80


def estop_path(hermes_home: Path) -> Path:
    """The sentinel `hermes pause` writes for this home."""
    return Path(hermes_home) / SENTINEL


def hermes_root(hermes_home: Path, native: Path | None = None) -> Path:
    """Hermes' get_default_hermes_root() for a process whose HERMES_HOME is `hermes_home`; `native`
    is the platform default home (`~/.hermes` of the user)."""
    native = Path(native) if native is not None else Path.home() / ".hermes"
    return board.root_of(Path(hermes_home), native)


def sentinels(hermes_home: Path, native: Path | None = None) -> list[Path]:
    """Every file whose presence may pause this home's dispatch, the home's first."""
    homes = [Path(hermes_home)]
    root = hermes_root(hermes_home, native)
    if os.path.realpath(root) != os.path.realpath(hermes_home):
        homes.append(root)
    return [home / name for name in (SENTINEL, KANBAN_SENTINEL) for home in homes]


def paused(hermes_home: Path, now: float | None = None, native: Path | None = None) -> str | None:
    """None when dispatch from `hermes_home` is not paused, else a short phrase for the log."""
    now = time.time() if now is None else now
    for path in sentinels(hermes_home, native):
        phrase = _hold(path, now)
        if phrase is not None:
            return phrase
    return None


def paused_env(env: dict[str, str], now: float | None = None) -> str | None:
    """paused() for a pass run with `env`: its HERMES_HOME, unset or blank meaning HOME/.hermes (the
    Hermes user's root home, where the pacer's `dispatch` runs)."""
    native = Path(env.get("HOME") or Path.home()) / ".hermes"
    home = env.get("HERMES_HOME", "").strip()
    return paused(Path(home) if home else native, now=now, native=native)


def _hold(path: Path, now: float) -> str | None:
    try:
        os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"{path}: cannot be checked ({exc.strerror}), held"
    try:
        body = _read(path)
    except OSError as exc:
        return f"{path}: unreadable ({exc.strerror or exc}), held"
    payload = _payload(body)
    if path.name == KANBAN_SENTINEL:
        return f"{path}{_since(payload)}{_reason(payload)}"
    if payload is None:
        return f"{path} (no JSON object in it), expires never"
    expires = _stamp(payload.get("expires_at"))
    if expires is not None and datetime.fromtimestamp(now, timezone.utc) >= expires:
        return None  # past its deadman: Hermes lifts the pause
    until = _iso(expires) if expires is not None else "never"
    return f"{path}{_since(payload)}, expires {until}{_reason(payload)}"


def _read(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        data = handle.read(LIMIT + 1)
    if len(data) > LIMIT:
        raise OSError(errno.EFBIG, f"larger than {LIMIT} bytes")
    return data


def _payload(body: bytes) -> dict | None:
    """The JSON object in the body, as Hermes decodes it (UTF-8, a byte order mark allowed)."""
    try:
        value = json.loads(body.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _stamp(value: object) -> datetime | None:
    if not isinstance(value, str) or not value.strip():
        return None
    parsed = _fromisoformat(value.strip())
    if parsed is None:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=timezone.utc)


def _fromisoformat(text: str) -> datetime | None:
    """datetime.fromisoformat as Hermes' Python (3.11+) reads the stamps it writes. Before 3.11 it
    refuses a trailing Z: read as +00:00. Other forms only 3.11 takes (basic format, week dates)
    stay unparsed there, so the sentinel holds: the safe side."""
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        pass
    if text[-1:] in ("Z", "z"):
        try:
            return datetime.fromisoformat(text[:-1] + "+00:00")
        except ValueError:
            pass
    return None


def _iso(moment: datetime) -> str:
    try:
        return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, ValueError):
        return moment.isoformat()


def _since(payload: dict | None) -> str:
    engaged = _stamp((payload or {}).get("engaged_at"))
    return f" since {_iso(engaged)}" if engaged is not None else ""


def _reason(payload: dict | None) -> str:
    """The operator's reason, cut short and printable: the file is the Hermes user's to write."""
    reason = (payload or {}).get("reason")
    if not isinstance(reason, str):
        return ""
    text = "".join(ch if ch.isprintable() else " " for ch in reason).strip()[:_REASON_LIMIT]
    return f" ({text})" if text else ""
