#!/bin/sh
# hermes-kanban-dispatch-capped.sh: one pacing pass for one Hermes Kanban board.
# The recipe's other names are this same script: hermes-kanban-dispatch-subminute.sh
# (RUNS_PER_MINUTE passes spread over one minute, for cron), hermes-pacer-verify.sh (check the
# host), hermes-kanban-flow.sh (create the cards of parent/child flow files), and hermes-pacer
# (its arguments name the subcommand, e.g. `hermes-pacer adopt-cron ...`).
# The name it is run under picks the subcommand and is the name its usage and --version show; the
# logic lives in the hermes_pacer package installed beside it (stdlib-only Python; YAML flow files
# also need PyYAML, or PACER_PYTHON naming a Python that has it). Run it with --help.
set -eu
here=$(dirname -- "$(readlink -f -- "$0")")
for lib in "$here" "$here/.."; do
  if [ -f "$lib/hermes_pacer/__main__.py" ]; then
    HERMES_PACER_PROG=$(basename -- "$0") PYTHONPATH=$lib exec "${PACER_PYTHON:-python3}" -s -m hermes_pacer "$@"
  fi
done
echo "hermes-pacer: error: the hermes_pacer package is not beside $0" >&2
exit 1
