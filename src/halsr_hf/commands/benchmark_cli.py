"""The arguments of ``halsr-hf benchmark``, without torch: ``--help`` and argument errors answer at
once; :func:`main` then runs :func:`halsr_hf.commands.benchmark.main`."""

import argparse


def build_parser() -> argparse.ArgumentParser:
    description = "halsr-hf benchmark: model cost, pipeline throughput and training throughput, in one run."
    parser = argparse.ArgumentParser(prog="halsr-hf benchmark", description=description)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a smoke test (under a minute); timings meaningless")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--out", default="benchmarks", help="folder for results.json and README.md (default benchmarks)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: the machine's cores)")
    parser.add_argument("--parts", default="1,2,3", help="comma-separated parts to run (default 1,2,3)")
    parser.add_argument("--backends", default="torch,onnx", help="pipeline backends to time in part 2 (default torch,onnx)")
    parser.add_argument("--targets", default=None,
                        help="JSON file of targets to judge the results against (default: OUT/targets.json when it exists)")
    parser.add_argument("--render-only", action="store_true",
                        help="only rewrite README.md from the results.json (and results_cuda.json) already in --out")
    parser.add_argument("--json-name", default=None, help="results file name (default results.json, results_cuda.json on cuda)")
    parser.add_argument("--max-load", type=float, default=None,
                        help="1-minute load average above which timings are unreliable (default: 0.5 x cores)")
    parser.add_argument("--wait-idle", type=float, default=180.0,
                        help="seconds to wait for the load to drop below --max-load before refusing (default 180)")
    parser.add_argument("--max-foreign-cores", type=float, default=0.2,
                        help="CPU (in cores) other processes may use during a section before its timings are "
                             "flagged unreliable (default 0.2)")
    parser.add_argument("--allow-busy", action="store_true",
                        help="measure on a busy machine anyway; every section is then flagged unreliable")
    return parser


def main(argv=None) -> int:
    build_parser().parse_args(argv)
    from .benchmark import main as run

    return run(argv)
