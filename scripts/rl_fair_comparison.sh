#!/usr/bin/env bash
# The fair RL comparison of docs/rl.md: one proxy, one algorithm, one KL mechanism and coefficient;
# only the penalty changes (mean vs std:k vs var:k vs up:beta2), on the ensemble and on the Laplace
# posterior, SEEDS seeds each, then `bayesrm report --rl` at equal KL per (proxy, algorithm).
#
#   bash scripts/rl_fair_comparison.sh [SCENARIO]          # default: sentiment (its rl-fair-* presets)
#
# Settings (environment variables, defaults in brackets):
#   ENSEMBLE [runs/demo/proxies/diverse/model]  LAPLACE [runs/demo/proxies/laplace/model]
#   ALGOS ["rloo ppo"]  SEEDS ["0 1 2"]  STEPS [60]  KL_MODE [penalty]  KL_COEF [0.05]
#   PROMPTS [chitchat:1024]  N_PILOT [256]: prompts split once into a pilot set (weights are chosen
#     there and never reported) and a disjoint main set
#   WEIGHTS ["0.5 1 2"]  PILOT_STEPS [10]  PILOT_ALGO [rloo]  PILOT_SEED [100]
#   JOBS [2] runs side by side (one thread each)  OUT [runs/rl-fair]
#   EXTRA [""]: more --set KEY=VALUE for every run (e.g. "prompts_per_step=4 max_new_tokens=8" for a smoke test)
#
# The penalty weight of each (proxy, penalty) is the one whose pilot run had the highest mean gold over its
# last 3 steps (ties: the smaller weight). Every run resumes from its checkpoint if interrupted. Outputs:
# OUT/prompts/{pilot,main}.jsonl, OUT/pilot/*, OUT/weights.json, OUT/runs/*, OUT/report-<proxy>-<algo>/.
set -euo pipefail
cd "$(dirname "$0")/.."
SCENARIO="${1:-sentiment}"
ENSEMBLE="${ENSEMBLE:-runs/demo/proxies/diverse/model}"
LAPLACE="${LAPLACE:-runs/demo/proxies/laplace/model}"
ALGOS="${ALGOS:-rloo ppo}"; SEEDS="${SEEDS:-0 1 2}"; STEPS="${STEPS:-60}"
KL_MODE="${KL_MODE:-penalty}"; KL_COEF="${KL_COEF:-0.05}"
PROMPTS="${PROMPTS:-chitchat:1024}"; N_PILOT="${N_PILOT:-256}"
WEIGHTS="${WEIGHTS:-0.5 1 2}"; PILOT_STEPS="${PILOT_STEPS:-10}"; PILOT_ALGO="${PILOT_ALGO:-rloo}"; PILOT_SEED="${PILOT_SEED:-100}"
JOBS="${JOBS:-2}"; OUT="${OUT:-runs/rl-fair}"; EXTRA="${EXTRA:-}"
BAYESRM="${BAYESRM:-.venv/bin/bayesrm}"; PY="${PY:-.venv/bin/python}"
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export SCENARIO KL_MODE KL_COEF EXTRA BAYESRM OUT
for d in "$ENSEMBLE" "$LAPLACE"; do [ -e "$d" ] || { echo "no proxy at $d (run bayesrm demo, or set ENSEMBLE / LAPLACE)" >&2; exit 2; }; done
ENSEMBLE="$(realpath "$ENSEMBLE")"; LAPLACE="$(realpath "$LAPLACE")"
mkdir -p "$OUT/prompts" "$OUT/pilot" "$OUT/runs"
OUT="$(realpath "$OUT")"

# 0. disjoint pilot / main prompt sets (written once)
[ -f "$OUT/prompts/main.jsonl" ] || "$PY" - "$PROMPTS" "$N_PILOT" "$OUT/prompts" <<'EOF'
import json, sys
from bayesrm.data.prompts import prompt_source
spec, n_pilot, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
prompts = prompt_source(spec, seed=12345)
if len(prompts) <= n_pilot:
    sys.exit(f"{spec}: {len(prompts)} prompts, need more than N_PILOT={n_pilot}")
for name, part in (("pilot", prompts[:n_pilot]), ("main", prompts[n_pilot:])):
    with open(f"{out}/{name}.jsonl", "w") as f:
        f.writelines(json.dumps({"prompt": p}) + "\n" for p in part)
