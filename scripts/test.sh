#!/usr/bin/env bash
# The README's test command and CI's: lint (ruff check, ruff format --check), then the tests, in
# the project's virtualenv (scripts/env.sh), from the repository root (test paths are relative to
# it). Arguments go to pytest, e.g. `tests/test_main.py -x`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/env.sh ruff check .
bash scripts/env.sh ruff format --check .
exec bash scripts/env.sh python -m pytest "$@"
