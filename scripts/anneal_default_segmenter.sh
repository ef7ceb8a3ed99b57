#!/bin/bash
# Stage 2 of the default segmenter's training: anneal the weights of stage 1
# (scripts/train_default_segmenter.sh) to a learning rate of 0, on the same mix, with a cosine
# schedule of its own; resumable: run the same command again after an interruption.
#
# Why (2026-12-02): stage 1's budget was 50 epochs of one cosine schedule (6,350 steps, about
# 3.5 hours at 4 minutes an epoch); on the shared 2-core CPU an epoch took 6.5 minutes, so the 21
# epochs left would have needed 2.3 more hours. Stage 1 was stopped after epoch 29 (its best
# checkpoint on validation, 3,683 steps, learning rate 3.8e-4 by then) and this stage decays that
# learning rate to 0 over 8 epochs (1,016 steps).
#
#   DATA=/work/data nohup scripts/anneal_default_segmenter.sh > runs/mix_small_anneal.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-work_data}
STAGE1=${STAGE1:-runs/mix_small/checkpoint-3683}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} HF_HUB_OFFLINE=1
exec halsr-hf train --dataset-dir "$DATA/acdc,$DATA/myops2020,$DATA/emidec" \
  --dataset-weights myops2020-cine=3,myops2020-lge=1,emidec-lge=0.5 \
  --best-model-sources acdc-ssl4mis,myops2020-cine \
  --model-name-or-path "$STAGE1" \
  --output-dir runs/mix_small_anneal --num-train-epochs 8 --learning-rate 3.8e-4 \
  --per-device-train-batch-size 16 --early-stopping-patience 20 --save-total-limit 2 \
  --logging-steps 25 --disable-tqdm True --seed 43 --resume
