#!/bin/bash
# bayesrm eval of one model on the shared real sets (first 64 pairs of each), shift AUROC UF vs HH.
# eval.sh MODEL NAME: the model runs/evalx/MODEL (or $R/MODEL), results in $R/eval-NAME. Rows of docs/evaluation.md:
#   eval.sh map map; eval.sh map-laplace laplace; and with R=/work/runs/cheap: eval.sh map-last-layer map-last-layer;
#   eval.sh lora-ens/model lora-ens; eval.sh warm/model warm; eval.sh mc-dropout/model mc-dropout
cd "$(dirname "$0")/../../.."
R=${R:-runs/evalx}
export PYTHONPATH=src HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 OMP_NUM_THREADS=1
S=../shared/data
/usr/bin/time -f "eval $1 wall %e s user %U s" nice -n 15 .venv/bin/python -m bayesrm.cli.main eval --model $R/$1 \
  --data $S/ultrafeedback-binarized-200-test.jsonl $S/hh-rlhf-harmless-base-test.jsonl.gz $S/mtbench-human-pairs.jsonl $S/pandalm-test-human.jsonl \
  --part all --skip-invalid true --max-pairs 64 --shifted $S/hh-rlhf-harmless-base-test.jsonl.gz --shift-in $S/ultrafeedback-binarized-200-test.jsonl@all \
  --shift-max 64 --batch-size 16 --out $R/eval-$2
