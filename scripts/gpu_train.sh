#!/usr/bin/env bash
# One-shot GPU training of the bundled models from the compact arrays file (no `datasets` needed):
# the ROI regressor, HALSR-Net `small`, HALSR-Net `base` and the plain U-Net baseline (widths of
# `small`), each with bf16 (auto on CUDA), channels_last, DataLoader workers, a fixed number of
# epochs with cosine decay, model selection on the validation metric (Dice / box IoU), early
# stopping, and a wall-clock limit per model as a safety net (scripts stop after an evaluation).
#
# Prepare (here):   python scripts/export_arrays.py --out .gpu/acdc_train_val.npz      (~31 MB)
# Test (here, CPU): QUICK=1 OUT=/tmp/gpu_out bash scripts/gpu_train.sh
# Run (GPU):        bash scripts/gpu_train.sh        (carry .gpu; $OUT set by the device tool)
#
# Results under $OUT (<= 8 files, each < 16 MB): NAME.tar.part_00.. per model, packed as soon as it is
# trained (cat NAME.tar.part_* | tar -x; base is saved in 15MB safetensors shards), summary.json, logs.txt.
# Environment: QUICK=1 (2 steps each, CPU test), ARRAYS (arrays file), WORK (training folders),
# WORKERS (default 8), BATCH (default 32), EPOCHS_ROI/EPOCHS_SMALL/EPOCHS_BASE/EPOCHS_UNET,
# MINUTES_ROI/MINUTES_SMALL/MINUTES_BASE/MINUTES_UNET (wall-clock limits), PYTHON, ONLY (e.g.
# "roi small": train only these).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PYTHON=${PYTHON:-$(command -v python3 || command -v python)}
OUT=${OUT:-runs/gpu_out}
WORK=${WORK:-runs/gpu_work}
ARRAYS=${ARRAYS:-.gpu/acdc_train_val.npz}
QUICK=${QUICK:-0}
WORKERS=${WORKERS:-8}
BATCH=${BATCH:-32}
ONLY=${ONLY:-"roi small base unet"}
mkdir -p "$OUT" "$WORK"
LOG="$OUT/logs.txt"
: > "$LOG"
START=$(date +%s)
FAILED=""

if [ ! -f "$ARRAYS" ]; then
  echo "missing $ARRAYS: run python scripts/export_arrays.py --out $ARRAYS (and carry .gpu)" | tee -a "$LOG"
  exit 2
fi

{
  echo "== $(date -u) host $(hostname) QUICK=$QUICK"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || echo "no nvidia-smi"
  "$PYTHON" -c "import torch, transformers, accelerate; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'transformers', transformers.__version__, 'accelerate', accelerate.__version__)"
  ls -la "$ARRAYS"
} >> "$LOG" 2>&1

if [ "$QUICK" = "1" ]; then
  # a few steps on a handful of slices: checks paths, saving and packing, not quality
  COMMON=(--max_steps 2 --eval_strategy steps --eval_steps 2 --per_device_train_batch_size 4 --per_device_eval_batch_size 8
          --max_train_samples 16 --max_eval_samples 8 --dataloader_num_workers "${WORKERS_QUICK:-2}" --logging_steps 1)
  E_ROI=(); E_SMALL=(); E_BASE=(); E_UNET=()
else
  COMMON=(--eval_strategy epoch --per_device_train_batch_size "$BATCH" --per_device_eval_batch_size 64
          --dataloader_num_workers "$WORKERS" --dataloader_persistent_workers True --dataloader_prefetch_factor 4
          --logging_steps 50 --early_stopping_patience 15 --save_total_limit 1 --tf32 True)
  E_ROI=(--num_train_epochs "${EPOCHS_ROI:-50}" --time_limit_minutes "${MINUTES_ROI:-1.0}")
  E_SMALL=(--num_train_epochs "${EPOCHS_SMALL:-60}" --time_limit_minutes "${MINUTES_SMALL:-1.4}")
  E_BASE=(--num_train_epochs "${EPOCHS_BASE:-40}" --time_limit_minutes "${MINUTES_BASE:-1.5}")
  E_UNET=(--num_train_epochs "${EPOCHS_UNET:-60}" --time_limit_minutes "${MINUTES_UNET:-1.0}")
fi
COMMON+=(--arrays_file "$ARRAYS" --disable_tqdm True --seed 42)

pack() {  # the final folder (no checkpoint-* folders) into <= 16 MB files, right after training,
          # so that what finished comes back even if a later model runs past the time limit
  local name=$1
  [ -f "$WORK/$name/config.json" ] || return 0
  tar -cf - -C "$WORK" --exclude='checkpoint-*' "$name" | split -b 15m -d - "$OUT/$name.tar.part_"
}

run() {  # name, script, args...
  local name=$1 script=$2; shift 2
  case " $ONLY " in *" $name "*) ;; *) echo "== skip $name" >> "$LOG"; return 0 ;; esac
  local t0
  t0=$(date +%s)
  echo "== $name: $script $*" >> "$LOG"
  rm -rf "${WORK:?}/$name"
  if "$PYTHON" "$script" "$@" --output_dir "$WORK/$name" >> "$LOG" 2>&1; then
    echo "== $name done in $(( $(date +%s) - t0 )) s" >> "$LOG"
    pack "$name"
  else
    FAILED="$FAILED $name"
    echo "== $name FAILED after $(( $(date +%s) - t0 )) s" >> "$LOG"
  fi
}

run roi scripts/train_roi.py "${COMMON[@]}" "${E_ROI[@]}"
run small scripts/train.py --preset small "${COMMON[@]}" "${E_SMALL[@]}"
run unet scripts/train.py --architecture unet --preset small "${COMMON[@]}" "${E_UNET[@]}"
run base scripts/train.py --preset base --max_shard_size 15MB "${COMMON[@]}" "${E_BASE[@]}"

"$PYTHON" - "$WORK" "$OUT/summary.json" "$START" <<'EOF' >> "$LOG" 2>&1
import json, sys, time
from pathlib import Path
work, out, start = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
summary = {"total_wall_s": round(time.time() - start, 1)}
for name in ("roi", "small", "base", "unet"):
    folder = work / name
    entry = {}
    for part in ("all_results.json", "run_args.json"):
        if (folder / part).is_file():
            entry.update(json.loads((folder / part).read_text()))
    state = folder / "trainer_state.json"
    if state.is_file():
        s = json.loads(state.read_text())
        entry["best_metric"], entry["best_model_checkpoint"] = s.get("best_metric"), s.get("best_model_checkpoint")
        entry["eval_history"] = [{k: v for k, v in h.items() if k.startswith("eval_") or k in ("epoch", "step")} for h in s.get("log_history", []) if "eval_loss" in h]
    if (folder / "command.txt").is_file():
        entry["command"] = (folder / "command.txt").read_text()
    summary[name] = entry
out.write_text(json.dumps(summary, indent=1, default=str))
print(json.dumps({k: ({m: v[m] for m in v if (m.startswith("eval_") and m != "eval_history") or m in ("train_wall_s", "train_samples_per_second", "epoch")} if isinstance(v, dict) else v) for k, v in summary.items()}, indent=1))
EOF
echo "== all done in $(( $(date +%s) - START )) s" >> "$LOG"
ls -la "$OUT" >> "$LOG"
tail -n 60 "$LOG"
if [ -n "$FAILED" ]; then echo "FAILED:$FAILED"; exit 1; fi
