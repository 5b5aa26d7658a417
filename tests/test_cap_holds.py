"""The cap holds at the GPU: real Hermes, real boards, real workers, a fake LLM that records load."""

from __future__ import annotations

import os
import signal

import pytest

from hermes_host import WorkerSampler

pytestmark = pytest.mark.hermes
CAP = 2


def _pace_until_done(host, boards: dict[str | None, dict], timeout: float = 240):
    """Run one sub-minute loop per board (as cron would, minute after minute) until all is done."""
    sampler = WorkerSampler(host)
    sampler.start()
    loops = []
    try:
        for board, env in boards.items():
            loops.append(host.subminute(MAX_PARALLEL=str(CAP), RUNS_PER_MINUTE="30",
                                        **({"BOARD": board} if board else {}), **env))
        finished = host.wait_all_done(list(boards), timeout)
    finally:
        for loop in loops:
            os.killpg(loop.pid, signal.SIGTERM)
        logs = [loop.communicate()[0] for loop in loops]
        sampler.stop()
    assert finished, f"cards not all done: {[host.statuses(b) for b in boards]}\n" + "\n".join(logs)
    return sampler, logs


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
    host.configure(first.server_address[1], {"worker": first.server_address[1],
                                             "other-worker": second.server_address[1]})
    host.create_board("other")
    host.create_cards(4)
    host.create_cards(4, assignee="other-worker", board="other")

    sampler, logs = _pace_until_done(host, {None: {}, "other": {}})

    for endpoint in (first, second):
        assert endpoint.recorder.stats()["peak_in_flight"] == CAP, logs
    assert max(sampler.peak.values()) <= CAP, (sampler.peak, logs)
