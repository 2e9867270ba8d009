#!/usr/bin/env bash
# README command 2 (and what CI runs): lint, type-check, and the whole test suite against real
# Azurite and the emulators, with the coverage floor of pyproject's [tool.coverage.report].
# Extra arguments go to pytest (e.g. -k e2e); a subset is not held to the floor.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh --infra
echo "== ruff";  .venv/bin/ruff check .
echo "== mypy";  .venv/bin/mypy
echo "== ruff format"; .venv/bin/ruff format --check .
echo "== pytest"
if [ "$#" -eq 0 ]; then
  .venv/bin/python -m pytest -n 3 --cov --cov-report=term  # three workers (pytest-xdist), each with its own Azurite: the tests wait on I/O as much as they compute, so three beat two on 2 cores
else
  .venv/bin/python -m pytest "$@"
fi
