"""The cap holds at the GPU: real Hermes, real boards, real workers, a fake LLM that records load."""

from __future__ import annotations

import pytest
from hermes_host import pace_until_done

pytestmark = pytest.mark.slow
CAP = 2


def _pace_until_done(host, boards: dict[str | None, dict], timeout: float = 240):
    return pace_until_done(
        host, {board: {"MAX_PARALLEL": str(CAP), **env} for board, env in boards.items()}, timeout
    )


def test_cap_holds_at_the_endpoint_through_a_burst(paced_host):
    paced_host.create_cards(6)

    sampler, logs = _pace_until_done(paced_host, {None: {}})

    stats = paced_host.endpoint.recorder.stats()
    assert stats["peak_in_flight"] <= CAP, logs
    assert sampler.peak_total <= CAP, logs
    # The cap was used, not just respected: two workers ran side by side.
    assert stats["peak_in_flight"] == CAP
    assert len([r for r in stats["requests"] if r["kind"] == "final"]) == 6


def test_cap_holds_per_board_with_a_second_board(host, llm):
    first, second = llm.start(hold=1.0, final_hold=8.0), llm.start(hold=1.0, final_hold=8.0)
    host.configure(
        first.server_address[1], {"worker": first.server_address[1], "other-worker": second.server_address[1]}
    )
    host.create_board("other")
    host.create_cards(4)
    host.create_cards(4, assignee="other-worker", board="other")

    sampler, logs = _pace_until_done(host, {None: {}, "other": {}})

    for endpoint in (first, second):
        assert endpoint.recorder.stats()["peak_in_flight"] == CAP, logs
    assert max(sampler.peak.values()) <= CAP, (sampler.peak, logs)


def test_a_worker_that_appears_during_dispatch_makes_the_pass_hand_back(paced_host):
    """The race the cap must survive: between the pacer's count and Hermes' own, a card completes
    and its worker goes on to its final call. Hermes sees a free slot; the GPU does not.

    The window is reproduced by a `hermes` wrapper that starts a process looking like such a
    worker (same command line and board database in its environment) and then runs the real CLI.
    """
    cards = paced_host.create_cards(3)
    db = paced_host.root / "kanban.db"
    wrapper = paced_host.home / "hermes-with-late-worker"
    wrapper.write_text(
        "#!/bin/sh\n"
        'case "$*" in *" dispatch "*)\n'
        f"  HERMES_KANBAN_DB={db} HERMES_KANBAN_BOARD=default setsid python3 -c "
        "'import time; time.sleep(60)' 'work kanban task t_finishing' </dev/null >/dev/null 2>&1 &\n"
        "  sleep 0.5;;\nesac\n"
        f'exec {paced_host.hermes_bin} "$@"\n'
    )
    wrapper.chmod(0o755)

    proc = paced_host.capped(MAX_PARALLEL=str(CAP), HERMES_BIN=str(wrapper))

    fields = dict(part.split("=", 1) for part in proc.stdout.split() if "=" in part)
    spawned, reclaimed = fields["spawned"].split(","), fields["reclaimed"].split(",")
    assert len(spawned) == 2 and reclaimed == spawned[-1:], proc.stdout + proc.stderr
    statuses = paced_host.statuses()
    assert statuses[reclaimed[0]] == "ready"
    assert [t for t in cards if statuses[t] == "running"] == spawned[:1]
    real_workers = set(paced_host.workers()) - {"t_finishing"}
    assert real_workers <= set(spawned[:1])
