"""Flows on real boards: created with their parents, idempotently, completed after a failure, and run
in dependency order under the pacer with the cap holding at the endpoint."""

from __future__ import annotations

import fcntl
import json
import sqlite3
import subprocess
import threading
import time

import pytest
from hermes_host import REPO, pace_until_done

pytestmark = pytest.mark.slow
FLOW = REPO / "scripts" / "hermes-kanban-flow.sh"
CAP = 2

CHAIN = """\
name: nightly-report
board: default
steps:
  - key: ingest
    title: Ingest yesterday's logs
    assignee: worker
    max_runtime: 30m
  - key: report
    title: Write the report
    assignee: worker
    body: Summarise the errors by service.
    parents: [ingest]
  - key: publish
    title: Publish the report
    assignee: worker
    priority: 5
    parents: [report]
"""

FAN = """\
name: release
board: {board}
steps:
  - {{key: build, title: Build, assignee: worker}}
  - {{key: test-unit, title: Unit tests, assignee: worker, parents: [build]}}
  - {{key: test-e2e, title: End-to-end tests, assignee: worker, parents: [build]}}
  - {{key: docs, title: Docs, assignee: worker, parents: [build]}}
  - {{key: ship, title: Ship, assignee: worker, parents: [test-unit, test-e2e, docs]}}
"""


