#!/usr/bin/env bash
# Install (if needed) and run the main job: `bayesrm demo` on the embedded default models and data.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/bayesrm demo "$@"