EOF

# one run: DIR PRESET PROXY ALGO SEED STEPS PROMPTS REWARD
run_one() {
  local dir="$1" preset="$2" proxy="$3" algo="$4" seed="$5" steps="$6" prompts="$7" reward="$8"
  local resume=()
  if [ -d "$dir/checkpoint" ]; then resume=(--resume); else rm -rf "$dir"; fi
  # shellcheck disable=SC2086
  "$BAYESRM" rl --config "$SCENARIO" --preset "$preset" --algo "$algo" --steps "$steps" --out "$dir" --quiet \
    --set "proxy=$proxy" "seed=$seed" "prompts=$prompts" "reward=$reward" "kl_mode=$KL_MODE" "kl_coef=$KL_COEF" $EXTRA \
    "${resume[@]}" >>"$dir.log" 2>&1 || { echo "FAILED: $dir (see $dir.log)" >&2; return 1; }
}
export -f run_one

# 1. pilot: every weight of every penalty on both proxies, one seed, pilot prompts
jobs="$OUT/pilot/jobs.txt"; : >"$jobs"
for proxy in ensemble laplace; do
  path="$ENSEMBLE"; [ "$proxy" = laplace ] && path="$LAPLACE"
  for penalty in std var up; do
    key=k; [ "$penalty" = up ] && key=beta2
    for w in $WEIGHTS; do
      echo "$OUT/pilot/$proxy-$penalty-$w rl-fair-$penalty $path $PILOT_ALGO $PILOT_SEED $PILOT_STEPS $OUT/prompts/pilot.jsonl zscore|$penalty:$key=$w" >>"$jobs"
    done
  done
done
xargs -P "$JOBS" -L 1 bash -c 'run_one "$@"' _ <"$jobs"

# 2. choose each (proxy, penalty)'s weight on the pilot
"$PY" - "$OUT" "$WEIGHTS" <<'EOF'
import json, sys
from bayesrm.alignment.rl.tracking import JsonlLog
out, weights = sys.argv[1], sys.argv[2].split()
chosen = {}
for proxy in ("ensemble", "laplace"):
    for penalty in ("std", "var", "up"):
        scores = {}
        for w in weights:
            log = JsonlLog(f"{out}/pilot/{proxy}-{penalty}-{w}/log.jsonl").read()
            gold = [r["gold"] for r in log[-3:] if isinstance(r.get("gold"), (int, float))]
            scores[w] = sum(gold) / len(gold) if gold else float("-inf")
        best = max(weights, key=lambda w: (scores[w], -float(w)))
        chosen[f"{proxy}-{penalty}"] = {"weight": best, "pilot_gold": scores}
json.dump(chosen, open(f"{out}/weights.json", "w"), indent=1)
print(json.dumps(chosen, indent=1))
EOF

# 3. main runs: the chosen weights, every algorithm and seed, main prompts
jobs="$OUT/runs/jobs.txt"; : >"$jobs"
for proxy in ensemble laplace; do
  path="$ENSEMBLE"; [ "$proxy" = laplace ] && path="$LAPLACE"
  for penalty in mean std var up; do
    reward="zscore|mean"
    if [ "$penalty" != mean ]; then
      key=k; [ "$penalty" = up ] && key=beta2
      w="$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]]['weight'])" "$OUT/weights.json" "$proxy-$penalty")"
      reward="zscore|$penalty:$key=$w"
    fi
    for algo in $ALGOS; do
      for seed in $SEEDS; do
        echo "$OUT/runs/$proxy-$penalty-$algo-s$seed rl-fair-$penalty $path $algo $seed $STEPS $OUT/prompts/main.jsonl $reward" >>"$jobs"
      done
    done
  done
done
xargs -P "$JOBS" -L 1 bash -c 'run_one "$@"' _ <"$jobs"

# 4. equal-KL comparison per (proxy, algorithm)
for proxy in ensemble laplace; do
  for algo in $ALGOS; do
    methods=()
    for penalty in mean std var up; do
      dirs=""
      for seed in $SEEDS; do dirs="${dirs:+$dirs,}$OUT/runs/$proxy-$penalty-$algo-s$seed"; done
      methods+=("$penalty=$dirs")
    done
    "$BAYESRM" report --rl "${methods[@]}" --out "$OUT/report-$proxy-$algo"
  done
done
