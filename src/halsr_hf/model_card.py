"""Model cards for HALSR-Net repositories, rendered from evaluation outputs.

The numbers in a card come from ``summary.json`` files written by ``halsr-hf evaluate``
(``scripts/evaluate.py``), never typed by hand. The contract of that file::

    {"model": str,
     "dataset": {"name": "ACDC (SSL4MIS split)", "hf_id": str | null, "split": "test", "source": "acdc"},
     "distance_unit": "px" | "mm",
     "volume_metrics": {"dice_lv_cavity": {"mean": x, "sd": x, "median": x}, "hd95_myocardium": {...}, ...},
     "slice_metrics": {...same shape...},
     "roi": {"rmse": x, "rmse_sd": x, "unit": "px", "outlier_rate_percent": x, "outlier_definition": str,
             "iou_mean": x, "in_crop_percent": x, "final_crop_iou_mean": x, "final_crop_in_crop_percent": x},
     "clinical": {"ef_bias": x, "ef_mae": x, "ef_r": x, ..., "unit_volume": "ml" | "voxels"},
     "extra_evaluations": [{"dataset": {...}, "volume_metrics" | "slice_metrics": {...}, "distance_unit": ...}]}

Metric keys are ``<metric>_<class>`` (metric: dice, iou, hd, hd95, assd, ...; class: lv_cavity,
myocardium). Every finite ``mean`` becomes one ``model-index`` entry (task ``image-segmentation``,
value = the mean exactly as in the file); ``roi`` and ``clinical`` scalars become entries too,
except numbers whose unit says nothing comparable:

* a distance in pixels is published per slice (2D, in-plane pixels) only: a 3D distance in pixels
  counts a slice step (5-10 mm on cine MRI) as one pixel (``halsr-hf evaluate`` no longer computes
  it; older summaries that hold one are not published);
* EDV and ESV are published in mL only, never in voxels (voxel sizes differ between patients; the
  EF, a ratio, is published either way);
* the ROI numbers say which box they measure: ``rmse``, ``outlier_rate_percent``, ``iou_mean`` and
  ``in_crop_percent`` the ROI stage's own box, ``final_crop_*`` the box of the final crop (after
  the second look). A summary without ``final_crop_*`` keys predates that distinction: all its ROI
  numbers were measured on the final crop's box and are published as such.

Public functions: :func:`render_model_card` (-> ``huggingface_hub.ModelCard``),
:func:`write_model_card` (writes ``README.md`` into a model folder), :func:`eval_results_from_summary`.
"""

from __future__ import annotations

import json
import math
import os
import re
from importlib.metadata import version
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.repocard_data import model_index_to_eval_results
from transformers import AutoImageProcessor

from .configuration_halsr import PRESETS
from .errors import InputError
from .modeling_halsr import HalsrForSemanticSegmentation
from .pipeline_halsr import load_roi_model

#: The one template for a HALSR-Net repository (its ROI model, localiser or box regressor, in ``roi/`` included).
TEMPLATE_NAME = "halsr_net.md"
LICENSE = "cc-by-nc-sa-4.0"
TAGS = ["medical-imaging", "cardiac-mri", "image-segmentation", "left-ventricle", "halsr-net", "custom_code"]

