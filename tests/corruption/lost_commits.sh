#!/bin/bash
# lost_commits.sh HERMES_VENV [ROUNDS]: the smallest reproduction of board damage by Hermes' own
# processes, with the real CLI. A process keeps a board connection across writes (victim.py, as
# the dispatcher and workers do); between its writes `hermes kanban list` runs and exits, then
# `hermes kanban create` adds 3 cards. With Hermes 0.19 the list's close deletes the WAL the kept
# connection still writes to, and the kept connection's own close then checkpoints its stale WAL
# over the 3 committed cards: they vanish. KEEPER=1 holds a read-only connection to the board
# meanwhile (what the pacer's board keeper does); KEEPER=pacer runs the board keeper itself
# (`hermes-pacer keep-open`) for the round and checks that SIGTERM ends it with status 0. Exit
# status 1 when a round lost a card, the board failed PRAGMA integrity_check or the keeper failed.
set -eu
venv=$1
rounds=${2:-3}
here=$(cd -- "$(dirname -- "$0")" && pwd)
bad=0
for round in $(seq "$rounds"); do
  home=$(mktemp -d)
  export HOME=$home
  "$venv/bin/hermes" kanban create seed >/dev/null 2>&1
  db=$home/.hermes/kanban.db
  keeper=
  if [ "${KEEPER:-}" = pacer ]; then
    "$here/../../scripts/hermes-pacer" keep-open >"$home/keeper.log" 2>&1 &
    keeper=$!
    for _ in $(seq 100); do grep -qs ' opened' "$home/keeper.log" && break; sleep 0.1; done
    grep -q ' opened' "$home/keeper.log" || { cat "$home/keeper.log" >&2; bad=$((bad + 1)); }
  elif [ -n "${KEEPER:-}" ]; then
    python3 -c 'import sqlite3, sys, time
c = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
c.execute("SELECT 1 FROM sqlite_master").fetchall()
time.sleep(120)' "$db" &
    keeper=$!
    sleep 0.3
  fi
  coproc KEPT { "$venv/bin/python" "$here/victim.py" "$db"; }
  read -r _ <&"${KEPT[0]}"
  echo write >&"${KEPT[1]}"; read -r _ <&"${KEPT[0]}"
  "$venv/bin/hermes" kanban list >/dev/null 2>&1
  wal=$( [ -e "$db-wal" ] && echo kept || echo deleted)
  echo write >&"${KEPT[1]}"; read -r _ <&"${KEPT[0]}"
  for i in 1 2 3; do "$venv/bin/hermes" kanban create "other $i" >/dev/null 2>&1; done
  listed=$("$venv/bin/hermes" kanban list 2>/dev/null | grep -c 'other' || true)
  echo write >&"${KEPT[1]}"; read -r _ <&"${KEPT[0]}"
  echo close >&"${KEPT[1]}"; read -r _ <&"${KEPT[0]}"
  wait "$KEPT_PID" 2>/dev/null || true
  if [ -n "$keeper" ]; then
    kill "$keeper"
    if [ "${KEEPER:-}" = pacer ]; then
      wait "$keeper" || { echo "round $round: the keeper exited $? on SIGTERM" >&2; bad=$((bad + 1)); }
    else
      wait "$keeper" 2>/dev/null || true
    fi
  fi
  result=$(python3 -c 'import sqlite3, sys
c = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
check = c.execute("PRAGMA integrity_check").fetchone()[0]
others = c.execute("SELECT count(*) FROM tasks WHERE title LIKE ?", ("other %",)).fetchone()[0]
print(others, check.replace(" ", "_"))' "$db")
  others=${result% *}
  check=${result#* }
  echo "round $round: WAL after the list exited: $wal; other cards listed before the close: $listed; after: $others; integrity_check: $check"
  if [ "$others" != 3 ] || [ "$check" != ok ]; then bad=$((bad + 1)); fi
  rm -rf -- "$home"
done
echo "rounds=$rounds damaged=$bad"
[ "$bad" = 0 ]
