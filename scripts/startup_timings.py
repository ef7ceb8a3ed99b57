"""Start-up timings of ``import halsr_hf`` and ``halsr-hf --help`` beside ``import torch``, for two source
trees (before/after a change) interleaved in one run: ``python scripts/startup_timings.py OLD/src NEW/src 5``
(docs/performance.md, "Start-up"). Prints a markdown table: median, min, median / ``import torch``."""
import os, statistics, subprocess, sys, time
old, new = sys.argv[1], sys.argv[2]; runs = int(sys.argv[3])
py = sys.executable
base_env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONDONTWRITEBYTECODE="1")
cases = [("python -c 'import torch'", None, [py, "-c", "import torch"]),
         ("python -c 'import transformers'", None, [py, "-c", "import transformers"])]
for tag, src in (("before", old), ("after", new)):
    cases += [(f"python -c 'import halsr_hf' ({tag})", src, [py, "-c", "import halsr_hf"]),
              (f"halsr-hf --help ({tag})", src, [py, "-m", "halsr_hf.cli", "--help"]),
              (f"halsr-hf segment --help ({tag})", src, [py, "-m", "halsr_hf.cli", "segment", "--help"]),
              (f"halsr-hf train --help ({tag})", src, [py, "-m", "halsr_hf.cli", "train", "--help"]),
              (f"halsr-hf segment, no input: usage error ({tag})", src, [py, "-m", "halsr_hf.cli", "segment"])]
times = {name: [] for name, _, _ in cases}
l0 = os.getloadavg()
for _ in range(runs):
    for name, src, cmd in cases:
        env = dict(base_env, **({"PYTHONPATH": src} if src else {}))
        t = time.perf_counter(); subprocess.run(cmd, env=env, capture_output=True); times[name].append(time.perf_counter() - t)
l1 = os.getloadavg()
print(f"load average (1, 5 min) before {l0[0]:.2f} {l0[1]:.2f}, after {l1[0]:.2f} {l1[1]:.2f}; {runs} interleaved runs each")
base = statistics.median(times["python -c 'import torch'"])
for name, t in times.items():
    print(f"| `{name}` | {statistics.median(t):.2f} s | {min(t):.2f} s | {statistics.median(t)/base:.2f} |")