CLASS_NAMES = {"lv_cavity": "LV cavity", "myocardium": "myocardium", "lv": "LV", "rv_cavity": "RV cavity"}
METRIC_NAMES = {
    "dice": "Dice",
    "iou": "IoU",
    "jaccard": "IoU",
    "accuracy": "pixel accuracy",
    "hd": "Hausdorff distance",
    "hd95": "HD95",
    "assd": "ASSD",
    "precision": "precision",
    "recall": "recall",
}
DISTANCE_METRICS = {"hd", "hd95", "assd", "msd", "asd"}
LEVELS = {"volume_metrics": "3D per volume", "slice_metrics": "2D per slice"}
#: summary key -> (model-index type, label, unit; None: unitless, "distance": the summary's ``unit``)
ROI_METRICS = {
    "rmse": ("roi_rmse", "ROI stage box RMSE", "distance"),
    "outlier_rate_percent": ("roi_outlier_rate_percent", "ROI stage outlier rate", "%"),
    "iou_mean": ("roi_iou_mean", "ROI stage box mean IoU (a missed LV counts 0)", None),
    "in_crop_percent": ("roi_in_crop_percent", "Reference LV box inside the ROI stage's crop", "%"),
    "final_crop_iou_mean": ("roi_final_crop_iou_mean", "Final crop's box mean IoU, after the second look "
                            "(a missed LV counts 0)", None),
    "final_crop_in_crop_percent": ("roi_final_crop_in_crop_percent", "Reference LV box inside the final crop, "
                                   "after the second look", "%"),
}
#: A summary written before the ROI stage's own box was scored: every ROI number is the final crop's.
LEGACY_ROI_METRICS = {
    "rmse": ("roi_final_crop_rmse", "Final crop's box RMSE, after the second look", "distance"),
    "outlier_rate_percent": ("roi_final_crop_outlier_rate_percent", "Final crop's box outlier rate, after the "
                             "second look", "%"),
    "iou_mean": ROI_METRICS["final_crop_iou_mean"],
    "in_crop_percent": ROI_METRICS["final_crop_in_crop_percent"],
}
CLINICAL_METRICS = {
    "ef_bias": ("EF bias, predicted minus reference", "percentage points"),
    "ef_mae": ("EF mean absolute error", "percentage points"),
    "ef_r": ("EF Pearson correlation", None),
    "ef_loa_low": ("EF lower limit of agreement", "percentage points"),
    "ef_loa_high": ("EF upper limit of agreement", "percentage points"),
    "edv_bias": ("EDV bias, predicted minus reference", "mL"),
    "esv_bias": ("ESV bias, predicted minus reference", "mL"),
    "edv_mae": ("EDV mean absolute error", "mL"),
    "esv_mae": ("ESV mean absolute error", "mL"),
    "edv_r": ("EDV Pearson correlation", None),
    "esv_r": ("ESV Pearson correlation", None),
}


def _clinical_entries(clinical: dict) -> list[dict]:
    """The clinical scalars a card publishes: ``{key, label, unit, value}``; EDV/ESV only in mL
    (``unit_volume`` "ml"), never in voxels."""
    in_ml = str(clinical.get("unit_volume") or "").lower() == "ml"
    entries = []
    for key, value in clinical.items():
        if key == "unit_volume" or (key.startswith(("edv_", "esv_")) and not in_ml):
            continue
        if isinstance(value, (int, float)) and not isinstance(value, bool) or value is None and key in CLINICAL_METRICS:
            label, unit = CLINICAL_METRICS.get(key, (key, None))
            entries.append({"key": key, "label": label, "unit": unit, "value": value})
    return entries


def _roi_entries(roi: dict) -> list[dict]:
    """The ROI scalars a card publishes: ``{type, label, unit, value}``, named by the box they measure."""
    table = ROI_METRICS if "final_crop_in_crop_percent" in roi else LEGACY_ROI_METRICS
    entries = []
    for key, (metric_type, label, unit) in table.items():
        unit = (roi.get("unit") or "px") if unit == "distance" else unit
        entries.append({"type": metric_type, "label": label, "unit": unit, "value": roi.get(key)})
    return entries

#: Keys of ``training_args.json`` (``TrainingArguments.to_json_string()``) shown in the card.
TRAINING_KEYS = [
    "learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size", "gradient_accumulation_steps",
    "lr_scheduler_type", "warmup_ratio", "warmup_steps", "weight_decay", "optim", "adam_beta1", "adam_beta2",
    "adam_epsilon", "seed", "fp16", "bf16", "metric_for_best_model", "load_best_model_at_end",
]
#: Keys of ``run_args.json`` (written by ``halsr-hf train``: ``model_args``, ``data_args``) shown in the card.
RUN_KEYS = [
    "architecture", "preset", "model_name_or_path", "dropout_rate", "early_stopping_patience", "labels", "image_size",
    "eval_margin", "train_margin_min", "train_margin_max", "train_jitter", "augment", "rotation_degrees", "scale_min",
    "scale_max", "elastic_prob", "max_train_samples", "seed",
]
#: Keys of the Trainer's ``trainer_state.json`` shown in the card.
STATE_KEYS = ["epoch", "global_step", "max_steps", "num_train_epochs", "train_batch_size", "best_metric"]
#: Provenance files copied from a model folder (and from its ``roi/``) into the published repository when present.
PROVENANCE_FILES = ["training_args.json", "run_args.json", "command.txt", "all_results.json", "train_results.json",
                    "eval_results.json", "trainer_state.json", "learning_curves.png", "hardware.txt",
                    "stage1_command.txt", "stage1_run_args.json", "stage1_training_args.json", "stage1_trainer_state.json"]

