#!/usr/bin/env bash
# The README's test command and CI's: lint (ruff check, ruff format --check), then the tests, in
# the project's virtualenv (scripts/env.sh). Arguments go to pytest, e.g. `tests/test_main.py -x`.
set -euo pipefail
env_sh="$(dirname "${BASH_SOURCE[0]}")/env.sh"
bash "$env_sh" ruff check .
bash "$env_sh" ruff format --check .
exec bash "$env_sh" python -m pytest "$@"
