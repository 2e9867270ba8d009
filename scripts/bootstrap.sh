#!/usr/bin/env bash
# Install what is missing — Python 3.11 virtualenv with pinned packages, Azurite from npm, and
# with --infra what only the tests need: the infrastructure checkers (checkov) and a headless
# Chromium (Debian's package) that opens the compliance report, and Microsoft's Kusto parser (npm) that
# checks every shipped KQL query — and nothing else.
# Quick (a few hash checks) when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

py=""
for candidate in "${PYTHON:-}" python3.11 python3; do
  if [ -n "$candidate" ] && command -v "$candidate" >/dev/null 2>&1 \
     && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    py=$candidate; break
  fi
done
if [ -z "$py" ]; then
  echo "Python 3.11 is required (Azure Functions Python 3.11 runtime); set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
command -v npm >/dev/null 2>&1 || { echo "Node.js 20+ with npm is required for Azurite" >&2; exit 1; }

if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv with $py"
  "$py" -m venv .venv
fi
want=$(cat requirements.txt requirements-ops.txt requirements-dev.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat .venv/.requirements.sha256 2>/dev/null || true)" != "$want" ]; then
  echo "bootstrap: installing Python packages (requirements-dev.txt)"
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt
  echo "$want" > .venv/.requirements.sha256
fi

# checkov pins many packages of its own: it lives in a virtualenv of its own (tests only).
if [ "${1:-}" = "--infra" ]; then
if [ ! -x .venv-infra/bin/python ]; then
  "$py" -m venv .venv-infra
fi
want_infra=$(sha256sum requirements-infra.txt | cut -d' ' -f1)
if [ "$(cat .venv-infra/.requirements.sha256 2>/dev/null || true)" != "$want_infra" ]; then
  echo "bootstrap: installing checkov (requirements-infra.txt)"
  .venv-infra/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
  .venv-infra/bin/python -m pip install -q --disable-pip-version-check -r requirements-infra.txt
  echo "$want_infra" > .venv-infra/.requirements.sha256
fi
fi

# The compliance report is checked in a real browser. Debian's chromium (no browser download by a
# test tool: this machine's network reaches package registries only).
if [ "${1:-}" = "--infra" ] && ! command -v chromium >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "bootstrap: installing chromium (apt-get, for the report's browser test)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends chromium >/dev/null; }
  else
    echo "bootstrap: chromium is missing; install it (e.g. apt-get install chromium) for the report's browser test" >&2
    exit 1
  fi
fi

lock=$(sha256sum tools/azurite/package-lock.json | cut -d' ' -f1)
if [ ! -x tools/azurite/node_modules/.bin/azurite ] || [ "$(cat tools/azurite/node_modules/.lock.sha256 2>/dev/null || true)" != "$lock" ]; then
  echo "bootstrap: installing Azurite (npm ci in tools/azurite)"
  (cd tools/azurite && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  echo "$lock" > tools/azurite/node_modules/.lock.sha256
fi

# axe-core, for tests/integration/test_report_accessibility.py (the report checked in Chromium).
alock=$(sha256sum tools/axe/package-lock.json | cut -d' ' -f1)
if [ ! -f tools/axe/node_modules/axe-core/axe.min.js ] || [ "$(cat tools/axe/node_modules/.lock.sha256 2>/dev/null || true)" != "$alock" ]; then
  echo "bootstrap: installing axe-core (npm ci in tools/axe)"
  (cd tools/axe && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  echo "$alock" > tools/axe/node_modules/.lock.sha256
fi

# Microsoft's Kusto parser, for tests/infra/test_kql.py (every shipped KQL query parsed and bound).
if [ "${1:-}" = "--infra" ]; then
  klock=$(sha256sum tools/kusto/package-lock.json | cut -d' ' -f1)
  if [ ! -d tools/kusto/node_modules/@kusto/language-service-next ] || [ "$(cat tools/kusto/node_modules/.lock.sha256 2>/dev/null || true)" != "$klock" ]; then
    echo "bootstrap: installing the Kusto parser (npm ci in tools/kusto)"
    (cd tools/kusto && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    echo "$klock" > tools/kusto/node_modules/.lock.sha256
  fi
fi
