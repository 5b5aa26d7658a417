"""The slot arithmetic of one pass: what occupies the cap and how many slots are free.

`hermes kanban dispatch --max N` (0.14 - 0.19) is a live cap: it stops when cards in `running`
plus this pass's spawns reach N. Workers whose card already left `running` (the final LLM call
after kanban_complete) are invisible to it, so they are taken off N; running cards are not, since
Hermes counts those itself (subtracting them again is the manual recipe's double count): the pass
gives `--max` as the board's running cards plus the slots it may fill.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Plan:
    occupied: int  # distinct cards holding a slot: running, or with a live worker
    lingering: int  # live workers Hermes does not count: card no longer running, or board unknown
    slots: int  # how many more workers may start now


def plan(cap: int, running: frozenset[str], workers: frozenset[str], unattributed: int = 0) -> Plan:
    lingering = len(workers - running) + unattributed
    occupied = len(running | workers) + unattributed
    return Plan(occupied=occupied, lingering=lingering, slots=max(0, cap - occupied))


def excess(
    cap: int, running: frozenset[str], workers: frozenset[str], spawned: list[str], unattributed: int = 0
) -> list[str]:
    """Cards of this pass to hand back when the cap was overrun after the fact.

    A card that completes between the count and Hermes' own count frees a slot for Hermes but not
    for the GPU: its worker is still making its final call. The newest spawns are handed back
    while their workers are still starting, before their first request.
    """
    occupied = len(running | workers | frozenset(spawned)) + unattributed
    over = max(0, occupied - cap)
    return spawned[len(spawned) - over :] if over else []
