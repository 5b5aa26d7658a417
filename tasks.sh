#!/bin/sh
# tasks.sh: run a task of tasks.py (`./tasks.sh --list` lists them) in the project's own virtualenv.
# It creates .venv with the pinned toolchain (pyproject.toml's `dev` extra at the versions of
# constraints.txt) on first use and again whenever either file changes, so a fresh machine needs
# nothing but python3.
set -eu
cd -- "$(dirname -- "$0")"
venv=.venv
stamp=$venv/.toolchain.sha256
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ ! -x "$venv/bin/invoke" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "tasks.sh: installing the toolchain into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -c constraints.txt --upgrade pip
  "$venv/bin/pip" install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
  echo "$want" > "$stamp"
fi
PATH="$PWD/$venv/bin:$PATH"
export PATH
exec "$venv/bin/invoke" "$@"
