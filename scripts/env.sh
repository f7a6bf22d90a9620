#!/usr/bin/env bash
# Runs a command inside this project's virtualenv, creating it first if needed.
#
# The venv lives outside the clone, keyed by a hash of the dependency files and the Python it is
# built with, so every clone on a machine (CI's fresh ones included) shares it until one of them
# changes. Creation is locked and marked complete only at the end, so an interrupted install is
# redone, never half-used. Each clone imports its own code: the venv's editable install names the
# clone that built it, and PYTHONPATH puts this clone ahead of it. The command runs in the
# caller's folder, so relative paths mean what the caller typed. Other venvs in the cache that no
# command has used for TORCHREID_FGDI_VENV_DAYS (30) days, and none is using, are removed.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"
python_id="$("$python" -c 'import platform, sys; print(sys.version, platform.machine())')"
# pyproject.toml and setup.cfg: the build and the dependencies; the version line too: the editable install's metadata records the version at install time.
key="$(cat "$repo/pyproject.toml" "$repo/setup.cfg" "$repo/constraints.txt" <(grep -h "^__version__" "$repo/torchreid_fgdi/__init__.py") <(echo "$python_id") | sha256sum | cut -c1-16)"
cache="${TORCHREID_FGDI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/torchreid-fgdi}"
venv="$cache/venv-$key"
mkdir -p "$cache"

# A shared lock on the venv for as long as the command runs (it inherits the descriptor), an
# exclusive one only to create it: clones use a venv side by side, and no one removes it in use.
exec 9>"$venv.lock"
flock -s 9
if [ ! -f "$venv/.complete" ]; then
  flock -u 9
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
  flock -s 9
fi
touch "$venv/.used"

# Venvs of other dependency sets or Pythons (about 6 GB each) go once unused for a while.
unused_days="${TORCHREID_FGDI_VENV_DAYS:-30}"
for other in "$cache"/venv-*; do
  [ -d "$other" ] && [ "$other" != "$venv" ] || continue
  stamp="$other/.used"
  [ -e "$stamp" ] || stamp="$other"
  [ -n "$(find "$stamp" -maxdepth 0 -mtime +"$unused_days")" ] || continue
  exec 8>"$other.lock"
  if flock -n 8; then
    echo "[env] removing $other: unused for over $unused_days days (TORCHREID_FGDI_VENV_DAYS)" >&2
    rm -rf "$other"
  fi
  exec 8>&-
done

export PATH="$venv/bin:$PATH"
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
exec "$@"
