#!/bin/bash
# Laplace-LoRA on the MAP model, curvature from the first 300 UltraFeedback training pairs (CPU starved; see docs).
cd /work/wt/evalx
export PYTHONPATH=src HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 OMP_NUM_THREADS=1
while [ ! -f runs/evalx/map/model/config.json ]; do sleep 20; done
[ -f runs/evalx/map-laplace/config.json ] || /usr/bin/time -f "laplace wall %e s user %U s" nice -n 15 .venv/bin/python -m bayesrm.cli.main laplace --model runs/evalx/map/model --out runs/evalx/map-laplace --data ../shared/data/ultrafeedback-binarized-1k-train.jsonl --test-fraction 0 --skip-invalid true --max-pairs 300
echo ALLDONE
