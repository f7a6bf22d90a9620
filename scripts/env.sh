#!/usr/bin/env bash
# Runs a command inside this project's virtualenv, creating it first if needed.
#
# The venv lives outside the clone, keyed by a hash of the dependency files and the Python it is
# built with, so every clone on a machine (CI's fresh ones included) shares it until one of them
# changes. Creation is locked and marked complete only at the end, so an interrupted install is
# redone, never half-used. Each clone imports its own code: the venv's editable install names the
# clone that built it, and PYTHONPATH puts this clone ahead of it. The command runs in the
# caller's folder, so relative paths mean what the caller typed.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"
python_id="$("$python" -c 'import platform, sys; print(sys.version, platform.machine())')"
# The version line too: the editable install's metadata records the version at install time.
key="$(cat "$repo/pyproject.toml" "$repo/constraints.txt" <(grep -h "^__version__" "$repo/torchreid_fgdi/__init__.py") <(echo "$python_id") | sha256sum | cut -c1-16)"
cache="${TORCHREID_FGDI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/torchreid-fgdi}"
venv="$cache/venv-$key"
mkdir -p "$cache"

exec 9>"$venv.lock"
flock 9
if [ ! -f "$venv/.complete" ]; then
  echo "[env] creating $venv with $python ($python_id); first run on this machine: a few minutes," \
    "torch is a multi-GB CUDA build (no CPU build of the pinned pair installs here, see README)" >&2
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip "setuptools>=77" >&2
  "$venv/bin/python" -m pip install --progress-bar on -c "$repo/constraints.txt" -e "$repo[test]" >&2
  touch "$venv/.complete"
fi
flock -u 9

export PATH="$venv/bin:$PATH"
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
exec "$@"
