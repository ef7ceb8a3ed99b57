"""``halsr-hf segment INPUT [INPUT...]``: segment slices or volumes with the two-stage pipeline.

Writes, per input, into ``--out-dir``: an overlay PNG (LV cavity red, myocardium blue, ROI box
yellow; one per slice for volumes), the mask (``.png`` for a slice, ``.nii.gz`` with the input's
affine for a volume), and ``measurements.json`` with areas (px, and mm² when the spacing is
known), volumes (mL) and the ROI boxes. Prints a table (or the JSON with ``--json``).

Every file is written to a temporary name and renamed, with the user's normal permissions. An
existing output (``measurements.json``, or a mask or overlay named after an input:
``STEM_mask.png``, ``STEM_mask.nii.gz``, ``STEM_overlay*.png``) is refused unless ``--overwrite``,
before anything is written.
"""

import argparse
import glob
import json
import sys
from collections import Counter
from pathlib import Path


def _stem(path_or_name: str) -> str:
    name = Path(path_or_name).name
    for suffix in (".nii.gz", ".nii", ".dcm", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".npy"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _outputs_present(out_dir: Path, inputs) -> list:
    """Files in ``out_dir`` that segmenting ``inputs`` may write (a mask and overlays per input,
    named by its stem; a slice or a volume: both kinds are looked for)."""
    found = []
    for item in inputs:
        stem = glob.escape(_stem(item))
        for pattern in (f"{stem}_mask.png", f"{stem}_mask.nii.gz", f"{stem}_overlay.png", f"{stem}_overlay_z*.png"):
            found += sorted(out_dir.glob(pattern))
    return found


def _json_ready(result: dict) -> dict:
    keep = {}
    for key, value in result.items():
        if key in ("label_map", "segments"):
            continue
        if key == "slices":
            value = [_json_ready(s) for s in value]
        keep[key] = value
    return keep


def _write_json(path: Path, payload, overwrite: bool) -> None:
    from ..image_io import atomic_write

    text = json.dumps(payload, indent=2, default=float)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text), overwrite=overwrite)


