"""``halsr-hf ef --ed ED --es ES``: EDV, ESV, stroke volume, EF and myocardial mass.

ED and ES are short-axis volumes (NIfTI 3D, or one 4D NIfTI with ``--ed-frame``/``--es-frame``);
both are segmented with the two-stage pipeline, volumes by slice summation.
"""

import argparse
import math


def main(argv=None) -> int:
    from ..cli import MODEL_HELP, VERBOSE_HELP, description

    parser = argparse.ArgumentParser(prog="halsr-hf ef", description=description(__doc__), epilog=VERBOSE_HELP)
    parser.add_argument("--ed", required=True, help="end-diastolic volume (NIfTI/.npy)")
    parser.add_argument("--es", required=True, help="end-systolic volume (NIfTI/.npy)")
    parser.add_argument("--ed-frame", type=int, default=None, help="frame of a 4D NIfTI for ED (0-based)")
    parser.add_argument("--es-frame", type=int, default=None, help="frame of a 4D NIfTI for ES (0-based)")
    parser.add_argument("--model", default=None, help=MODEL_HELP)
    parser.add_argument("--roi-model", default=None, help="ROI model folder or Hub id (default: the model's roi/)")
    parser.add_argument("--pixel-spacing", type=float, nargs=2, default=None, metavar=("ROW_MM", "COL_MM"))
    parser.add_argument("--slice-thickness", type=float, default=None, help="slice spacing in mm")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)

    import numpy as np

    from .. import load_pipeline
    from ..clinical import ejection_fraction
    from ..errors import argument_names
    from ..image_io import load_input
    from ..json_output import dumps

    load = lambda p: np.load(p) if p.endswith(".npy") else p  # noqa: E731
    # read both inputs first, so that an error names the flag of the right phase (--ed-frame, --es-frame)
    for phase, path, frame in (("ed", args.ed, args.ed_frame), ("es", args.es, args.es_frame)):
        with argument_names(frame=f"--{phase}-frame"):
            load_input(load(path), frame=frame, pixel_spacing=args.pixel_spacing, slice_thickness=args.slice_thickness)
    pipe = load_pipeline(args.model, roi_model=args.roi_model)
    result = ejection_fraction(load(args.ed), load(args.es), pipe=pipe, ed_frame=args.ed_frame, es_frame=args.es_frame,
                               pixel_spacing=args.pixel_spacing, slice_thickness=args.slice_thickness)
    result.pop("ed_label_map"), result.pop("es_label_map")
    if args.json:  # an undefined EF (no cavity at ED) is null: NaN is not JSON
        print(dumps(result, indent=2))
        return 0
    unit = result["volume_unit"]
    fmt = lambda v: "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.1f}"  # noqa: E731
    if unit == "ml":
        print(f"EDV {fmt(result['edv_ml'])} mL | ESV {fmt(result['esv_ml'])} mL | SV {fmt(result['sv_ml'])} mL | "
              f"EF {fmt(result['ef_percent'])} % | myocardial mass {fmt(result['myocardial_mass_g'])} g")
    else:
        print(f"EDV {result['edv_voxels']} voxels | ESV {result['esv_voxels']} voxels | EF {fmt(result['ef_percent'])} % "
              "(spacing unknown: volumes in voxels)")
    for warning in result["warnings"]:
        print(f"warning: {warning}")
    return 0