#: Training sources (the ``source`` column of ``halsr-hf prepare``'s datasets) the card can describe.
TRAINING_SOURCES = {
    "acdc-ssl4mis": ("ACDC (SSL4MIS split), cine", "one centre (University Hospital of Dijon, France), **Siemens** 1.5 T "
                     "and 3 T scanners, 100 patients in five groups (normal, previous infarction, dilated and hypertrophic "
                     "cardiomyopathy, abnormal right ventricle)", "CC BY-NC-SA 4.0"),
    "acdc": ("ACDC, cine", "one centre (University Hospital of Dijon, France), **Siemens** 1.5 T and 3 T scanners, "
             "100 patients in five groups", "CC BY-NC-SA 4.0"),
    "myops2020-cine": ("MyoPS 2020, cine (bSSFP)", "45 patients after myocardial infarction from another centre and "
                       "scanner than ACDC; one frame per patient, registered to the late-enhancement image",
                       "the MyoPS 2020 challenge's research terms"),
    "myops2020-lge": ("MyoPS 2020, late gadolinium enhancement", "the same patients' LGE images (another contrast: "
                      "bright scar in a dark myocardium)", "the MyoPS 2020 challenge's research terms"),
    "emidec-lge": ("EMIDEC, late gadolinium enhancement", "100 patients (33 normal, 67 infarction) of the University "
                   "Hospital of Dijon, 8-bit PNG at 256x256 without voxel spacing", "the EMIDEC challenge's research terms"),
}

CITATION = """@article{fakhfakh2025halsrnet,
  title   = {HALSR-Net: Improving CNN Segmentation of Cardiac Left Ventricle MRI with Hybrid Attention and Latent Space Reconstruction},
  author  = {Fakhfakh, Mohamed and Sarry, Laurent and Clarysse, Patrick},
  journal = {Computerized Medical Imaging and Graphics},
  volume  = {123},
  pages   = {102546},
  year    = {2025},
  doi     = {10.1016/j.compmedimag.2025.102546}
}

@article{bernard2018acdc,
  title   = {Deep Learning Techniques for Automatic MRI Cardiac Multi-Structures Segmentation and Diagnosis: Is the Problem Solved?},
  author  = {Bernard, Olivier and Lalande, Alain and Zotti, Clement and others},
  journal = {IEEE Transactions on Medical Imaging},
  volume  = {37},
  number  = {11},
  pages   = {2514--2525},
  year    = {2018},
  doi     = {10.1109/TMI.2018.2837502}
}

@article{radau2009sunnybrook,
  title   = {Evaluation Framework for Algorithms Segmenting Short Axis Cardiac MRI},
  author  = {Radau, Perry and Lu, Yingli and Connelly, Kim and Paul, Gideon and Dick, Alexander J. and Wright, Graham A.},
  journal = {The MIDAS Journal - Cardiac MR Left Ventricle Segmentation Challenge},
  year    = {2009},
  doi     = {10.54294/g80ruo}
}"""


# ---- templates ---------------------------------------------------------------------------------


def template_dir() -> Path:
    """``halsr_hf/templates/``: the model card templates, package data (installed with the wheel)."""
    return Path(__file__).resolve().parent / "templates"


def default_template_path() -> Path:
    path = template_dir() / TEMPLATE_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"model card template not found at {path}: this installation of halsr-hf is incomplete "
            "(the template is package data); reinstall it, or pass template_path= (CLI: --template)"
        )
    return path


# ---- evaluation summaries ----------------------------------------------------------------------


