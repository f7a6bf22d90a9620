#!/usr/bin/env bash
# The README's test command and CI's: lint (ruff check, ruff format --check), then the tests, in
# the project's virtualenv (scripts/env.sh), from the repository root (test paths are relative to
# it). Arguments go to pytest, e.g. `tests/test_main.py -x`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# The browser tests open pages in Debian's headless Chromium: installed here when missing and
# apt-get can (as root; about 20 s, once). Without it they are skipped and say what to install.
if ! command -v chromium-headless-shell >/dev/null && ! command -v chromium >/dev/null \
  && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "[test] installing chromium-headless-shell (apt-get) for the browser tests" >&2
  log="$(mktemp)"
  if ! { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=60 \
    --no-install-recommends chromium-headless-shell; } >"$log" 2>&1; then
    tail -n 5 "$log" >&2
    echo "[test] chromium-headless-shell did not install: the browser tests will be skipped" >&2
  fi
  rm -f "$log"
fi
bash scripts/env.sh ruff check .
bash scripts/env.sh ruff format --check .
exec bash scripts/env.sh python -m pytest "$@"
