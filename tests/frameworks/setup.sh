#!/usr/bin/env bash
# A second virtual environment for the agent-framework converter tests (tests/frameworks).
# langchain-mcp-adapters pins mcp<2, so these frameworks cannot share the project's environment;
# they read the tool list our server dumps (`python -m tests.frameworks.dump`) and results we
# produce, never the stillmotion package itself.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=${FRAMEWORKS_VENV:-.frameworks-venv}
PY=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -r tests/frameworks/requirements.txt
echo "$VENV ready"
