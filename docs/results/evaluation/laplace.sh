#!/bin/bash
# Laplace-LoRA on the MAP model, curvature from the first 300 UltraFeedback training pairs (CPU starved; see docs);
# last-layer Laplace on the MAP model, on all its training pairs (R=/work/runs/cheap for that row).
cd "$(dirname "$0")/../../.."
R=${R:-runs/evalx}
export PYTHONPATH=src HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 OMP_NUM_THREADS=1
while [ ! -f $R/map/model/config.json ]; do sleep 20; done
[ -f $R/map-laplace/config.json ] || /usr/bin/time -f "laplace wall %e s user %U s" nice -n 15 .venv/bin/python -m bayesrm.cli.main laplace --model $R/map/model --out $R/map-laplace --data ../shared/data/ultrafeedback-binarized-1k-train.jsonl --test-fraction 0 --skip-invalid true --max-pairs 300
[ -f $R/map-last-layer/config.json ] || /usr/bin/time -f "last-layer wall %e s user %U s" nice -n 15 .venv/bin/python -m bayesrm.cli.main laplace --model $R/map/model --last-layer --out $R/map-last-layer
echo ALLDONE