def load_summary(path) -> dict:
    """Read and check one ``summary.json`` (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: evaluation summary not found (expected the summary.json of halsr-hf evaluate)")
    try:
        summary = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(summary, dict) or not isinstance(summary.get("dataset"), dict) or not summary["dataset"].get("name"):
        raise InputError(f"{path}: not an evaluation summary (needs a 'dataset' object with a 'name')")
    if not any(isinstance(summary.get(k), dict) for k in ("volume_metrics", "slice_metrics", "roi", "clinical")):
        raise InputError(f"{path}: no volume_metrics, slice_metrics, roi or clinical results in it")
    return summary


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def split_metric_key(key: str) -> tuple[str, str | None]:
    """``"hd95_lv_cavity"`` -> ``("hd95", "lv_cavity")``; a key without a known class -> ``(key, None)``."""
    for class_key in sorted(CLASS_NAMES, key=len, reverse=True):
        if key.endswith("_" + class_key):
            return key[: -len(class_key) - 1], class_key
    return key, None


def _metric_unit(metric: str, distance_unit: str | None) -> str | None:
    return (distance_unit or "px") if metric in DISTANCE_METRICS else None


def _metric_label(metric: str, class_key: str | None, level: str, unit: str | None) -> str:
    parts = [CLASS_NAMES.get(class_key, class_key)] if class_key else []
    parts.append(level)
    if unit:
        parts.append(unit)
    return f"{METRIC_NAMES.get(metric, metric)} ({', '.join(parts)})"


def _dataset_fields(dataset: dict) -> dict:
    name = str(dataset.get("name"))
    return {
        "dataset_name": name,
        "dataset_type": str(dataset.get("hf_id") or dataset.get("source") or name),
        "dataset_split": dataset.get("split"),
    }


def _segmentation_rows(block: dict, distance_unit: str | None, level: str) -> list[dict]:
    """The rows of one level's metrics; a 3D distance is left out unless it is in mm."""
    rows = []
    for key, stats in block.items():
        if not isinstance(stats, dict):
            continue
        metric, class_key = split_metric_key(key)
        unit = _metric_unit(metric, distance_unit)
        if unit is not None and unit != "mm" and level == LEVELS["volume_metrics"]:
            continue  # a slice step counted as one pixel (module docstring)
        rows.append({
            "key": key, "metric": metric, "metric_label": METRIC_NAMES.get(metric, metric),
            "class_key": class_key, "class_label": CLASS_NAMES.get(class_key, class_key or "-"),
            "unit": unit, "mean": stats.get("mean"), "sd": stats.get("sd"), "median": stats.get("median"),
            "n": stats.get("n"),
        })
    return rows


def eval_results_from_summary(summary: dict) -> list:
    """``model-index`` entries (``huggingface_hub.EvalResult``) for one summary and its
    ``extra_evaluations``. Values are the summary's numbers unchanged; non-finite ones are left out."""
    results = []

    def add(task_type, task_name, dataset, metric_type, metric_name, value, args=None):
        if not _finite(value):
            return
        results.append(EvalResult(task_type=task_type, task_name=task_name, metric_type=metric_type,
                                  metric_name=metric_name, metric_value=value, metric_args=args or None,
                                  **_dataset_fields(dataset)))

    evaluations = [summary] + [e for e in summary.get("extra_evaluations") or [] if isinstance(e, dict)]
    for evaluation in evaluations:
        dataset = evaluation.get("dataset") or summary["dataset"]
        distance_unit = evaluation.get("distance_unit") or summary.get("distance_unit")
        for block_key, level in LEVELS.items():
            block = evaluation.get(block_key)
            if not isinstance(block, dict):
                continue
            for row in _segmentation_rows(block, distance_unit, level):
                args = {"statistic": "mean", "level": level}
                if row["class_key"]:
                    args["class"] = row["class_key"]
                if row["unit"]:
                    args["unit"] = row["unit"]
                add("image-segmentation", "Cardiac LV segmentation", dataset, row["metric"],
                    _metric_label(row["metric"], row["class_key"], level, row["unit"]), row["mean"], args)
    for evaluation in evaluations:
        roi = evaluation.get("roi")
        if isinstance(roi, dict):
            for entry in _roi_entries(roi):
                unit = entry["unit"]
                add("object-detection", "LV ROI localisation", evaluation.get("dataset") or summary["dataset"],
                    entry["type"], f"{entry['label']} ({unit})" if unit else entry["label"], entry["value"],
                    {"unit": unit} if unit else None)
    clinical = summary.get("clinical")
    if isinstance(clinical, dict):
        for entry in _clinical_entries(clinical):
            unit = entry["unit"]
            add("image-segmentation", "Cardiac LV segmentation", summary["dataset"], entry["key"],
                f"{entry['label']} ({unit})" if unit else entry["label"], entry["value"], {"unit": unit} if unit else None)
    return results


