#!/usr/bin/env bash
# README command 1: run the connector locally — Azurite + the Defender emulator (unless a real
# tenant is configured in local.settings.json) + the local Functions host on 127.0.0.1:7071.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/python -m tools.run_local "$@"
