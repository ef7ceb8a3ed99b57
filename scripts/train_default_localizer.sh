#!/bin/bash
# Train the default model's localiser (the ROI stage: HALSR-Net `small` widths with its three modules
# off, labels background/lv, whole slices), fine-tuned from the bundled one on the ACDC + MyoPS 2020 +
# EMIDEC mix; resumable: run the same command again after an interruption. Runs at nice 10 beside
# the segmenter's training (see train_default_segmenter.sh for the prepare commands).
#
#   DATA=/work/data nohup scripts/train_default_localizer.sh > runs/mix_localizer.log 2>&1 &
#
# Budget (stated before the start, 2026-12-01): 20 epochs of the mix (whole slices, slices without
# LV included), about 2,100 slices an epoch; about 1.5-2 hours at nice 10 on one CPU thread.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-work_data}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} HF_HUB_OFFLINE=1
exec nice -n 10 halsr-hf train --task localization --architecture unet \
  --dataset-dir "$DATA/acdc,$DATA/myops2020,$DATA/emidec" \
  --dataset-weights myops2020-cine=3,myops2020-lge=1,emidec-lge=0.5 \
  --best-model-sources acdc-ssl4mis,myops2020-cine \
  --model-name-or-path src/halsr_hf/default_model/roi \
  --output-dir runs/mix_localizer --num-train-epochs 20 --learning-rate 1e-3 \
  --per-device-train-batch-size 16 --early-stopping-patience 8 --save-total-limit 2 \
  --logging-steps 25 --disable-tqdm True --seed 43 --resume