def _summary_view(summary: dict, source: str) -> dict:
    """The structure the template renders as tables."""
    sections = []
    evaluations = [summary] + [e for e in summary.get("extra_evaluations") or [] if isinstance(e, dict)]
    for evaluation in evaluations:
        dataset = evaluation.get("dataset") or summary["dataset"]
        distance_unit = evaluation.get("distance_unit") or summary.get("distance_unit") or "px"
        levels = []
        for block_key, level in LEVELS.items():
            block = evaluation.get(block_key)
            if isinstance(block, dict) and block:
                levels.append({"title": level, "rows": _segmentation_rows(block, distance_unit, level)})
        roi = evaluation.get("roi") if isinstance(evaluation.get("roi"), dict) else None
        roi_entries = _roi_entries(roi) if roi else []
        stage_types = {ROI_METRICS[key][0] for key in ("rmse", "outlier_rate_percent", "iou_mean", "in_crop_percent")}
        sections.append({"dataset": dataset, "distance_unit": distance_unit, "levels": levels, "roi": roi,
                         "roi_entries": [e for e in roi_entries if _finite(e["value"])],
                         "roi_stage_scored": any(e["type"] in stage_types and _finite(e["value"]) for e in roi_entries)})
    clinical_block = summary.get("clinical") if isinstance(summary.get("clinical"), dict) else {}
    clinical = [dict(entry, unit=entry["unit"] or "") for entry in _clinical_entries(clinical_block)]
    volumes_in_voxels = bool(clinical_block) and str(clinical_block.get("unit_volume") or "").lower() != "ml"
    roi_variants = []
    for name, rows in (summary.get("roi_stage_vs_reference") or {}).items():
        if isinstance(rows, list) and rows:
            roi_variants.append({"dataset": name, "rows": [_roi_variant_row(r) for r in rows if isinstance(r, dict)]})
    return {"source": source, "model": summary.get("model"), "sections": sections, "clinical": clinical,
            "volumes_in_voxels": volumes_in_voxels, "roi_variants": roi_variants}


def _roi_variant_row(row: dict) -> dict:
    """One row of the ROI stage against the reference (``--roi-variants``), numbers as text."""
    def fmt(value, digits=3):
        return "-" if not _finite(value) else f"{value:.{digits}f}"

    presence = row.get("presence") or {}
    es, every = presence.get("ES") or {}, presence.get("all") or {}
    return {"description": row.get("description", row.get("variant")),
            "dice": f"{fmt(row.get('lv_dice_3d'))} / {fmt(row.get('myo_dice_3d'))}",
            "ed_es": f"{fmt(row.get('lv_dice_ed'))} / {fmt(row.get('lv_dice_es'))}",
            "ef_mae": fmt(row.get("ef_mae"), 2),
            "es_presence": f"{fmt(es.get('precision'))} / {fmt(es.get('recall'))}",
            "presence": f"{fmt(every.get('precision'))} / {fmt(every.get('recall'))}"}


# ---- the model folder --------------------------------------------------------------------------


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _format_value(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_format_value(v) for v in value)
    return str(value)


#: An absolute POSIX path in a record's text: a ``/`` that starts a token (not inside a URL or a relative path)
#: up to a separator of command lines, CSV-like lists, JSON strings and Markdown tables.
ABSOLUTE_PATH = re.compile(r"(?<![\w.~:/-])/[^\s,;:\"'`|()\[\]{}<>=]+")


def portable_path(path: str, root=None) -> str:
    """A path that means something on another machine: relative to ``root`` (default: the current
    folder, the project) when inside it; else from its last folder named ``data`` (``/work/data/acdc``
    -> ``data/acdc``, where ``halsr-hf prepare`` writes datasets by default); else its last component.
    Relative paths are returned as they are."""
    if not path.startswith("/"):
        return path
    root = Path(root if root is not None else os.getcwd()).resolve()
    target = Path(os.path.normpath(path))
    try:
        return target.relative_to(root).as_posix() or "."
    except ValueError:
        pass
    parts = target.parts
    if "data" in parts[1:-1] or (len(parts) > 2 and parts[-2] == "data"):
        index = len(parts) - 1 - parts[::-1].index("data")
        if index < len(parts) - 1:
            return "/".join(parts[index:])
    return target.name


