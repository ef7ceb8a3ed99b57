#!/bin/bash
# Regenerate every performance figure of benchmarks/ and docs/performance.md in one go, on an idle
# machine (nothing else running: the benchmark waits up to 4 minutes for the load to fall and flags
# any part that ran beside other work). About 10 minutes on the 2-core CPU.
#
#   scripts/regenerate_benchmarks.sh            # writes benchmarks/ (README.md, results.json, *.txt, *.json)
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
echo "load before: $(cat /proc/loadavg)"
halsr-hf benchmark --out benchmarks --threads 2 --wait-idle 240
python3 scripts/profile_halsr.py --threads 2 > benchmarks/profile_halsr_small_128.txt
python3 scripts/inference_variants.py --rounds 15 --threads 2 --onnx --out benchmarks/inference_variants_2threads.json
python3 scripts/inference_variants.py --rounds 15 --threads 1 --onnx --out benchmarks/inference_variants_1thread.json
python3 scripts/pipeline_load_time.py --threads 2 --repeats 5 > benchmarks/pipeline_load_time.txt
echo "load after: $(cat /proc/loadavg)"
