"""``halsr-hf prepare``: convert a cardiac MRI source to a ``datasets`` folder (+ dataset card)."""

from __future__ import annotations

import argparse
import os
import time

from ..errors import InputError

SOURCES = ("acdc-ssl4mis", "acdc", "sunnybrook", "lvquan", "myops2020", "emidec")
#: sources with an RV label (``--keep-rv``)
WITH_RV = ("acdc", "acdc-ssl4mis", "myops2020")


def _ratios(text: str) -> tuple:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three comma-separated numbers, got {text!r}") from None
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"expected three comma-separated numbers (train,validation,test), got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="halsr-hf prepare",
        description="Convert ACDC (SSL4MIS HDF5 or original NIfTI), Sunnybrook (DICOM + contours), LVQuan "
        "(MATLAB), MyoPS 2020 (NIfTI, cine + LGE) or EMIDEC (LGE, PNG) to a datasets DatasetDict folder in the "
        "canonical slice schema, with a dataset card.",
    )
    parser.add_argument("dataset", choices=SOURCES, help="source layout")
    parser.add_argument("--source", required=True, help="the source folder (lvquan: a folder of .mat files or one .mat file)")
    parser.add_argument("--out", required=True, help="output folder (written atomically)")
    parser.add_argument("--keep-rv", action="store_true",
                        help="ACDC, MyoPS: keep the RV cavity as label 3 (default: background)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--push-to-hub", metavar="REPO_ID", help="also upload the dataset and its card to this Hub dataset repo")
    parser.add_argument("--private", action="store_true", help="with --push-to-hub: create a private repo")
    parser.add_argument("--split-seed", type=int, default=0,
                        help="seed of the patient-level split (acdc, sunnybrook, lvquan, myops2020, emidec's validation)")
    parser.add_argument(
        "--ratios", type=_ratios, default=None, metavar="TRAIN,VAL,TEST",
        help="patient split ratios for sources without official lists (default 0.7,0.1,0.2; myops2020: "
        "0.69,0.13,0.18, i.e. 31/6/8 of 45 patients; sunnybrook: every patient in test unless given)",
    )
    parser.add_argument("--sequence", action="append", choices=("C0", "LGE"), default=None, dest="sequences",
                        help="myops2020: a sequence to convert, repeatable (default: both; rows of C0 have source "
                        "myops2020-cine, of LGE myops2020-lge; the split does not depend on it)")
    parser.add_argument("--num-validation", type=int, default=None, metavar="N",
                        help="emidec: patients of train/ drawn (seeded) as the validation split (default 10); "
                        "val/ is the test split")
    parser.add_argument("--num-proc", type=int, default=None, help="worker processes (default: the CPU count, at most 4)")
    parser.add_argument(
        "--field", action="append", default=[], metavar="ROLE=NAME",
        help="lvquan: MATLAB field name of a role (image, endo, epi, pixel_spacing, resize_ratio; NAME 'none' disables resize_ratio)",
    )
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from . import (prepare_acdc, prepare_acdc_ssl4mis, prepare_emidec, prepare_lvquan, prepare_myops2020,
                   prepare_sunnybrook, save_dataset, split_counts)
    from .card import dataset_card

    if args.keep_rv and args.dataset not in WITH_RV:
        raise InputError(f"--keep-rv: {args.dataset} has no RV label")
    if args.sequences and args.dataset != "myops2020":
        raise InputError("--sequence applies to myops2020 only")
    if args.num_validation is not None and args.dataset != "emidec":
        raise InputError("--num-validation applies to emidec only")
    if args.field and args.dataset != "lvquan":
        raise InputError("--field applies to lvquan only")
    if args.push_to_hub:  # fail before converting, not after
        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE:
            raise InputError(f"--push-to-hub {args.push_to_hub}: the Hub is offline (HF_HUB_OFFLINE=1); unset it to upload")
    out = os.path.abspath(args.out)
    if os.path.exists(out) and not args.overwrite:
        raise InputError(f"{out}: already exists (pass --overwrite to replace it)")
    num_proc = args.num_proc if args.num_proc is not None else min(4, os.cpu_count() or 1)
    ratios = args.ratios
    start = time.perf_counter()
    if args.dataset == "acdc-ssl4mis":
        if ratios is not None:
            raise InputError("--ratios: acdc-ssl4mis uses its own train/val/test lists")
        dsdict = prepare_acdc_ssl4mis(args.source, keep_rv=args.keep_rv, num_proc=num_proc)
    elif args.dataset == "acdc":
        dsdict = prepare_acdc(args.source, keep_rv=args.keep_rv, split_seed=args.split_seed,
                              ratios=ratios or (0.7, 0.1, 0.2), num_proc=num_proc)
    elif args.dataset == "sunnybrook":
        dsdict = prepare_sunnybrook(args.source, split_seed=args.split_seed, ratios=ratios, num_proc=num_proc)
    elif args.dataset == "myops2020":
        from .myops2020 import DEFAULT_RATIOS, SEQUENCES

        dsdict = prepare_myops2020(args.source, sequences=args.sequences or tuple(SEQUENCES), keep_rv=args.keep_rv,
                                   split_seed=args.split_seed, ratios=ratios or DEFAULT_RATIOS, num_proc=num_proc)
    elif args.dataset == "emidec":
        if ratios is not None:
            raise InputError("--ratios: emidec's test split is its val/ folder; choose the validation size with --num-validation")
        from .emidec import NUM_VALIDATION

        dsdict = prepare_emidec(args.source, num_validation=NUM_VALIDATION if args.num_validation is None
                                else args.num_validation, split_seed=args.split_seed, num_proc=num_proc)
    else:
        fields = {}
        for item in args.field:
            role, sep, name = item.partition("=")
            if not sep or not name:
                raise InputError(f"--field {item!r}: expected ROLE=NAME")
            fields[role.strip()] = None if name.strip().lower() == "none" else name.strip()
        dsdict = prepare_lvquan(args.source, fields=fields, split_seed=args.split_seed,
                                ratios=ratios or (0.7, 0.1, 0.2), num_proc=num_proc)
    card = dataset_card(dsdict, args.dataset)
    path = save_dataset(dsdict, out, overwrite=args.overwrite, card=card)
    elapsed = time.perf_counter() - start
    print(f"{args.dataset}: wrote {path} in {elapsed:.1f} s")
    for split, c in split_counts(dsdict).items():
        print(f"  {split:<10} {c['patients']:>4} patients {c['slices']:>6} slices "
              f"({c['with_lv']} with LV, {c['myocardium_annotated']} with myocardium annotated)")
        if len(c["by_source"]) > 1:
            print("             " + ", ".join(f"{source}: {n}" for source, n in c["by_source"].items()))
    if args.push_to_hub:
        from .card import push_dataset

        url = push_dataset(dsdict, args.push_to_hub, card=card, private=args.private or None)
        print(f"pushed to {url}")
    return 0
