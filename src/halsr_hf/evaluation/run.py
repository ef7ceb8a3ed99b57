"""``halsr-hf evaluate``: evaluate a model as in the paper (tables, boxplots, EF agreement).

    halsr-hf evaluate --model M --dataset-dir D --split test [--source S] --out-dir R \
        [--extra-dataset-dir D2 --extra-split test] [--baseline M2] [--no-roi] [--overwrite]

Writes into ``R`` (atomically: a temporary folder renamed at the end): ``slices.csv``,
``volumes.csv``, ``roi.csv``, ``clinical.csv``, ``summary.md``, ``summary.json``,
``boxplot_<metric>.png`` (a box per class; extra datasets get ``boxplot_<metric>_<name>.png``),
``bland_altman_{ef,edv,esv}.png`` and, with ``--save-predictions``, ``predictions/*.npz``.
See docs/evaluation.md for the definitions.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import List, Optional

from ..atomic import atomic_folder, check_output_folder
from ..errors import InputError

# numpy, the pipeline (torch, transformers) and the evaluation modules are imported where they are
# used: `halsr-hf evaluate --help` and an argument error answer without loading them (issue 26).


def parse_settings(items) -> dict:
    """``["component_connectivity=8"]`` -> ``{"component_connectivity": 8.0}`` (names checked against
    :data:`~halsr_hf.image_processing_halsr.ROI_STAGE_SETTINGS`)."""
    from ..image_processing_halsr import ROI_STAGE_SETTINGS

    settings = {}
    for item in items:
        name, equals, value = item.partition("=")
        if not equals or name not in ROI_STAGE_SETTINGS:
            raise InputError(f"--setting {item!r}: expected NAME=VALUE with NAME one of {', '.join(ROI_STAGE_SETTINGS)}")
        try:
            settings[name] = float(value)
        except ValueError:
            raise InputError(f"--setting {item!r}: {value!r} is not a number") from None
    return settings


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="halsr-hf evaluate", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Definitions and conventions: docs/evaluation.md")
    p.add_argument("--model", default=None, help="model folder or Hub id (default: the bundled model)")
    p.add_argument("--roi-model", default=None, help="ROI model (localiser or box regressor) folder or Hub id (default: the model's roi/)")
    p.add_argument("--dataset-dir", required=True, help="datasets.save_to_disk folder written by `halsr-hf prepare`")
    p.add_argument("--split", default="test", help="split to evaluate (default: %(default)s)")
    p.add_argument("--source", default=None, metavar="SOURCE",
                   help="evaluate only the rows of this source (the dataset's `source` column), e.g. myops2020-cine or "
                        "myops2020-lge: each sequence of a multi-sequence dataset alone (default: every row)")
    p.add_argument("--dataset-name", default=None, help="name in the reports (default: --source, else the folder name)")
    p.add_argument("--dataset-hf-id", default=None, help="Hub id of the dataset, recorded in summary.json")
    p.add_argument("--extra-dataset-dir", action="append", default=[], metavar="D2",
                   help="cross-dataset evaluation (Table 8), e.g. Sunnybrook; repeatable")
    p.add_argument("--extra-split", action="append", default=[], metavar="SPLIT",
                   help="split of each --extra-dataset-dir, in the same order (one value applies to all; default: test)")
    p.add_argument("--extra-source", action="append", default=[], metavar="SOURCE",
                   help="--source of each --extra-dataset-dir, in the same order (one value applies to all; 'all': every row)")
    p.add_argument("--extra-dataset-hf-id", action="append", default=[], metavar="ID",
                   help="Hub id of each --extra-dataset-dir, in the same order")
    p.add_argument("--baseline", default=None, metavar="M2",
                   help="a second segmentation model, run with the main model's ROI model; side by side in the summary")
    p.add_argument("--no-roi", action="store_true", help="whole-slice mode: do not run the ROI stage")
    p.add_argument("--out-dir", required=True, help="output folder (must not exist or be empty, unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out-dir")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cpu)")
    p.add_argument("--tta", action="store_true", help="test-time augmentation (8 rotations/flips; 3 to 5x the time: docs/performance.md)")
    p.add_argument("--second-look", type=int, default=2, metavar="N",
                   help="at most N re-crops around the predicted LV (0: off; default: %(default)s, the pipeline's)")
    p.add_argument("--no-consensus", action="store_true", help="do not correct outlier ROI boxes from the volume's other slices")
    p.add_argument("--setting", action="append", default=[], metavar="NAME=VALUE",
                   help="override one of the model's inference settings (image_processing_halsr.ROI_STAGE_SETTINGS, e.g. "
                        "component_connectivity=8, basal_enclosure_threshold=0.95); repeatable")
    p.add_argument("--both-empty", choices=("nan", "perfect"), default="nan",
                   help="a class absent from both reference and prediction: 'nan' = not scored (default), "
                        "'perfect' = Dice 1 / distance 0")
    p.add_argument("--pixel-units", action="store_true", help="report distances in pixels even when the spacing is known")
    p.add_argument("--roi-reference", choices=("label", "column"), default="label",
                   help="reference ROI box: bounding box of the reference label (default, as in the paper) "
                        "or the dataset's `roi` column")
    p.add_argument("--save-predictions", action="store_true", help="also write the predicted label maps (predictions/*.npz)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots (tables and JSON only)")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N (patient, phase, source) stacks per dataset")
    p.add_argument("--roi-variants", action="store_true",
                   help="also run the segmenter with the reference's slices and/or boxes instead of the ROI stage's "
                        "(3 more runs per dataset with volumes): what the ROI stage costs, slice presence at ED/ES, the "
                        "worst volumes' LV area per slice (roi_variants.json, roi_variants_*.png)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


BUNDLED_MODEL = "bundled:halsr_hf/default_model"


def model_label(model) -> str:
    """How the reports name a model, the same on every machine: :data:`BUNDLED_MODEL` for the model
    bundled with the package, a local folder as given when relative, else relative to the working
    directory when inside it, else by its name; a Hub id as is. Never this machine's absolute path."""
    from .. import default_model_dir

    if model is None:
        return BUNDLED_MODEL
    path = Path(str(model))
    if not path.is_dir():
        return str(model)  # a Hub id
    try:
        if path.resolve() == default_model_dir().resolve():
            return BUNDLED_MODEL
    except FileNotFoundError:  # no bundled model in this installation
        pass
    if not path.is_absolute():
        return path.as_posix()
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return path.name


