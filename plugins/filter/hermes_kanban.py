"""Filters for the kanban keys of a Hermes config: hermes_pacer.pacer.native_in_progress_rule and
hermes_pacer.pacer.native_in_progress_value.

Hermes' own cap on cards in progress, `kanban.max_in_progress`, means different things by release:
- 0.14 - 0.15 do not read it;
- 0.16 - 0.19: unset is no cap; set, it clamps the pacer's `dispatch --max` and counts the running
  cards twice (upstream issue #33326), so the board under-dispatches: the role removes it;
- 0.20 and later: unset is a cap derived from memory, clamp(MemTotal MiB // 512, 2, 8), counted over
  every board of the Hermes home and applied to the CLI's `dispatch` too; 0 or anything below 1 also
  means that derived cap. A set value is counted once (running cards of every board plus this
  pass's spawns), so the role sets it to what the pacer may ever run on that home: the sum of the
  boards' caps. The pacer keeps the real budget (board caps, endpoint caps); Hermes' cap only must
  never bind first.
"""

from __future__ import annotations

import re

from ansible.errors import AnsibleFilterError

_VERSION = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)(?:[.+-]?[0-9A-Za-z][0-9A-Za-z.+-]*)?$")
SET_SINCE = (0, 20)
CAP_RANGE = (1, 1000)


def _release(version) -> tuple[int, int, int]:
    match = _VERSION.match(str(version).strip()) if isinstance(version, str) else None
    if not match:
        raise AnsibleFilterError(
            f"native_in_progress_rule: Hermes version {version!r} is invalid: expected a release such as"
            " 0.19.0, v0.21.3 or 0.22.2.post1"
        )
    return tuple(int(part) for part in match.groups())


def native_in_progress_rule(version) -> str:
    """'set' when the Hermes `version` needs kanban.max_in_progress set for the pacer, else 'unset'."""
    return "set" if _release(version)[:2] >= SET_SINCE else "unset"


def native_in_progress_value(caps) -> int:
    """Hermes' kanban.max_in_progress for a home whose paced boards have the caps `caps` (their
    max_parallel): their sum, which no dispatch of the pacer can exceed. 0 for no boards: nothing is
    paced there, and the role leaves the key as it is."""
    if not isinstance(caps, (list, tuple)):
        raise AnsibleFilterError(f"native_in_progress_value: expected a list of board caps, got {caps!r}")
    total = 0
    for cap in caps:
        try:
            value = int(cap) if not isinstance(cap, (bool, float)) else None
        except (TypeError, ValueError):
            value = None
        if value is None or not CAP_RANGE[0] <= value <= CAP_RANGE[1]:
            raise AnsibleFilterError(
                f"native_in_progress_value: max_parallel={cap!r} is invalid: expected a whole number"
                f" from {CAP_RANGE[0]} to {CAP_RANGE[1]}"
            )
        total += value
    return total


class FilterModule:
    def filters(self):
        return {
            "native_in_progress_rule": native_in_progress_rule,
            "native_in_progress_value": native_in_progress_value,
        }
