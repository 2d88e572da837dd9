#!/usr/bin/env bash
# The RL comparison of docs/rl.md: MAP-mean vs diverse-ensemble-up vs Laplace-var (the sentiment
# scenario's rl-small-* presets), two seeds each, then `bayesrm report --rl`.
#
#   bash scripts/rl_comparison.sh [STEPS] [OUT]        # default 40 steps, runs/rl-compare
#
# Needs the proxies of `bayesrm demo` (runs/demo/proxies). The two seeds run side by side with one
# thread each (2 cores); a run that was interrupted is resumed from its last checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS="${1:-40}"
OUT="${2:-runs/rl-compare}"
BAYESRM=".venv/bin/bayesrm"
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
[ -d runs/demo/proxies/map ] || "$BAYESRM" demo

one_seed() {
  local seed="$1"
  for preset in rl-small-map rl-small-up rl-small-laplace; do
    local dir="$OUT/$preset-seed$seed"
    local resume=()
    if [ -d "$dir/checkpoint" ]; then resume=(--resume)
    else rm -rf "$dir"; fi                  # died before its first checkpoint: start again
    "$BAYESRM" rl --config sentiment --preset "$preset" --seed "$seed" --steps "$STEPS" \
      --out "$dir" --quiet "${resume[@]}" >>"$OUT/$preset-seed$seed.log" 2>&1
  done
}

mkdir -p "$OUT"
one_seed 0 & pid0=$!
one_seed 1 & pid1=$!
wait "$pid0" "$pid1"

runs=()
for preset in rl-small-map rl-small-up rl-small-laplace; do
  runs+=("${preset#rl-small-}=$OUT/$preset-seed0,$OUT/$preset-seed1")
done
"$BAYESRM" report --rl "${runs[@]}" --out "$OUT"
