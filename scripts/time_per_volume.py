#!/usr/bin/env python
"""Time the pipeline per volume for two versions of the package in one run, interleaved (issue 24:
"time per volume, default settings, <= 1.3x today's, same machine, same run").

    git worktree add /tmp/halsr-before <commit>
    python scripts/time_per_volume.py --before /tmp/halsr-before/src --after src --acdc ../shared/data/acdc-ssl4mis

Each version runs in its own process (``PYTHONPATH`` = its ``src``; the bundled model of that
version), loads the pipeline once, segments the ACDC test volumes once to warm up, then
``--rounds`` times; the rounds of the two versions alternate, so a change of load hits both. Prints
the median seconds per volume of each, their ratio and the load average before and after.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

WORKER = r"""
import json, sys, time
import h5py, numpy as np
import halsr_hf
pipe = halsr_hf.load_pipeline()
names = [l.strip() for l in open(sys.argv[1] + "/test.list") if l.strip()][:2 * int(sys.argv[2])]  # patientNNN_frameFF
volumes = []
for name in names:
    with h5py.File(f"{sys.argv[1]}/data/{name}.h5") as f:
        volumes.append(f["image"][()])
pipe(volumes[0])
for line in sys.stdin:
    start = time.perf_counter()
    for v in volumes:
        pipe(v)
    print(json.dumps({"seconds_per_volume": (time.perf_counter() - start) / len(volumes), "backend": pipe.backend}), flush=True)
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="the src/ folder of the version before")
    parser.add_argument("--after", type=Path, required=True, help="the src/ folder of the version after")
    parser.add_argument("--acdc", type=Path, required=True, help="../shared/data/acdc-ssl4mis")
    parser.add_argument("--patients", type=int, default=5, help="ACDC test patients (2 volumes each)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    print(f"load average before: {os.getloadavg()}", flush=True)
    workers = {}
    for name, src in (("before", args.before), ("after", args.after)):
        env = dict(os.environ, PYTHONPATH=str(src.resolve()), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"),
                   HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error")
        workers[name] = subprocess.Popen([sys.executable, "-c", WORKER, str(args.acdc), str(args.patients)], env=env,
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    times = {name: [] for name in workers}
    backends = {}
    for _ in range(args.rounds):
        for name, worker in workers.items():
            worker.stdin.write("go\n")
            worker.stdin.flush()
            result = json.loads(worker.stdout.readline())
            times[name].append(result["seconds_per_volume"])
            backends[name] = result["backend"]
    for worker in workers.values():
        worker.stdin.close()
        worker.wait()
    median = {name: sorted(values)[len(values) // 2] for name, values in times.items()}
    print(json.dumps({"seconds_per_volume": times, "median": median, "ratio_after_over_before": median["after"] / median["before"],
                      "backends": backends, "volumes": 2 * args.patients, "rounds": args.rounds,
                      "load_average_after": os.getloadavg(), "threads": os.environ.get("OMP_NUM_THREADS", "1"),
                      "when": time.strftime("%Y-%m-%d %H:%M")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
