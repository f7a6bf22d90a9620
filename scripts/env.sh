#!/usr/bin/env bash
# Runs a command inside this project's virtualenv, creating it first if needed.
#
# The venv lives outside the clone, keyed by a hash of the dependency files, so every clone on a
# machine (CI's fresh ones included) shares it until a dependency changes. Creation is locked
# and marked complete only at the end, so an interrupted install is redone, never half-used.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The version line too: the editable install's metadata records the version at install time.
key="$(cat "$repo/pyproject.toml" "$repo/constraints.txt" <(grep -h "^__version__" "$repo/torchreid_fgdi/__init__.py") | sha256sum | cut -c1-16)"
cache="${TORCHREID_FGDI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/torchreid-fgdi}"
venv="$cache/venv-$key"
python="${PYTHON:-python3}"
mkdir -p "$cache"

exec 9>"$venv.lock"
flock 9
if [ ! -f "$venv/.complete" ]; then
  echo "[env] creating $venv (first run on this machine: a few minutes)" >&2
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip "setuptools>=77" >&2
  "$venv/bin/python" -m pip install -q -c "$repo/constraints.txt" -e "$repo[test]" >&2
  touch "$venv/.complete"
fi
# The editable install points at the clone that built the venv; re-point it at this one.
if [ "$("$venv/bin/python" -c 'import importlib.util as u, os; print(os.path.dirname(os.path.dirname(u.find_spec("torchreid_fgdi").origin)))' 2>/dev/null)" != "$repo" ]; then
  "$venv/bin/python" -m pip install -q --no-deps --no-build-isolation -e "$repo" >&2
fi
flock -u 9

cd "$repo"
export PATH="$venv/bin:$PATH"
exec "$@"