def _flow(host, *args, hermes_bin: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    env = host.pacer_env(**({"HERMES_BIN": hermes_bin} if hermes_bin else {}))
    return subprocess.run(
        [str(FLOW), *map(str, args)], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def _write(host, name: str, text: str):
    path = host.home / name
    path.write_text(text)
    return path


def _created(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    return {step["key"]: step for flow in report["flows"] for step in flow["steps"]} | {"_report": report}


def _show(host, card: str, board: str | None = None) -> dict:
    return json.loads(host.kanban("show", card, "--json", board=board))


def _row(host, card: str, board: str = "default") -> sqlite3.Row:
    db = host.root / ("kanban.db" if board == "default" else f"kanban/boards/{board}/kanban.db")
    with sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True) as conn:
        conn.row_factory = sqlite3.Row
        return conn.execute("SELECT * FROM tasks WHERE id = ?", (card,)).fetchone()


@pytest.fixture
def board_host(host):
    """A Hermes home with the profile `worker` (no LLM needed: nothing is dispatched)."""
    host.configure(9, {"worker": 9})
    host.create_board("ops")
    return host


def test_a_chain_and_a_fan_out_fan_in_are_created_with_their_parents(board_host):
    host = board_host
    path = _write(host, "flows.yml", CHAIN)
    fan = _write(host, "release.yml", FAN.format(board="ops"))

    cards = _created(_flow(host, "--json", path, fan))

    assert cards["_report"]["created"] == 8 and cards["_report"]["exists"] == 0
    ingest, report, publish = (cards[k]["id"] for k in ("ingest", "report", "publish"))
    assert _show(host, ingest)["parents"] == []
    assert _show(host, report)["parents"] == [ingest]
    assert _show(host, publish)["parents"] == [report]
    assert _show(host, ingest)["children"] == [report]
    assert host.statuses() == {ingest: "ready", report: "todo", publish: "todo"}
    row = _row(host, report)
    assert (row["title"], row["body"], row["assignee"]) == (
        "Write the report",
        "Summarise the errors by service.",
        "worker",
    )
    assert _row(host, ingest)["max_runtime_seconds"] == 1800 and _row(host, publish)["priority"] == 5
    assert row["idempotency_key"] == "hermes-pacer:nightly-report:report"

    build = cards["build"]["id"]
    middle = [cards[k]["id"] for k in ("test-unit", "test-e2e", "docs")]
    for card in middle:
        assert _show(host, card, "ops")["parents"] == [build]
    assert sorted(_show(host, cards["ship"]["id"], "ops")["parents"]) == sorted(middle)
    assert sorted(_show(host, build, "ops")["children"]) == sorted(middle)
    assert list(host.statuses("ops").values()).count("ready") == 1


def test_a_second_run_creates_nothing(board_host):
    host = board_host
    path = _write(host, "flows.yml", CHAIN)
    first = _created(_flow(host, "--json", path))
    before = host.statuses()

    again = _flow(host, path)

    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[0] == "flow nightly-report on board default: 3 exist"
    assert host.statuses() == before
    second = _created(_flow(host, "--json", path))
    assert second["_report"]["created"] == 0 and second["_report"]["exists"] == 3
    assert all(
        second[k]["id"] == first[k]["id"] and second[k]["state"] == "exists" for k in ("ingest", "report")
    )


def test_a_card_that_no_longer_matches_its_step_is_reported_not_edited(board_host):
    host = board_host
    path = _write(host, "flows.yml", CHAIN)
    first = _created(_flow(host, "--json", path))
    path.write_text(CHAIN.replace("title: Write the report", "title: Write the weekly report"))

    again = _flow(host, path)

    assert again.returncode == 0, again.stderr
    assert (
        "    warning: the card differs from the file: title is 'Write the report'; cards are never edited"
        in again.stdout.splitlines()
    )
    assert _row(host, first["report"]["id"])["title"] == "Write the report" and len(host.statuses()) == 3


def test_dry_run_prints_the_plan_and_creates_nothing(board_host):
    host = board_host
    path = _write(host, "flows.yml", CHAIN)

    plan = _flow(host, "--dry-run", path)

    assert plan.returncode == 0, plan.stderr
    assert plan.stdout.splitlines() == [
        "flow nightly-report on board default: 3 to create",
        "  planned  ingest   -",
        "  planned  report   -            after ingest",
        "  planned  publish  -            after report",
    ]
    assert host.statuses() == {}
    made = _created(_flow(host, "--json", path))
    plan = _created(_flow(host, "--dry-run", "--json", path))
    assert plan["_report"]["dry_run"] and plan["_report"]["exists"] == 3
    assert plan["report"]["parent_ids"] == [made["ingest"]["id"]]


BAD_FILES = [
    (CHAIN.replace("parents: [ingest]", "parents: [ingets]"), "parents names 'ingets', which is not a step"),
    (
        CHAIN.replace("parents: [ingest]", "parents: [publish]"),
        "parents form a cycle (report -> publish -> report",
    ),
    (CHAIN.replace("key: publish", "key: report"), "step key 'report' appears twice"),
    (CHAIN.replace("title: Write the report", "title: ''"), "(step report): title='' is invalid"),
    (CHAIN.replace("board: default", "board: Default"), "board='Default' is invalid: expected a board slug"),
    (CHAIN.replace("board: default", "board: missing"), "board='missing' does not exist"),
    (CHAIN.replace("priority: 5", "priority: urgent"), "priority='urgent' is invalid: expected an integer"),
    (
        CHAIN.replace("max_runtime: 30m", "max_runtime: soon"),
        "max_runtime='soon' is invalid: expected seconds",
    ),
    (CHAIN.replace("assignee: worker", "assignee: nobody", 1), "assignee='nobody' is not a Hermes profile"),
    ("steps: [\n", "not valid YAML"),
]


def test_bad_files_exit_2_naming_the_step_and_create_nothing(board_host):
    host = board_host
    host.create_cards(1)  # the board is not empty: "unchanged" means more than "empty"
    before = host.statuses()
    for index, (text, message) in enumerate(BAD_FILES):
        # A valid flow in the same run is not created either: nothing of a bad run reaches a board.
        good = _write(host, "good.yml", FAN.format(board="default"))
        proc = _flow(host, good, _write(host, f"bad-{index}.yml", text))
        assert proc.returncode == 2, (message, proc.stdout, proc.stderr)
        assert message in proc.stderr, (message, proc.stderr)
        assert proc.stderr.rstrip().endswith("hermes-pacer: nothing was created")
        assert proc.stdout == ""
        assert host.statuses() == before and host.statuses("ops") == {}


def _failing_hermes(host, fail_on: int, how: str) -> str:
    """The real hermes, except that its Nth `kanban create` fails: the CLI breaking mid-flow."""
    counter = host.home / "creates"
    counter.write_text("0")
    wrapper = host.home / "hermes-failing"
    failure = {
        "exit": "echo 'Error: database is locked' >&2; exit 1",
        # The card is made but its output lost (seen once while a pass held the database).
        "silent": f'"{host.hermes_bin}" "$@" >/dev/null; exit 0',
    }[how]
    wrapper.write_text(
        "#!/bin/sh\n"
        'case " $* " in *" create "*)\n'
        f"  n=$(( $(cat {counter}) + 1 )); echo $n > {counter}\n"
        f'  if [ "$n" -eq {fail_on} ]; then {failure}; fi;;\n'
        "esac\n"
        f'exec "{host.hermes_bin}" "$@"\n'
    )
    wrapper.chmod(0o755)
    return str(wrapper)


@pytest.mark.parametrize("how", ["exit", "silent"])
def test_a_flow_created_half_way_is_completed_by_the_next_run(board_host, how):
    host = board_host
    path = _write(host, "release.yml", FAN.format(board="default"))

    broken = _flow(host, path, hermes_bin=_failing_hermes(host, 3, how))

    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "Run it again" in broken.stderr and "step test-e2e" in broken.stderr
    assert "  failed   test-e2e" in broken.stdout
    assert len(host.statuses()) == (2 if how == "exit" else 3)

    fixed = _created(_flow(host, "--json", path))

    assert fixed["_report"]["created"] == (3 if how == "exit" else 2)
    assert len(host.statuses()) == 5  # no duplicate of the cards made before the failure
    ship = _show(host, fixed["ship"]["id"])
    assert sorted(ship["parents"]) == sorted(fixed[k]["id"] for k in ("test-unit", "test-e2e", "docs"))
    assert fixed["_report"]["exists"] == (2 if how == "exit" else 3)


def test_creation_waits_for_the_boards_pacing_lock(board_host):
    host = board_host
    path = _write(host, "flows.yml", CHAIN)
    lock_dir = host.home / "locks"
    lock_dir.mkdir(mode=0o700)
    with open(lock_dir / "board-default.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        refused = _flow(host, "--lock-wait", "1", path)
        assert refused.returncode == 1 and "stayed held for 1s" in refused.stderr, refused.stderr
        assert host.statuses() == {}
        threading.Timer(2, lambda: fcntl.flock(held, fcntl.LOCK_UN)).start()
        started = time.monotonic()
        waited = _flow(host, path)
        assert waited.returncode == 0, waited.stderr
        assert time.monotonic() - started >= 1.5
    assert len(host.statuses()) == 3


def test_under_the_pacer_steps_run_after_their_parents_and_the_cap_holds(host, llm):
    endpoint = llm.start(hold=0.5, final_hold=1)
    port = endpoint.server_address[1]
    host.configure(port, {"worker": port})
    cards = _created(_flow(host, "--json", _write(host, "release.yml", FAN.format(board="default"))))
    ids = {key: cards[key]["id"] for key in ("build", "test-unit", "test-e2e", "docs", "ship")}

    # A loop lasts one minute; on a busy host the five steps take longer, and cron starts the next.
    sampler, logs = pace_until_done(host, {None: {"MAX_PARALLEL": str(CAP)}}, timeout=240)
    log = "\n".join(logs)

    stats = endpoint.recorder.stats()
    assert stats["peak_in_flight"] <= CAP and sampler.peak_total <= CAP, log
    requests = stats["requests"]

    def first_request(card: str) -> float:
        return min(r["start"] for r in requests if r["task"] == card)

    def completed(card: str) -> float:
        # The kanban_complete tool call marks the card done once its request has been answered.
        return max(r["end"] for r in requests if r["task"] == card and r["kind"] == "tool")

    parents = {
        "test-unit": ["build"],
        "test-e2e": ["build"],
        "docs": ["build"],
        "ship": ["test-unit", "test-e2e", "docs"],
    }
    for child, its_parents in parents.items():
        for parent in its_parents:
            assert first_request(ids[child]) > completed(ids[parent]), (child, parent, log)