def portable_paths(text: str, root=None) -> str:
    """``text`` with every absolute path replaced by :func:`portable_path`: the records and the card
    published with a model name the datasets and give paths relative to the project, never the
    training machine's folders."""
    return ABSOLUTE_PATH.sub(lambda match: portable_path(match.group(0), root), text)


def training_view(model_dir: Path) -> dict:
    """Hyperparameters and results recorded by ``halsr-hf train`` in the model folder
    (``training_args.json``, ``run_args.json``, ``trainer_state.json``, ``command.txt``,
    ``all_results.json``); any of them may be absent."""
    hyper, seen = [], set()

    def add(key, value):
        if key not in seen and value not in (None, "", []) and not isinstance(value, dict):
            seen.add(key)
            hyper.append({"name": key, "value": portable_paths(_format_value(value))})

    args = _read_json(model_dir / "training_args.json")
    if isinstance(args, dict):
        for key in TRAINING_KEYS:
            add(key, args.get(key))
    run = _read_json(model_dir / "run_args.json")
    if isinstance(run, dict):
        flat = {**(run.get("model_args") or {}), **(run.get("data_args") or {}), "seed": run.get("seed")}
        if flat.get("model_name_or_path"):
            flat.pop("preset", None)  # ignored when fine-tuning: the architecture comes from the checkpoint
        for key in RUN_KEYS:
            add(key, flat.get(key))
    state = _read_json(model_dir / "trainer_state.json")
    if isinstance(state, dict):
        for key in STATE_KEYS:
            add(key, state.get(key))
    results = _read_json(model_dir / "all_results.json") or _read_json(model_dir / "train_results.json")
    result_rows = []
    if isinstance(results, dict):
        result_rows = [{"name": k, "value": _format_value(v)} for k, v in results.items()
                       if isinstance(v, (int, float, str)) and not isinstance(v, bool)]
    command_path = model_dir / "command.txt"
    command = portable_paths(command_path.read_text().strip()) if command_path.is_file() else None
    hardware_path = model_dir / "hardware.txt"
    stage1 = None  # a run that continued an earlier one (bundle_default_model.py --segmenter-stage1)
    stage1_command = model_dir / "stage1_command.txt"
    if stage1_command.is_file():
        stage1 = {"command": portable_paths(stage1_command.read_text().strip()),
                  "budget": _budget(_read_json(model_dir / "stage1_run_args.json"), _read_json(model_dir / "stage1_trainer_state.json"))}
    return {"stage1": stage1,"hyperparameters": hyper, "results": result_rows, "command": command,
            "recorded": bool(hyper or result_rows or command),
            "datasets": _training_sources(run), "budget": _budget(run, state),
            "validation": _best_validation(state),
            "curves": (model_dir / "learning_curves.png").is_file(),
            "hardware": hardware_path.read_text().strip() if hardware_path.is_file() else None}


def _training_sources(run) -> list[dict]:
    """The training mix from ``run_args.json``: each validation source (``eval_slices_per_source``)
    or, for a single-source run, none (the card then says ACDC only when the dataset is ACDC)."""
    if not isinstance(run, dict):
        return []
    data = run.get("data_args") or {}
    weights = {}
    for item in str(data.get("dataset_weights") or "").split(","):
        name, _, value = item.partition("=")
        if name.strip() and value.strip():
            weights[name.strip()] = value.strip()
    per_source = run.get("eval_slices_per_source") or {}
    rows = []
    for source, slices in per_source.items():
        name, description, terms = TRAINING_SOURCES.get(source, (source, "", "its own terms"))
        rows.append({"source": source, "name": name, "description": description, "terms": terms,
                     "weight": weights.get(source, "1"), "validation_slices": slices})
    return rows


def _budget(run, state) -> dict | None:
    """Steps, epochs, wall time and sessions of the training (``run_args.json`` of ``halsr-hf train``)."""
    if not isinstance(run, dict) or run.get("wall_s_total") is None:
        return None
    state = state if isinstance(state, dict) else {}
    # the Trainer's state and run_args.json can be of different moments (a checkpoint-N folder with its run's
    # run_args.json): steps and epochs both from the state when there is one
    return {"steps": state.get("global_step") or run.get("global_step"), "epochs": state.get("epoch"),
            "hours": round(float(run["wall_s_total"]) / 3600, 2), "sessions": len(run.get("sessions") or []) or 1,
            "train_slices": run.get("train_slices"), "best_step": state.get("best_global_step")}


