#!/bin/bash
# MiniLM + LoRA reward models on UltraFeedback 1k train for the evaluation suite table (resumable).
set -eo pipefail
cd /work/wt/evalx
export PYTHONPATH=src HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 OMP_NUM_THREADS=1
PY="nice -n 15 .venv/bin/python -m bayesrm.cli.main"
D=../shared/data/ultrafeedback-binarized-1k-train.jsonl
COMMON="--data $D --test-fraction 0 --skip-invalid true --backbone minilm --max-length 128 --lora-r 8 --lora-layers 4 5 --learning-rate 2e-3 --num-train-epochs 1 --per-device-train-batch-size 16 --seed 0 --logging-steps 20"
R=runs/evalx
[ -f $R/map/model/config.json ] || { /usr/bin/time -f "map wall %e s user %U s" $PY train $COMMON --method map --out $R/map; }
[ -f $R/map-laplace/config.json ] || /usr/bin/time -f "laplace wall %e s user %U s" $PY laplace --model $R/map/model --out $R/map-laplace --data $D --test-fraction 0 --skip-invalid true
[ -f $R/lora-ens/model/config.json ] || /usr/bin/time -f "ens wall %e s user %U s" $PY train $COMMON --method lora-ensemble --members 3 --top-layers 2 --out $R/lora-ens
echo ALLDONE
