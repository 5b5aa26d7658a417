#!/bin/sh
# The manual recipe's capped dispatch, re-implemented as a baseline for the benchmark (do not
# deploy it): count the cards in `running`, then dispatch `MAX_PARALLEL - running`. `--max` is
# already a live cap on running cards, so the running cards are subtracted twice, and the count
# ignores workers still making their final LLM call after their card turned done.
set -eu
running=$("$HERMES_BIN" kanban --board "$BOARD" list --status running --json \
  | python3 -c 'import json, sys; print(len(json.load(sys.stdin)))')
remaining=$((MAX_PARALLEL - running))
if [ "$remaining" -le 0 ]; then
  echo "running=$running cap=$MAX_PARALLEL: nothing to do"
  exit 0
fi
exec "$HERMES_BIN" kanban --board "$BOARD" dispatch --max "$remaining" --json