def _load(model, roi_model, device):
    from .. import default_model_dir, load_pipeline

    try:
        label = model_label(model)
        if model is None:
            model = str(default_model_dir())
        return load_pipeline(model, roi_model=roi_model, device=device), label
    except FileNotFoundError as error:
        raise InputError(f"--model: {error}") from None
    except (OSError, ValueError) as error:
        if isinstance(error, InputError):
            raise
        raise InputError(f"--model {model}: cannot load a segmentation model there ({type(error).__name__}: {error})") from None


def _save_predictions(folder: Path, title: str, res) -> None:
    import numpy as np

    from . import report
    folder.mkdir(exist_ok=True)
    arrays = {}
    for g in res.dataset.groups:
        maps = res.predictions[g.key].label_maps
        if len({m.shape for m in maps}) == 1:
            arrays[g.key] = np.stack(maps)
        else:
            for s, m in zip(g.slices, maps):
                arrays[f"{g.key}_slice{s.slice_index}"] = m
    np.savez_compressed(folder / f"{title}_{report.slug(res.dataset.name)}_{report.slug(res.dataset.split)}.npz", **arrays)


def evaluate(args) -> dict:
    """Run the whole evaluation for parsed ``args``; returns summary.json's content."""
    from . import core, report
    from .data import EvalDataset, load_eval_dataset
    out_dir = Path(args.out_dir)
    check_output_folder(out_dir, args.overwrite, "--out-dir")
    extra_dirs = list(args.extra_dataset_dir)
    splits = list(args.extra_split) or ["test"]
    if len(splits) == 1:
        splits = splits * len(extra_dirs)
    if len(splits) != len(extra_dirs):
        raise InputError(f"--extra-split: give one value or one per --extra-dataset-dir ({len(extra_dirs)}), got {len(splits)}")
    hf_ids = list(args.extra_dataset_hf_id) + [None] * len(extra_dirs)
    extra_sources = list(args.extra_source) or ["all"]
    if len(extra_sources) == 1:
        extra_sources = extra_sources * len(extra_dirs)
    if extra_dirs and len(extra_sources) != len(extra_dirs):
        raise InputError(f"--extra-source: give one value or one per --extra-dataset-dir ({len(extra_dirs)}), "
                         f"got {len(extra_sources)}")
    if args.batch_size < 1:
        raise InputError(f"--batch-size: must be at least 1, got {args.batch_size}")
    progress = not args.quiet
    started = time.perf_counter()

    # Datasets first: a typo in a path fails before any model is loaded.
    main_ds = load_eval_dataset(args.dataset_dir, args.split, args.dataset_name, args.dataset_hf_id, args.limit,
                                source=args.source)
    extra_ds: List[EvalDataset] = []
    names = {main_ds.name}
    for d, s, h, source in zip(extra_dirs, splits, hf_ids, extra_sources):
        ds = load_eval_dataset(d, s, None, h, args.limit, source=None if source == "all" else source)
        if ds.name in names:  # two folders with the same name
            ds.name = f"{ds.name}-{len(names)}"
        names.add(ds.name)
        extra_ds.append(ds)

    pipe, model_name = _load(args.model, args.roi_model, args.device)
    use_roi = not args.no_roi and pipe.roi_model is not None
    runs = [("main", model_name, pipe)]
    if args.baseline:
        b_pipe, b_name = _load(args.baseline, pipe.roi_model if use_roi else None, args.device)
        runs.append(("baseline", b_name, b_pipe))

    results = {}
    for title, name, p in runs:
        results[title] = []
        for ds in [main_ds] + extra_ds:
            preds = core.predict(p, ds, batch_size=args.batch_size, use_roi=use_roi, tta=args.tta, progress=progress,
                                 desc=f"{title} on {ds.name}", second_look=args.second_look, consensus=not args.no_consensus,
                                 **parse_settings(args.setting))
            if p.image_processor.roi_stage_settings(**parse_settings(args.setting))["es_within_ed"] >= 0.5:
                core.restrict_es_to_ed(ds, preds)
            results[title].append(core.score(ds, preds, name, force_pixels=args.pixel_units, both_empty=args.both_empty,
                                             roi_evaluated=use_roi, roi_reference=args.roi_reference, progress=progress,
                                             crop_margin=p.image_processor.crop_margin))
    variants = {}
    if args.roi_variants and use_roi:
        from .roi_variants import run_variants

        for res in results["main"]:
            if not res.dataset.volumes:
                continue  # slices only (Sunnybrook, EMIDEC's PNG copy): no stack to choose slices in
            rows, scored = run_variants(
                pipe, res.dataset, model_name, batch_size=args.batch_size, progress=progress, end_to_end=res,
                force_pixels=args.pixel_units, use_roi=True, tta=args.tta, **parse_settings(args.setting))
            variants[res.dataset.name] = (rows, scored)
    main, extras = results["main"][0], results["main"][1:]
    baseline = None
    if "baseline" in results:
        baseline = (runs[1][1], results["baseline"][0], results["baseline"][1:])

    options = {"split": args.split, "source": args.source or "all", "roi stage": "on" if use_roi else ("off (--no-roi)" if args.no_roi else "off (no ROI model)"),
               "both_empty": args.both_empty, "tta": args.tta, "roi_reference": args.roi_reference,
               "second_look": args.second_look, "consensus": not args.no_consensus,
               "roi_model_kind": getattr(pipe, "roi_kind", None),
               "settings": pipe.image_processor.roi_stage_settings(**parse_settings(args.setting))}
    summary = report.summary_json(model_name, main, extras, baseline)
    if variants:
        summary["roi_stage_vs_reference"] = {name: rows for name, (rows, _) in variants.items()}

    with atomic_folder(out_dir) as tmp:
        every = [r for rs in results.values() for r in rs]
        report.write_csv(tmp / "slices.csv", [row for r in every for row in r.slice_rows])
        report.write_csv(tmp / "volumes.csv", [row for r in every for row in r.volume_rows], _volume_columns(every))
        # The ROI stage is the same model for main and baseline: its rows once.
        report.write_csv(tmp / "roi.csv", [row for r in results["main"] for row in r.roi_rows], _roi_columns())
        report.write_csv(tmp / "clinical.csv", [row for r in every for row in r.clinical_rows], _clinical_columns())
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        markdown = report.summary_markdown(model_name, main, extras, baseline, options)
        if variants:
            from .roi_variants import markdown_table, plot_worst_areas

            markdown += "\n## The ROI stage against the reference (docs/evaluation.md)\n\n"
            for name, (rows, scored) in variants.items():
                markdown += "\n".join(markdown_table(name, rows)) + "\n"
                if not args.no_plots:
                    plot = plot_worst_areas(tmp / f"roi_variants_{report.slug(name)}.png", scored)
                    if plot is not None:
                        markdown += f"![LV area per slice, worst volumes]({plot.name})\n\n"
            (tmp / "roi_variants.json").write_text(json.dumps(summary["roi_stage_vs_reference"], indent=2) + "\n")
        (tmp / "summary.md").write_text(markdown)
        for i, res in enumerate([] if args.no_plots else [main] + extras):
            named = [("main", res)] + ([("baseline", results["baseline"][i])] if baseline else [])
            suffix = "" if i == 0 else f"_{report.slug(res.dataset.name)}"
            report.boxplots(tmp, named, suffix)
        if not args.no_plots:
            report.bland_altman(tmp, main)
        if args.save_predictions:
            for title, rs in results.items():
                for res in rs:
                    _save_predictions(tmp / "predictions", title, res)
    if progress:
        print(f"halsr-hf evaluate: wrote {out_dir} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return summary


def _volume_columns(results) -> Optional[List[str]]:
    from . import core

    for r in results:
        if r.volume_rows:
            return list(r.volume_rows[0])
    return ["dataset", "split", "model", "patient_id", "phase", "source", "group", "num_slices"] + [
        f"{m}_{c}" for m in core.METRICS for c in core.CLASSES] + ["accuracy", "distance_unit"]


def _roi_columns() -> List[str]:
    from . import core

    boxes = [f"{prefix}_{k}" for prefix in ("ref", "stage", "final") for k in core.BOX_KEYS]
    return (["dataset", "split", "model", "patient_id", "phase", "source", "group", "slice_index", "ref_has_lv", "scored",
             "stage_reported"] + boxes +
            ["lv_found", "lv_probability", "iou", "rmse_px", "rmse_mm", "rmse", "unit", "outlier", "outlier_reason",
             "in_crop", "final_iou", "final_in_crop"])


def _clinical_columns() -> List[str]:
    return ["dataset", "split", "model", "patient_id", "group", "edv_ref", "edv_pred", "esv_ref", "esv_pred",
            "ef_ref", "ef_pred", "volume_unit", "warnings"]


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    summary = evaluate(args)
    if not args.quiet:
        vm = summary.get("volume_metrics") or summary["slice_metrics"]
        level = "3D" if summary.get("volume_metrics") else "2D"
        fmt = lambda s: "–" if s["mean"] is None else f"{s['mean']:.3f}"  # noqa: E731
        print(f"{summary['dataset']['name']} ({summary['dataset']['split']}), {level}: Dice LV {fmt(vm['dice_lv_cavity'])}, "
              f"MYO {fmt(vm['dice_myocardium'])}; summary in {Path(args.out_dir) / 'summary.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
