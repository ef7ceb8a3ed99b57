#!/bin/bash
# Train the default model's segmenter (HALSR-Net `small`), warm-started from the bundled model, on
# the ACDC + MyoPS 2020 + EMIDEC mix; resumable: run the same command again after an interruption.
#
#   halsr-hf prepare acdc-ssl4mis --source ../shared/data/acdc-ssl4mis --out $DATA/acdc
#   halsr-hf prepare myops2020 --source ../shared/data/myops2020 --out $DATA/myops2020
#   halsr-hf prepare emidec --source ../shared/data/emidec --out $DATA/emidec
#   DATA=/work/data nohup scripts/train_default_segmenter.sh > runs/mix_small.log 2>&1 &
#
# Budget (stated before the start, 2026-12-01): 50 epochs of the mix (2,029 crops an epoch with the
# weights below, 127 steps at batch 16: 6,350 steps), about 4 minutes an epoch on one CPU thread
# beside other work, so about 3.5 hours of wall time over as many sessions as it takes.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-work_data}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} HF_HUB_OFFLINE=1
exec halsr-hf train --dataset-dir "$DATA/acdc,$DATA/myops2020,$DATA/emidec" \
  --dataset-weights myops2020-cine=3,myops2020-lge=1,emidec-lge=0.5 \
  --best-model-sources acdc-ssl4mis,myops2020-cine \
  --model-name-or-path src/halsr_hf/default_model \
  --output-dir runs/mix_small --num-train-epochs 50 --learning-rate 1e-3 \
  --per-device-train-batch-size 16 --early-stopping-patience 20 --save-total-limit 2 \
  --logging-steps 25 --disable-tqdm True --seed 42 --resume
