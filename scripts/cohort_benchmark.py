"""Cohort run (``halsr-hf predict``) against the pipeline, in one run (issue 19's targets).

Builds a cohort from the 20 ACDC test patients (ED + ES as 3D NIfTI in one folder per subject,
1.5 x 1.5 x 10 mm assumed: the SSL4MIS copy lost the spacing) plus one corrupt NIfTI, then measures
with the bundled model:

1. throughput: the pipeline's own slices/s on the same slices (``pipe([ed, es])`` per subject, the
   files already read: compute only; and with the file paths) against ``predict_cohort`` in the same
   process (DataLoader workers: 1, the default, every round; 2 and 0 in alternate rounds), rounds
   interleaved to spread the machine's load;
2. one process (``halsr-hf predict``) against two (``torchrun --nproc_per_node 2``; ``accelerate launch
   --cpu --num_processes 2`` starts a single process without MPI):
   wall time of the command, identical cohort.csv;
3. resume: a run killed with SIGKILL after half the subjects, run again: identical cohort.csv, and
   how many subjects the second run did;
4. the corrupt study: its row in errors.csv.

Every figure is recorded with ``os.getloadavg()`` before and after it: on a shared machine compare
ratios taken close together, not absolute numbers.

    python scripts/cohort_benchmark.py --acdc ../shared/data/acdc-ssl4mis --out benchmarks/cohort
"""

import argparse
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def build(acdc: Path, root: Path, patients: list) -> Path:
    import h5py
    import nibabel as nib

    cohort = root / "cohort"
    for patient in patients:
        folder = cohort / patient
        folder.mkdir(parents=True)
        for frame, name in ((1, "ED"), (2, "ES")):
            with h5py.File(acdc / "data" / f"{patient}_frame{frame:02d}.h5", "r") as f:
                data = np.ascontiguousarray(f["image"][()].astype(np.float32).transpose(2, 1, 0))
            nib.save(nib.Nifti1Image(data, np.diag([1.5, 1.5, 10.0, 1.0])), folder / f"{name}.nii.gz")
    (cohort / "corrupt.nii.gz").write_bytes(b"\x1f\x8b" + b"not a NIfTI file" * 20)
    return cohort


def load() -> tuple:
    return tuple(round(v, 2) for v in os.getloadavg())


def env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
            "PYTHONWARNINGS": "ignore"}