def _best_validation(state) -> list[dict]:
    """Validation Dice per source and class at the best checkpoint (``trainer_state.json``'s log at
    ``best_global_step``): ``eval_<source>_dice_<class>`` of a mix, or ``eval_dice_<class>``."""
    if not isinstance(state, dict) or state.get("best_global_step") is None:
        return []
    values = {}
    for entry in state.get("log_history") or []:
        if entry.get("step") == state["best_global_step"]:
            values.update({k: v for k, v in entry.items() if k.startswith("eval_") and "_dice_" in f"_{k[5:]}"})
    rows = {}
    for key, value in values.items():
        body = key[len("eval_"):]
        source, _, label = body.rpartition("dice_")
        source = source.rstrip("_") or "validation"
        if label in ("lv_cavity", "myocardium") and isinstance(value, (int, float)):
            rows.setdefault(source, {})[label] = value
    return [{"source": source, "name": TRAINING_SOURCES.get(source, (source,))[0], "lv": v.get("lv_cavity"),
             "myo": v.get("myocardium")} for source, v in rows.items()]


def model_view(model_dir: Path) -> dict:
    """Architecture facts computed from the saved models (parameter counts, preset, processor settings)."""
    try:
        model = HalsrForSemanticSegmentation.from_pretrained(str(model_dir))
    except (OSError, ValueError) as error:
        raise InputError(f"{model_dir}: cannot load a HALSR-Net model there ({error})") from None
    config = model.config
    preset = next((name for name, values in PRESETS.items() if values["hidden_sizes"] == list(config.hidden_sizes)), None)
    view = {
        "preset": preset or "custom",
        "hidden_sizes": list(config.hidden_sizes),
        "image_size": config.image_size,
        "parameters": sum(p.numel() for p in model.parameters()),
        "labels": [{"id": int(k), "name": v} for k, v in sorted(config.id2label.items(), key=lambda kv: int(kv[0]))],
        "ablations": [name for name, on in (("HAPM", config.use_hapm), ("attention gates", config.use_attention_gates),
                                            ("latent-space reconstruction", config.use_reconstruction)) if not on],
        "roi": None,
        "processor": None,
    }
    roi_dir = model_dir / getattr(config, "roi_subfolder", "roi")
    if (roi_dir / "config.json").is_file():
        roi = load_roi_model(str(roi_dir), None, f"{roi_dir}")
        localizer = roi.config.model_type == "halsr"
        view["roi"] = {"subfolder": roi_dir.name, "parameters": sum(p.numel() for p in roi.parameters()),
                       "image_size": roi.config.image_size or 128, "kind": "localizer" if localizer else "regressor",
                       "predict_presence": True if localizer else bool(roi.config.predict_presence),
                       "hidden_sizes": list(roi.config.hidden_sizes) if localizer else None}
    if (model_dir / "preprocessor_config.json").is_file():
        processor = AutoImageProcessor.from_pretrained(str(model_dir), trust_remote_code=False)
        view["processor"] = {"size": processor.crop_size, "roi_size": processor.roi_size, "crop_margin": processor.crop_margin,
                             "clip_percentiles": list(processor.clip_percentiles),
                             "settings": [{"name": k, "value": f"{v:g}"} for k, v in processor.roi_stage_settings().items()]}
    return view


def _millions(count: int) -> str:
    return f"{count / 1e6:.2f}M ({count:,} parameters)"


# ---- rendering ---------------------------------------------------------------------------------


