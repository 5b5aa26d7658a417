"""Checks the Molecule scenarios run inside their container (testinfra, podman connection).

They do real work: the project's fake LLM endpoint runs in the container, cards are created on
real boards, the scheduler (not the test) dispatches them, and the endpoint's record says how
many requests were ever in flight at once.
"""

from __future__ import annotations

import json
import shlex
import time

HERMES_USER = "hermes"
HERMES_HOME = "/var/lib/hermes"
SCRIPTS = "/opt/hermes/scripts"
LOG_DIR = "/var/log/hermes"
LOCK_DIR = "/run/lock/hermes-pacer"
FAKE_LLM = "/opt/hermes-pacer-tests/fake_llm.py"
SETTINGS_DIR = "/etc/hermes-pacer"


HERMES_BINS = ("/opt/hermes/venv/bin/hermes", "/usr/local/bin/hermes")


def as_hermes(host, command: str):
    """Run hermes as the Hermes user: the role's install, else one installed by hand."""
    hermes_bin = next(path for path in HERMES_BINS if host.file(path).exists)
    return host.run(f"runuser -u {HERMES_USER} -- env HOME={HERMES_HOME} {hermes_bin} {command}")


def start_llm(host, port: int, hold: float = 1.0, final_hold: float = 6.0) -> None:
    unit = f"fake-llm-{port}"
    host.run(f"systemctl stop {unit}")
    result = host.run(
        f"systemd-run --unit={unit} python3 {FAKE_LLM} --port {port} --hold {hold} --final-hold {final_hold}"
    )
    assert result.rc == 0, result.stderr
    for _ in range(50):
        if host.run(f"curl -sf http://127.0.0.1:{port}/stats").rc == 0:
            return
        time.sleep(0.2)
    raise AssertionError(f"the fake LLM on port {port} did not start")


def llm_stats(host, port: int) -> dict:
    return json.loads(host.check_output(f"curl -sf http://127.0.0.1:{port}/stats"))


def create_cards(host, board: str, count: int, assignee: str, key: str = "verify") -> list[str]:
    """Create cards; a create that prints nothing (seen once while a pass held the database) is
    retried with the same idempotency key, so it never makes a second card."""
    ids = []
    for index in range(count):
        for _ in range(5):
            out = as_hermes(
                host,
                f"kanban --board {board} create 'card {index}' --assignee {assignee} "
                f"--idempotency-key {key}-{board}-{index} --json",
            )
            if out.rc == 0 and out.stdout.strip():
                break
            time.sleep(1)
        assert out.rc == 0 and out.stdout.strip(), f"create failed: rc={out.rc} {out.stderr}"
        ids.append(json.loads(out.stdout)["id"])
    return ids


def statuses(host, board: str) -> dict[str, str]:
    out = as_hermes(host, f"kanban --board {board} list --json")
    assert out.rc == 0, out.stderr
    return {task["id"]: task["status"] for task in json.loads(out.stdout)}