def main(argv=None) -> int:
    from ..cli import MODEL_HELP, TTA_HELP, VERBOSE_HELP, description

    parser = argparse.ArgumentParser(prog="halsr-hf segment", description=description(__doc__), epilog=VERBOSE_HELP)
    parser.add_argument("inputs", nargs="+", help="PNG/JPEG/TIFF/DICOM/NIfTI files, .npy arrays (H,W) or (Z,H,W), or a "
                        "folder holding one DICOM series (a folder of subjects: halsr-hf predict)")
    parser.add_argument("--model", default=None, help=MODEL_HELP)
    parser.add_argument("--roi-model", default=None,
                        help="ROI model folder or Hub id: an LV localiser (the bundled model's) or a box regressor "
                             "(default: the model's roi/)")
    parser.add_argument("--no-roi", action="store_true",
                        help="segment whole slices without a ROI stage (the network was trained on LV crops: "
                             "for models without one, or to compare; flagged no_roi_model)")
    parser.add_argument("--out-dir", default="halsr-output", help="output folder (default: %(default)s)")
    parser.add_argument("--frame", type=int, default=None, help="frame of 4D NIfTI inputs (0-based)")
    parser.add_argument("--pixel-spacing", type=float, nargs=2, default=None, metavar=("ROW_MM", "COL_MM"))
    parser.add_argument("--slice-thickness", type=float, default=None, help="slice spacing in mm for volumes")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--tta", action="store_true", help=TTA_HELP)
    parser.add_argument("--device", default=None,
                        help="cpu, cuda, cuda:1 ... (default: what transformers.pipeline picks: the first GPU, "
                             "cuda:0, when one is available, else cpu)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument("--json", action="store_true", help="print the measurements as JSON")
    args = parser.parse_args(argv)

    from .. import load_pipeline
    from ..errors import InputError
    from ..image_io import atomic_write, check_can_write, load_input, save_mask
    from ..visualize import is_segmented, overlay, summary_lines

    for item in args.inputs:
        if not Path(item).exists():
            raise InputError(f"{item}: no such file")
    out_dir = Path(args.out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out-dir {out_dir}: exists and is not a folder")
    check_can_write(out_dir / "measurements.json", args.overwrite)
    for path in [] if args.overwrite else _outputs_present(out_dir, args.inputs):
        check_can_write(path)
    if args.no_roi and args.roi_model:
        raise InputError("--no-roi and --roi-model: choose one")
    pipe = load_pipeline(args.model, roi_model=False if args.no_roi else args.roi_model, device=args.device)
    pipe.check_roi_stage()  # a model without a ROI stage is refused before anything is written
    out_dir.mkdir(parents=True, exist_ok=True)
    report = []
    for item in args.inputs:
        # read once: the pipeline takes the LoadedInput as is, the overlays use its slices
        loaded = load_input(item, frame=args.frame, pixel_spacing=args.pixel_spacing, slice_thickness=args.slice_thickness)
        result = pipe(loaded, batch_size=args.batch_size, tta=args.tta)
        stem = _stem(item)
        label_map = result["label_map"]
        if label_map.ndim == 2:
            mask_path = save_mask(label_map, out_dir / f"{stem}_mask.png", loaded, overwrite=args.overwrite)
            overlays = [(loaded.slices[0], label_map, result["roi"], out_dir / f"{stem}_overlay.png")]
        else:
            mask_path = save_mask(label_map, out_dir / f"{stem}_mask.nii.gz", loaded, overwrite=args.overwrite)
            overlays = [(loaded.slices[z], label_map[z], result["slices"][z]["roi"], out_dir / f"{stem}_overlay_z{z:02d}.png")
                        for z in range(label_map.shape[0])]
        for image, labels, roi, path in overlays:
            picture = overlay(image, labels, roi)
            atomic_write(path, lambda tmp, picture=picture: picture.save(tmp, format="PNG"), overwrite=args.overwrite)
        entry = _json_ready(result)
        entry.update(input=item, mask=str(mask_path), overlays=[str(o[3]) for o in overlays])
        report.append(entry)
    _write_json(out_dir / "measurements.json", report, args.overwrite)
    if args.json:
        json.dump(report, sys.stdout, indent=2, default=float)
        print()
    else:
        # the words of the Space too (visualize: "LV located", "segmented", "nothing segmented"), from the fields
        print("| input | slices | LV located | segmented | LV cavity | myocardium | unit | quality flags |\n"
              "|---|---|---|---|---|---|---|---|")
        notes = []
        for entry in report:
            per_slice = entry.get("slices") or [entry]
            located = sum(bool(s["lv_found"]) for s in per_slice)
            segmented = sum(is_segmented(s) for s in per_slice)
            if entry.get("volumes_ml"):
                v = entry["volumes_ml"]
                cav, myo, unit = v.get("lv_cavity"), v.get("myocardium"), "mL"
            else:
                areas = [s["areas_mm2"] or s["areas_px"] for s in per_slice]
                unit = "mm²" if per_slice[0]["areas_mm2"] else "px"
                cav = sum(a.get("lv_cavity", 0) for a in areas)
                myo = sum(a.get("myocardium", 0) for a in areas)
            fmt = lambda x: "-" if x is None else f"{x:.1f}"  # noqa: E731
            flags = Counter(flag for s in per_slice for flag in s.get("qc") or [])
            qc = ", ".join(f"{flag} ({count})" if len(per_slice) > 1 else flag for flag, count in flags.items()) or "-"
            n = len(per_slice)
            print(f"| {entry['input']} | {n} | {located}/{n} | {segmented}/{n} | {fmt(cav)} | {fmt(myo)} | {unit} | {qc} |")
            lines = summary_lines(per_slice)
            if segmented < n or len(lines) > 1:  # something to say beyond the table
                notes += [f"{entry['input']}: {line}" for line in lines]
        for note in notes:
            print(note)
        print(f"overlays, masks and measurements.json written to {out_dir}/")
    return 0