def timed_command(command: list, **kwargs) -> tuple:
    before, start = load(), time.perf_counter()
    result = subprocess.run(command, env=env(), capture_output=True, text=True, stdin=subprocess.DEVNULL, **kwargs)
    return result, time.perf_counter() - start, before, load()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--acdc", type=Path, default=REPO.parent / "shared" / "data" / "acdc-ssl4mis")
    parser.add_argument("--out", type=Path, required=True, help="folder for results.json and README.md")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--subjects", type=int, default=20, help="the first N ACDC test patients (default: all 20)")
    args = parser.parse_args()

    import torch

    import halsr_hf
    from halsr_hf.cohort import find_subjects, predict_cohort, read_subject

    torch.set_num_threads(1)
    patients = sorted({line.strip().split("_")[0] for line in (args.acdc / "test.list").read_text().split()})[:args.subjects]
    work = Path(tempfile.mkdtemp(prefix="cohort-bench-"))
    cohort = build(args.acdc, work, patients)
    pipe = halsr_hf.load_pipeline()
    subjects = [s for s in find_subjects(cohort).subjects if s.name != "corrupt"]
    start = time.perf_counter()
    frames = [read_subject(s)[0] for s in subjects]
    read_seconds = time.perf_counter() - start
    slices = sum(len(f.slices) for fs in frames for f in fs)
    results = {"subjects": len(subjects), "slices": slices, "throughput": [],
               "machine": {"cpus": os.cpu_count(), "nice": os.nice(0)},
               "read_seconds": read_seconds}
    pipe(frames[0])  # warm-up

    def baseline(from_files: bool):
        before, start = load(), time.perf_counter()
        for subject, loaded in zip(subjects, frames):
            pipe([str(Path(p)) for p in sorted(Path(subject.paths[0]).glob("*.nii.gz"))] if from_files else loaded)
        seconds = time.perf_counter() - start
        return {"what": "pipeline, files" if from_files else "pipeline, in memory", "seconds": seconds,
                "slices_per_s": slices / seconds, "load_before": before, "load_after": load()}

    def cohort_run(workers: int, round_: int):
        out = work / f"out-w{workers}-r{round_}"
        before, start = load(), time.perf_counter()
        summary = predict_cohort(cohort, out, pipe=pipe, num_workers=workers, progress=False, log=io.StringIO())
        seconds = time.perf_counter() - start
        return {"what": f"predict_cohort, num_workers={workers}", "seconds": seconds, "slices_per_s": slices / seconds,
                "loop_slices_per_s": summary["slices_per_second"], "load_before": before, "load_after": load(),
                "csv": (out / "cohort.csv").read_text()}

    for round_ in range(args.rounds):  # the default (1 worker) every round; 2 and 0 workers for comparison
        results["throughput"].append(baseline(False))
        results["throughput"].append(cohort_run(1, round_))
        results["throughput"].append(baseline(True))
        results["throughput"].append(cohort_run(2 if round_ % 2 == 0 else 0, round_))
    csvs = {r.pop("csv") for r in results["throughput"] if "csv" in r}
    results["throughput_csvs_identical"] = len(csvs) == 1
    reference_csv = next(iter(csvs))

    # 1 process vs 2 processes (commands, model loading included)
    common = ["-i", str(cohort), "--no-progress", "--num-workers", "1"]
    one, one_s, one_before, one_after = timed_command([sys.executable, "-m", "halsr_hf.cli", "predict", *common, "-o", str(work / "p1")])
    two, two_s, two_before, two_after = timed_command(  # torchrun: `accelerate launch --cpu` starts one process
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
         "-m", "halsr_hf.cli", "predict", *common, "-o", str(work / "p2")])
    one_csv, two_csv = (work / "p1" / "cohort.csv").read_text(), (work / "p2" / "cohort.csv").read_text()
    results["processes"] = {
        "one": {"seconds": one_s, "returncode": one.returncode, "load_before": one_before, "load_after": one_after},
        "two": {"seconds": two_s, "returncode": two.returncode, "load_before": two_before, "load_after": two_after,
                "summary": [line for line in two.stdout.splitlines() if line.startswith(("subjects:", "time"))]},
        "csv_identical": one_csv == two_csv, "csv_equals_in_process": one_csv == reference_csv,
    }

    # kill -9 after half the subjects, then resume
    out = work / "killed"
    command = [sys.executable, "-m", "halsr_hf.cli", "predict", *common, "-o", str(out)]
    process = subprocess.Popen(command, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    while process.poll() is None:
        finished = [p for p in (out / "subjects").glob("*") if not p.name.startswith(".")] if (out / "subjects").is_dir() else []
        if len(finished) >= len(subjects) // 2:
            os.killpg(process.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    process.wait()
    staged = [p.name for p in (out / "subjects").glob(".*")]
    done_at_kill = len([p for p in (out / "subjects").glob("*") if not p.name.startswith(".")])
    resumed, resumed_s, _, _ = timed_command(command)
    results["resume"] = {"done_at_kill": done_at_kill, "staged_at_kill": staged, "rerun_stdout": resumed.stdout,
                         "rerun_seconds": resumed_s,
                         "csv_identical": (out / "cohort.csv").read_text() == one_csv,
                         "leftovers": [str(p.relative_to(out)) for p in out.rglob(".*")]}
    results["errors_csv"] = (work / "p1" / "errors.csv").read_text()

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    rows = results["throughput"]
    lines = [f"{len(subjects)} subjects (ED + ES NIfTI), {slices} slices; bundled model, torch backend, 1 thread; "
             f"process niceness {os.nice(0)}",
             "", "| round | measure | seconds | slices/s | vs the round's pipeline in memory | load average before -> after |",
             "|---:|---|---:|---:|---:|---|"]
    round_, base = -1, None
    for r in rows:
        if r["what"] == "pipeline, in memory":
            round_, base = round_ + 1, r["slices_per_s"]
        lines.append(f"| {round_} | {r['what']} | {r['seconds']:.1f} | {r['slices_per_s']:.1f} | "
                     f"{100 * r['slices_per_s'] / base:.0f} % | {r['load_before']} -> {r['load_after']} |")
    pipeline_s = sum(r["seconds"] for r in rows if r["what"] == "pipeline, in memory")
    cohort_s = sum(r["seconds"] for r in rows if r["what"] == "predict_cohort, num_workers=1")
    results["ratio_cohort_vs_pipeline"] = pipeline_s / cohort_s
    lines += ["", f"all rounds: predict_cohort (num_workers=1, the default) ran at {100 * pipeline_s / cohort_s:.0f} % of the pipeline's "
              f"own slices/s (in memory); reading every subject's files alone took {read_seconds:.1f} s"]
    p = results["processes"]
    lines += ["", "| command | wall s | load average before -> after |", "|---|---:|---|",
              f"| halsr-hf predict, 1 process | {p['one']['seconds']:.1f} | {p['one']['load_before']} -> {p['one']['load_after']} |",
              f"| torchrun --nproc_per_node 2 | {p['two']['seconds']:.1f} | {p['two']['load_before']} -> {p['two']['load_after']} |",
              "", "two processes' summary: " + " / ".join(p["two"]["summary"]),
              "", f"cohort.csv identical: 1 vs 2 processes {p['csv_identical']}; CLI vs in-process {p['csv_equals_in_process']}; "
              f"in-process runs {results['throughput_csvs_identical']}",
              f"kill -9 with {results['resume']['done_at_kill']} of {len(subjects)} subjects done "
              f"(half-written at the kill: {results['resume']['staged_at_kill']}); rerun: "
              f"{results['resume']['rerun_stdout'].splitlines()[0] if results['resume']['rerun_stdout'] else '?'}; "
              f"cohort.csv identical {results['resume']['csv_identical']}; leftovers {results['resume']['leftovers']}",
              f"errors.csv: {results['errors_csv'].strip().splitlines()[-1]}"]
    (args.out / "README.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
