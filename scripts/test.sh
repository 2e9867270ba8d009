#!/usr/bin/env bash
# README command 2 (and what CI runs): lint, type-check, and the whole test suite against real
# Azurite and the emulators. Extra arguments go to pytest (e.g. -k e2e).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh --infra
echo "== ruff";  .venv/bin/ruff check .
echo "== mypy";  .venv/bin/mypy
echo "== pytest"; .venv/bin/python -m pytest "$@"
