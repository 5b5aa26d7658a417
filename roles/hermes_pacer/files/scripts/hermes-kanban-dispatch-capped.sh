#!/bin/sh
# hermes-kanban-dispatch-capped.sh: one pacing pass for one Hermes Kanban board.
# hermes-kanban-dispatch-subminute.sh (this same script under that name): RUNS_PER_MINUTE passes
# spread over one minute, for cron. hermes-pacer-verify.sh (same again): check the host.
# hermes-kanban-flow.sh (same again): create the cards of parent/child flow files.
# hermes-pacer (same again): its arguments name the subcommand, e.g. `hermes-pacer verify`,
# `hermes-pacer adopt-cron ...` (the role runs cron adoption so).
# The logic lives in the hermes_pacer package installed beside this script (stdlib-only Python;
# YAML flow files also need PyYAML, or PACER_PYTHON naming a Python that has it);
# run with --help for the environment it reads.
set -eu
case $(basename -- "$0") in
  hermes-pacer) command= ;;
  *subminute*) command=subminute ;;
  *verify*) command=verify ;;
  *flow*) command=flow ;;
  *) command=capped ;;
esac
here=$(dirname -- "$(readlink -f -- "$0")")
for lib in "$here" "$here/.."; do
  if [ -f "$lib/hermes_pacer/__main__.py" ]; then
    PYTHONPATH=$lib exec "${PACER_PYTHON:-python3}" -s -m hermes_pacer ${command:+"$command"} "$@"
  fi
done
echo "hermes-pacer: error: the hermes_pacer package is not beside $0" >&2
exit 1