def render_model_card(model_dir, eval_summaries=(), repo_id: str | None = None, template_path=None,
                      datasets=None, model_name: str | None = None):
    """Render the card of a HALSR-Net model folder.

    Args:
        model_dir: a folder saved by ``CardiacLVSegmentationPipeline.save_pretrained`` (or by the
            Trainer; the ROI part of the card is left out when there is no ``roi/``).
        eval_summaries: paths of ``summary.json`` files from ``halsr-hf evaluate`` (the first is the
            main evaluation); or already-loaded dicts.
        repo_id: the Hub id used in the usage snippets (default: a placeholder).
        template_path: a Jinja template (default ``halsr_hf/templates/halsr_net.md``, installed with the package).
        datasets: Hub dataset ids for the ``datasets`` metadata (default: the ``hf_id`` of the
            evaluated datasets that have one).

    Returns:
        ``huggingface_hub.ModelCard``; its ``data.eval_results`` hold the ``model-index`` entries.
    """
    model_dir = Path(model_dir)
    summaries, sources = [], []
    for item in eval_summaries or ():
        if isinstance(item, dict):
            summaries.append(item)
            sources.append("(in memory)")
        else:
            summaries.append(load_summary(item))
            item = Path(item)
            inside = item.resolve().parent == (model_dir / "evaluation").resolve()
            sources.append(f"evaluation/{item.name}" if inside else item.name)
    eval_results = [r for s in summaries for r in eval_results_from_summary(s)]
    if datasets is None:
        datasets = []
        for s in summaries:
            for evaluation in [s] + list(s.get("extra_evaluations") or []):
                hf_id = (evaluation.get("dataset") or {}).get("hf_id")
                if hf_id and hf_id not in datasets:
                    datasets.append(hf_id)
    repo_id = repo_id or "<user>/halsr-net"
    model = model_view(model_dir)
    roi_part = "LV localiser" if (model.get("roi") or {}).get("kind") == "localizer" else "LV ROI regressor"
    model_name = model_name or f"HALSR-Net ({model['preset']}) + {roi_part}"
    card_data = ModelCardData(
        model_name=model_name,
        license=LICENSE,
        library_name="transformers",
        pipeline_tag="image-segmentation",
        tags=list(TAGS),
        datasets=list(datasets) or None,
        metrics=sorted({r.metric_type for r in eval_results}) or None,
        eval_results=eval_results or None,
    )
    template = Path(template_path) if template_path else default_template_path()
    card = ModelCard.from_template(
        card_data,
        template_path=str(template),
        repo_id=repo_id,
        model=model,
        seg_parameters=_millions(model["parameters"]),
        roi_parameters=_millions(model["roi"]["parameters"]) if model["roi"] else None,
        evaluations=[_summary_view(s, src) for s, src in zip(summaries, sources)],
        training=training_view(model_dir),
        roi_training=training_view(model_dir / model["roi"]["subfolder"]) if model["roi"] else None,
        orientation=_read_json(model_dir / "evaluation" / "orientation.json"),
        citation=CITATION,
        model_name=model_name,
        fmt=format_number,
        package_version=package_version(),
    )
    return card


def format_number(value, digits: int = 4) -> str:
    """Table formatting: fixed decimals, ``n/a`` for missing or non-finite values."""
    return f"{value:.{digits}f}" if _finite(value) else "n/a"


def package_version() -> str:
    try:
        return version("halsr-hf")
    except Exception:  # noqa: BLE001 - not installed as a distribution
        return "0.1.0"


def write_model_card(model_dir, eval_summaries=(), repo_id: str | None = None, out_path=None, overwrite: bool = True,
                     **kwargs) -> Path:
    """Render the card and write it to ``out_path`` (default ``model_dir/README.md``), atomically
    (temporary file, then rename; an existing file is replaced unless ``overwrite=False``); returns the path."""
    from .image_io import atomic_write

    card = render_model_card(model_dir, eval_summaries, repo_id=repo_id, **kwargs)
    out = Path(out_path) if out_path else Path(model_dir) / "README.md"
    text = str(card)
    return atomic_write(out, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), overwrite=overwrite)


def check_model_card(path) -> list:
    """Load a written card with ``ModelCard.load`` and re-parse its ``model-index``; returns the
    ``EvalResult`` list (raises ``ValueError`` when the metadata does not validate)."""
    card = ModelCard.load(path)
    model_index = card.data.to_dict().get("model-index")
    if card.data.eval_results and not model_index:
        raise ValueError(f"{path}: eval_results without a model-index")
    if model_index:
        _, parsed = model_index_to_eval_results(model_index)
        if len(parsed) != len(card.data.eval_results or []):
            raise ValueError(f"{path}: model-index does not round-trip")
    return list(card.data.eval_results or [])