def wait_done(host, cards: dict[str, list[str]], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pending = {
            board: [c for c, s in statuses(host, board).items() if c in ids and s != "done"]
            for board, ids in cards.items()
        }
        if not any(pending.values()):
            return
        time.sleep(3)
    # cron passes log to a file, systemd passes to the journal.
    logs = host.run(
        f"tail -n 30 {LOG_DIR}/kanban-dispatch-*.log; "
        f"journalctl -q --no-pager -o cat -n 60 {' '.join(f'-t hermes-pacer-{b}' for b in cards)}"
    ).stdout
    raise AssertionError(f"cards not done after {timeout}s: {pending}\n{logs}")


def pace_and_measure(host, boards: list[dict], count: int = 4, timeout: float = 300) -> None:
    """boards: [{name, cap, assignee, port}]. Every board's endpoint must stay at or under its cap,
    and reach it (the cap was used, not only respected)."""
    for board in boards:
        start_llm(host, board["port"])
    cards = {}
    for board in boards:
        # The burst lands while the scheduler dispatches: the board keeper keeps Hermes 0.19's
        # processes from deleting the WAL under each other (issue #11), so no lock is held here.
        cards[board["name"]] = create_cards(host, board["name"], count, board["assignee"])
    wait_done(host, cards, timeout)
    for board in boards:
        peak = llm_stats(host, board["port"])["peak_in_flight"]
        assert peak == board["cap"], (
            f"board {board['name']}: peak {peak} requests in flight, cap {board['cap']}"
        )


def board_settings(host, board: str) -> dict[str, str]:
    """The settings file of a board: root's, readable by all, KEY=value lines (host.py's contract)."""
    settings = host.file(f"{SETTINGS_DIR}/{board}.env")
    assert settings.user == "root" and settings.group == "root" and settings.mode == 0o644
    assert host.file(SETTINGS_DIR).user == "root" and host.file(SETTINGS_DIR).mode == 0o755
    lines = [line for line in settings.content_string.splitlines() if line and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


def check_installed(host) -> None:
    for name in ("hermes-kanban-dispatch-capped.sh", "hermes-kanban-dispatch-subminute.sh"):
        script = host.file(f"{SCRIPTS}/{name}")
        assert script.user == "root" and script.group == "root" and script.mode == 0o755
    assert host.file(f"{SCRIPTS}/hermes_pacer/capped_pass.py").user == "root"
    log_dir = host.file(LOG_DIR)
    assert log_dir.is_directory and log_dir.user == HERMES_USER and log_dir.mode == 0o750
    assert host.file("/etc/logrotate.d/hermes-pacer").exists
    assert host.run(f"runuser -u {HERMES_USER} -- test -w {SCRIPTS}/hermes-kanban-dispatch-capped.sh").rc != 0
    # `hermes-pacer` on every user's PATH, the Hermes user's login shell included.
    command = host.file("/usr/local/bin/hermes-pacer")
    assert command.is_symlink and command.linked_to == f"{SCRIPTS}/hermes-pacer"
    version = host.run(f"runuser -l {HERMES_USER} -s /bin/sh -c 'hermes-pacer --version'")
    assert version.rc == 0 and version.stdout.startswith("hermes-pacer"), version.stdout + version.stderr


def check_gateway_dispatch_off(host, homes: list[str]) -> None:
    for home in homes:
        config = host.file(f"{home}/config.yaml").content_string
        assert "dispatch_in_gateway: false" in config, f"{home}/config.yaml:\n{config}"


def check_verify(host) -> None:
    """The host's own verdict: one dispatcher path per board, the cap holding, the config wired."""
    result = host.run(f"{SCRIPTS}/hermes-pacer-verify.sh")
    assert result.rc == 0 and "verdict: SAFE" in result.stdout, result.stdout + result.stderr
    report = json.loads(host.run(f"{SCRIPTS}/hermes-pacer-verify.sh --json").stdout)
    assert all(board["verdict"] == "ok" for board in report["boards"]) and report["boards"]


BURST_ROUNDS_VARIABLE = "HERMES_PACER_BURST_ROUNDS"
BURST_LOG = "/root/burst-rounds.log"  # in the container: one line per round
INTEGRITY = (
    "import sqlite3, sys; "
    "c = sqlite3.connect(f'file:{sys.argv[1]}?mode=ro', uri=True); "
    "print(c.execute('PRAGMA integrity_check').fetchone()[0])"
)


def burst_rounds(host, rounds: int, board: str, assignee: str, port: int, db: str) -> list[str]:
    """Issue #11's trigger, `rounds` times: 6 cards created as the Hermes user while the timer
    dispatches them and `hermes kanban stats --json` is polled every 3 s; then every card of every
    round is on the board and done, and a read-only PRAGMA integrity_check says ok. Returns one
    line per round (its duration), also appended to BURST_LOG in the container."""
    start_llm(host, port, hold=1.0, final_hold=2.0)
    hermes_bin = next(path for path in HERMES_BINS if host.file(path).exists)
    poller = "burst-stats-poll"
    host.run(f"systemctl stop {poller}")
    loop = f"while :; do {hermes_bin} kanban --board {board} stats --json >/dev/null 2>&1; sleep 3; done"
    unit = f"--unit={poller} --uid={HERMES_USER} --setenv=HOME={HERMES_HOME}"
    started = host.run(f"systemd-run {unit} /bin/sh -c {shlex.quote(loop)}")
    assert started.rc == 0, started.stderr
    run = int(time.time())  # a run of its own: the idempotency keys of an earlier run find nothing
    every: list[str] = []
    lines = []
    try:
        for round_no in range(1, rounds + 1):
            began = time.monotonic()
            ids = create_cards(host, board, 6, assignee, key=f"burst-{run}-{round_no}")
            every += ids
            wait_done(host, {board: ids}, timeout=300)
            check = host.run(f"runuser -u {HERMES_USER} -- python3 -c {shlex.quote(INTEGRITY)} {db}")
            on_board = statuses(host, board)
            lost = [card for card in every if card not in on_board]
            line = (
                f"round {round_no}/{rounds}: {time.monotonic() - began:.0f}s, "
                f"integrity_check {check.stdout.strip()}, lost {lost}"
            )
            lines.append(line)
            host.run(f"echo {shlex.quote(line)} >> {BURST_LOG}")
            assert check.rc == 0 and check.stdout.strip() == "ok", f"{line}\n{check.stderr}"
            assert not lost and all(on_board[card] == "done" for card in every), line
    finally:
        host.run(f"systemctl stop {poller}")
    return lines
