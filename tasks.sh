#!/bin/sh
# tasks.sh: run a task of tasks.py (`./tasks.sh --list` lists them) in the project's own virtualenv.
# It creates .venv with the pinned toolchain of pyproject.toml on first use and again whenever
# pyproject.toml changes, so a fresh machine needs nothing but python3.
set -eu
cd -- "$(dirname -- "$0")"
venv=.venv
stamp=$venv/.pyproject.sha256
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -x "$venv/bin/invoke" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "tasks.sh: installing the toolchain into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check --upgrade pip
  "$venv/bin/pip" install --quiet --disable-pip-version-check -e '.[dev]'
  echo "$want" > "$stamp"
fi
PATH="$PWD/$venv/bin:$PATH"
export PATH
exec "$venv/bin/invoke" "$@"
