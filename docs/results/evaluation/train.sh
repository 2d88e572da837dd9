#!/bin/bash
# MiniLM + LoRA reward models on UltraFeedback 1k train for the evaluation suite table (resumable).
# Run from anywhere; R (default runs/evalx) is where the runs go (the ensemble, WARM and MC dropout rows: R=/work/runs/cheap).
set -eo pipefail
cd "$(dirname "$0")/../../.."
export PYTHONPATH=src HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 OMP_NUM_THREADS=1
PY="nice -n 15 .venv/bin/python -m bayesrm.cli.main"
D=../shared/data/ultrafeedback-binarized-1k-train.jsonl
COMMON="--data $D --test-fraction 0 --skip-invalid true --backbone minilm --max-length 128 --lora-r 8 --lora-layers 4 5 --learning-rate 2e-3 --num-train-epochs 1 --per-device-train-batch-size 16 --seed 0 --logging-steps 20"
R=${R:-runs/evalx}
[ -f $R/map/model/config.json ] || { /usr/bin/time -f "map wall %e s user %U s" $PY train $COMMON --method map --out $R/map; }
[ -f $R/map-laplace/config.json ] || /usr/bin/time -f "laplace wall %e s user %U s" $PY laplace --model $R/map/model --out $R/map-laplace --data $D --test-fraction 0 --skip-invalid true
# (--lora-layers 4 5 already adapts only the top 2 of 6 blocks; the frozen bottom 4 run once for all members)
[ -f $R/lora-ens/model/config.json ] || /usr/bin/time -f "ens wall %e s user %U s" $PY train $COMMON --method lora-ensemble --members 3 --out $R/lora-ens
[ -f $R/warm/model/config.json ] || /usr/bin/time -f "warm wall %e s user %U s" $PY train $COMMON --method warm --members 3 --out $R/warm
[ -f $R/mc-dropout/model/config.json ] || /usr/bin/time -f "mc wall %e s user %U s" $PY train $COMMON --method mc-dropout --samples 8 --dropout 0.1 --out $R/mc-dropout
echo ALLDONE
