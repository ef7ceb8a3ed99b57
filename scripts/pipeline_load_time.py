"""Load time of the bundled pipeline per backend, and the latency of its first and later calls on a
real ACDC volume (issue 18): the default backend exports both networks to ONNX on the first load of
a model (cold cache), later loads read the cached files. One process; a fresh export cache
(``HALSR_HF_ONNX_CACHE`` in a temporary folder) unless ``--cache`` is given.

    python scripts/pipeline_load_time.py [--threads 1] [--repeats 3]
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import h5py
import torch

ACDC = Path(os.environ.get("HALSR_DATA_DIR", Path(__file__).resolve().parents[1].parent / "shared" / "data")) / "acdc-ssl4mis"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cache", default=None, help="export cache folder (default: a new temporary one)")
    args = parser.parse_args(argv)
    os.environ["HALSR_HF_ONNX_CACHE"] = args.cache or tempfile.mkdtemp(prefix="halsr-onnx-cache-")
    torch.set_num_threads(args.threads)
    import halsr_hf

    with h5py.File(ACDC / "data" / "patient011_frame01.h5", "r") as f:
        volume = f["image"][()]
    result = {"threads": args.threads, "volume": list(volume.shape), "loadavg_start": os.getloadavg(), "runs": []}
    halsr_hf.load_pipeline(backend="torch")  # imports and file-system caches warm for every row alike
    for label, kwargs in (("auto, cold export cache", {}), ("auto, cached export", {}), ("torch", {"backend": "torch"})):
        start = time.perf_counter()
        pipe = halsr_hf.load_pipeline(**kwargs)
        load = time.perf_counter() - start
        start = time.perf_counter()
        pipe(volume)
        first = time.perf_counter() - start
        later = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            pipe(volume)
            later.append(time.perf_counter() - start)
        row = {"pipeline": label, "backend": pipe.backend, "load_s": round(load, 2), "first_call_s": round(first, 2),
               "later_call_median_s": round(statistics.median(later), 2), "loadavg": os.getloadavg()}
        result["runs"].append(row)
        print(json.dumps(row), flush=True)
    result["loadavg_end"] = os.getloadavg()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
