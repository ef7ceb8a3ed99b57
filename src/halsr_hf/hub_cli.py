"""The arguments of ``halsr-hf push-to-hub``, without ``datasets``, ``huggingface_hub`` or torch:
``--help`` and argument errors answer at once; :func:`main` then runs :func:`halsr_hf.hub.run`."""

import argparse
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="halsr-hf push-to-hub",
                                     description="Publish a HALSR-Net model, a dataset or the Gradio Space to the Hugging Face Hub.",
                                     epilog="Token: HF_TOKEN or `hf auth login`. See docs/hub.md.")
    sub = parser.add_subparsers(dest="kind", required=True)

    def common(p):
        p.add_argument("--repo-id", required=True, help="the Hub repository, user/name or org/name")
        p.add_argument("--private", action="store_true", help="create the repository as private")
        p.add_argument("--dry-run", metavar="OUT", type=Path, default=None,
                       help="write the folder that would be uploaded to OUT, upload nothing")
        p.add_argument("--overwrite", action="store_true", help="with --dry-run: replace a non-empty OUT")
        p.add_argument("--commit-message", default=None)

    model = sub.add_parser("model", help="a HALSR-Net model folder (+ roi/) with its model card")
    model.add_argument("--model-dir", required=True, type=Path, help="folder saved by the pipeline or by halsr-hf train")
    model.add_argument("--roi-model", type=Path, default=None, help="ROI model folder: localiser or box regressor (default: MODEL_DIR/roi)")
    model.add_argument("--eval-results", action="append", type=Path, default=[], metavar="SUMMARY_JSON",
                       help="summary.json of halsr-hf evaluate (repeatable; the first is the main evaluation; "
                            "default: MODEL_DIR/evaluation/summary*.json, as the bundled model and dry-run folders have)")
    model.add_argument("--no-eval-results", action="store_true",
                       help="publish without evaluation results, even when MODEL_DIR's card has some")
    model.add_argument("--template", type=Path, default=None, help="model card template (default: halsr_hf/templates/halsr_net.md, installed with the package)")
    common(model)

    dataset = sub.add_parser("dataset", help="a DatasetDict folder (save_to_disk) with its README.md card")
    dataset.add_argument("--dataset-dir", required=True, type=Path)
    common(dataset)

    space = sub.add_parser("space", help="the Gradio demo folder as a Space")
    space.add_argument("--space-dir", type=Path, default=None,
                       help="the Space folder (default: ./space, when run from a checkout of the repository)")
    common(space)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    from .hub import run

    return run(args)
