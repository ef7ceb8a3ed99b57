"""``halsr-hf predict -i IN -o OUT``: segment a cohort, a folder (or CSV manifest) of subjects.

Each sub-folder of IN is a subject (3D NIfTI files, one per phase; one 4D cine NIfTI; .npy volumes;
or one DICOM series); each NIfTI, .npy or multi-frame DICOM file directly in IN is a subject too.
A .csv manifest lists subject,path[,ed_frame,es_frame]. Label maps (*_gt, *_seg, *_label(s), *_mask,
or integer volumes with few values) are skipped and counted. Every frame is segmented; ED and ES come
from the manifest, else from files named ED and ES, else from the LV volume curve (largest, smallest);
`warnings` says when they look wrong (names and volumes disagree, ED = ES, EF outside 10-90 %, ES
segmented on fewer slices). OUT gets cohort.csv (EDV, ESV, SV, EF, myocardial mass, warning and
information flags per subject), errors.csv, ef_histogram.png and, per subject, masks (NIfTI on the
input's grid), a JSON with every slice's qc and message, the LV volume curve and a montage PNG of ED
and ES with the masks overlaid; ef_histogram.png also names the subjects with warnings.

The exit status is 1 when a subject failed (errors.csv says why; the others are done), 2 for
bad arguments. Run it again to resume: finished subjects are skipped (redone if their files
changed), failed ones too (--retry-failed), half-written ones redone; a resume with other weights
or settings is refused (--overwrite starts again).
Split the work over machines with --num-parts/--part-id, over GPUs with
``accelerate launch --num_processes N -m halsr_hf.cli predict -i IN -o OUT``, over CPU processes
with ``torchrun --standalone --nproc_per_node N -m halsr_hf.cli predict -i IN -o OUT``.
Details: the docstring of the ``halsr_hf.cohort`` module.
"""

import argparse
import sys


def main(argv=None) -> int:
    from ..cli import MODEL_HELP, TTA_HELP, VERBOSE_HELP, description

    # the whole docstring: what a subject is matters before the first run
    parser = argparse.ArgumentParser(prog="halsr-hf predict", description=description(__doc__),
                                     epilog=__doc__.split("\n", 2)[2].strip() + "\n\n" + VERBOSE_HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-i", "--input", required=True, help="folder of subjects, or a .csv manifest")
    parser.add_argument("-o", "--output", required=True,
                        help="output folder: new, empty, or the output of an earlier run to resume")
    parser.add_argument("--model", default=None, help=MODEL_HELP)
    parser.add_argument("--roi-model", default=None, help="ROI model folder or Hub id (default: the model's roi/)")
    parser.add_argument("--include", default=None, metavar="GLOB",
                        help="use only files whose name matches, e.g. '*_4d.nii.gz' (default: every image file)")
    parser.add_argument("--num-parts", type=int, default=1, help="split the cohort into this many parts (machines)")
    parser.add_argument("--part-id", type=int, default=0, help="the part this run segments, 0 to num-parts - 1")
    parser.add_argument("--num-workers", type=int, default=1,
                        help="processes reading subjects ahead of the model (default 1: one keeps ahead of the model "
                             "and a crashing reader fails only its subject; 0: read in the main process)")
    parser.add_argument("--batch-size", type=int, default=16, help="slices per forward pass")
    parser.add_argument("--tta", action="store_true", help=TTA_HELP)
    parser.add_argument("--device", default=None,
                        help="cpu, cuda, cuda:1 ... (default: the process's device under accelerate/torchrun: its GPU, else cpu)")
    parser.add_argument("--overwrite", action="store_true",
                        help="delete the outputs of an earlier run in OUT and start again (needed to change the model, "
                             "its settings or --tta/--include: a resume never mixes two runs' results)")
    parser.add_argument("--retry-failed", action="store_true",
                        help="segment again the subjects that failed before (by default a resume skips them unless "
                             "their files changed)")
    parser.add_argument("--merge", action="store_true",
                        help="only rebuild cohort.csv, errors.csv and the histogram from OUT's subject folders "
                             "(e.g. once after parts on several machines); segments nothing")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    from ..cohort import merge_only, predict_cohort

    if args.merge:
        summary = merge_only(args.input, args.output, include=args.include, log=sys.stdout)
        return 0 if summary["failed"] == 0 else 1
    summary = predict_cohort(args.input, args.output, model=args.model, roi_model=args.roi_model, device=args.device,
                             include=args.include, num_parts=args.num_parts, part_id=args.part_id,
                             num_workers=args.num_workers, batch_size=args.batch_size, tta=args.tta,
                             overwrite=args.overwrite, retry_failed=args.retry_failed,
                             progress=not args.no_progress, log=sys.stdout)
    return 0 if summary.get("failed", 0) == 0 else 1
