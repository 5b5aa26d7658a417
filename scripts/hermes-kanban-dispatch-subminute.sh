#!/bin/sh
# hermes-kanban-dispatch-subminute.sh: RUNS_PER_MINUTE capped passes in one minute, for cron.
# The logic lives in the hermes_pacer package installed beside this script (stdlib-only Python);
# run with --help for the environment it reads.
set -eu
here=$(dirname -- "$(readlink -f -- "$0")")
for lib in "$here" "$here/../pacer"; do
  if [ -f "$lib/hermes_pacer/__main__.py" ]; then
    PYTHONPATH=$lib exec "${PACER_PYTHON:-python3}" -s -m hermes_pacer subminute "$@"
  fi
done
echo "hermes-pacer: error: the hermes_pacer package is not beside $0" >&2
exit 1
