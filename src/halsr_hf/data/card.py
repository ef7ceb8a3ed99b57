"""A converted dataset on disk and on the Hub: its card (README.md), atomic saving, loading one
split back (training and evaluation), and the upload."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import datasets
from huggingface_hub import DatasetCard, DatasetCardData, HfApi, constants
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

from ..atomic import atomic_folder
from ..errors import InputError
from .schema import label_names_from_info

#: per source: (pretty name, license id, license text, provenance)
SOURCES = {
    "acdc-ssl4mis": (
        "ACDC (SSL4MIS HDF5 layout)", "cc-by-nc-sa-4.0",
        "ACDC data is distributed for research under CC BY-NC-SA 4.0 (non-commercial). Models trained on "
        "it inherit the non-commercial condition.",
        "The 100 ACDC training patients (Bernard et al. 2018), preprocessed into HDF5 the way the SSL4MIS "
        "code base does it (volumes for validation/test patients, 2D slice files for training patients). "
        "Splits are the layout's own `train.list`/`val.list`/`test.list` (70/10/20 patients). Intensities "
        "are per-volume min-max [0, 1]. **Voxel spacing was dropped by that preprocessing: `pixel_spacing` "
        "and `slice_thickness` are null; report distances on this set in pixels.** `group` comes from the "
        "patient number (the training set is ordered DCM, HCM, MINF, NOR, RV, 20 patients each); height "
        "and weight are null. frame01 = ED, frame02 = ES.",
    ),
    "acdc": (
        "ACDC (original NIfTI release)", "cc-by-nc-sa-4.0",
        "ACDC data is distributed for research under CC BY-NC-SA 4.0 (non-commercial). Models trained on "
        "it inherit the non-commercial condition.",
        "ACDC (Bernard et al. 2018) in its original release layout: ED and ES frames from `Info.cfg`, "
        "slices `data[:, :, k].T` of the NIfTI volumes, spacing from the NIfTI header, group/height/weight "
        "from `Info.cfg`. Seeded patient-level split.",
    ),
    "sunnybrook": (
        "Sunnybrook Cardiac Data", "cc0-1.0", "Sunnybrook Cardiac Data is released under CC0 1.0 (public domain).",
        "Sunnybrook Cardiac Data (Radau et al. 2009), DICOM slices with manual endocardium (i-contour) "
        "and epicardium (o-contour) polygons rasterised to masks. Only contoured slices are included. "
        "Endocardium-only slices have `myocardium_annotated = false`, as has every slice of SCD0000501 "
        "(SC-HF-I-6), whose epicardium contours are shifted (its myocardium label is kept as drawn, its "
        "`roi` comes from the cavity). `phase` is the cine frame (`frameFF`); `slice_index`/`num_slices` "
        "count the annotated slices of that frame. Image values are the DICOM values (RescaleSlope/"
        "Intercept applied) as float32. Default split: every patient in `test` (a cross-dataset test set).",
    ),
    "lvquan": (
        "LVQuan18/19", "other",
        "LVQuan data is distributed by the challenge organisers for research; see https://lvquan19.github.io/ "
        "for its terms.",
        "LVQuan (Xue et al. 2018; LVQuan19 challenge) MATLAB files: one mid-ventricular short-axis slice "
        "per cine frame (20 per subject), endocardium/epicardium masks, pixel spacing from the file "
        "(times `ratio_resize_inverse` for LVQuan18's resized 80x80 images). Seeded patient-level split.",
    ),
    "myops2020": (
        "MyoPS 2020 (cine bSSFP + LGE)", "other",
        "MyoPS 2020 data is distributed for research use under the challenge's terms (no redistribution "
        "outside them); cite Zhuang, IEEE TPAMI 2019, and Li et al., Medical Image Analysis 2023. Check those "
        "terms before publishing this dataset or models trained on it.",
        "The 45 training patients of the MyoPS 2020 challenge (myocardial pathology segmentation combining "
        "multi-sequence CMR; patients after myocardial infarction), as committed in the public GitHub "
        "repository `Tengjia-Kang/MyoPS`: a cine bSSFP frame (`C0`) and a late gadolinium enhancement "
        "(`LGE`) volume per patient, registered to one label volume (about 480x480 pixels at 0.73-0.76 mm, "
        "2-6 slices 12-23 mm apart; zero outside a body region). One row per slice per sequence: `source` "
        "is `myops2020-cine` (C0) or `myops2020-lge` (LGE), both rows of a slice share the label. Slices are "
        "read as the halsr-hf pipeline reads a NIfTI (`image_io.read_nifti_file`: `data[:, :, k].T`, no "
        "reorientation), intensities are the int16 values as float32, `pixel_spacing` and `slice_thickness` "
        "(distance between slice centres) come from the header. Labels: 500 LV cavity -> lv_cavity; 200 "
        "normal myocardium, 1220 oedema, 2221 scar -> myocardium; 600 RV cavity -> background (rv_cavity with "
        "`--keep-rv`). `phase` is `unknown` (one cine frame, not said which). Every slice is labelled: "
        "complete stacks. No official split: a seeded patient-level split (default 31/6/8 patients; both "
        "sequences of a patient in the same split), recorded below.",
    ),
    "emidec": (
        "EMIDEC (LGE, PNG copy)", "other",
        "EMIDEC data is distributed for research use under the challenge's terms; cite Lalande et al., Data "
        "2020. Check those terms before publishing this dataset or models trained on it.",
        "The 100 training patients of the EMIDEC challenge (late gadolinium enhancement short-axis MRI, "
        "University Hospital of Dijon; Lalande et al. 2020), as the 8-bit 256x256 PNG copy committed in the "
        "public GitHub repository `irehmanar/LV_Segmentation_MRI_Dataset_EMIDEC`. **Pixel spacing was lost "
        "in that conversion: `pixel_spacing` and `slice_thickness` are null; report distances in pixels.** "
        "Labels: 1 LV cavity -> lv_cavity; 2 normal myocardium, 3 infarct, 4 microvascular obstruction -> "
        "myocardium. `source` is `emidec-lge`, `phase` `unknown`; the slices of a patient form one stack "
        "(`slice_index` from the file name); `group` is NOR (`Case_N`) or MINF (`Case_P`). Splits by patient: "
        "the copy's `val/` folder is `test`, a seeded draw of 10 patients of its `train/` folder is "
        "`validation`, the rest `train`.",
    ),
}

SCHEMA_TABLE = """| column | type | meaning |
|---|---|---|
| `image` | `Image()`: float32 TIFF (mode F, LZW, lossless) | the slice, source intensities as they are (bit-exact) |
| `label` | `Image()`: uint8 PNG (mode L) | {labels} |
| `patient_id` | string | patient id of the source |
| `source` | string | `acdc-ssl4mis` / `acdc` / `sunnybrook` / `lvquan` / `myops2020-cine` / `myops2020-lge` / `emidec-lge` |
| `phase` | string | `ED`, `ES`, `frameFF` or `unknown` |
| `slice_index` | int32 | 0-based position of the slice in its stack |
| `num_slices` | int32 | slices in that stack |
| `pixel_spacing` | [float64, float64] or null | (row, col) in mm; null when the source lost it |
| `slice_thickness` | float64 or null | mm; null when unknown |
| `roi` | [int32] x 4 or null | LV box `[x_min, y_min, x_max, y_max]`, inclusive pixel indices of labels 1-2; null without LV |
| `has_lv` | bool | the label contains LV cavity or myocardium |
| `myocardium_annotated` | bool | false: do not train or score myocardium on this slice |
| `group` | string or null | diagnosis group: ACDC (NOR, MINF, DCM, HCM, RV); EMIDEC (NOR, MINF) |
| `height`, `weight` | float32 or null | ACDC height (cm) and weight (kg) |
"""

USAGE = """```python
from datasets import load_from_disk  # or load_dataset("REPO_ID") for the Hub copy

ds = load_from_disk("PATH")["{split}"].with_format("numpy")
row = ds[0]
row["image"]  # float32 (H, W), bit-exact source intensities
row["label"]  # uint8 (H, W), {labels}
```
With `with_format("torch")`, `datasets` adds a channel axis: float32 / uint8 tensors of shape (1, H, W).
In numpy/torch format a null float (`slice_thickness`, `height`, `weight`) reads as nan, a null list
(`pixel_spacing`, `roi`) as None.
Slice sizes differ within a split (crop/resize before batching)."""


def split_counts(dsdict) -> dict:
    """``{split: {"slices", "patients", "with_lv", "myocardium_annotated", "by_source": {source: slices}}}``."""
    counts = {}
    for split, ds in dsdict.items():
        sources = list(ds["source"]) if "source" in ds.column_names else []
        counts[split] = {
            "patients": len(set(ds["patient_id"])), "slices": len(ds),
            "with_lv": int(sum(ds["has_lv"])), "myocardium_annotated": int(sum(ds["myocardium_annotated"])),
            "by_source": {source: sources.count(source) for source in sorted(set(sources))},
        }
    return counts


def dataset_card(dsdict, source: str | None = None) -> str:
    """README.md text: the metadata (``DatasetCardData``: license, task, tags, name, size) and the
    schema, provenance, license, citation and per-split counts."""
    first = next(iter(dsdict.values()))
    # the converter's name (dataset_name "halsr-<source>"), else the rows' source (MyoPS rows say
    # myops2020-cine or myops2020-lge, the converter myops2020)
    converter = (first.info.dataset_name or "").removeprefix("halsr-")
    source = source or (converter if converter in SOURCES else first.select_columns(["source"])[0]["source"])
    pretty, license_id, license_text, provenance = SOURCES.get(
        source, (source, first.info.license or "other", first.info.license or "", first.info.description or ""))
    names = label_names_from_info(first.info)
    labels = ", ".join(f"{i} {n}" for i, n in enumerate(names))
    counts = split_counts(dsdict)
    total = sum(c["slices"] for c in counts.values())
    size = "n<1K" if total < 1000 else "1K<n<10K" if total < 10000 else "10K<n<100K"
    rows = "\n".join(
        f"| {split} | {c['patients']} | {c['slices']} | {c['with_lv']} | {c['myocardium_annotated']} |"
        for split, c in counts.items()
    )
    metadata = DatasetCardData(
        license=license_id, task_categories=["image-segmentation"],
        tags=["medical-imaging", "cardiac-mri", "left-ventricle", "halsr-hf"],
        pretty_name=f"{pretty} - HALSR-Net canonical LV slices", size_categories=[size],
    )
    how = [line for line in (first.info.description or "").splitlines() if line.startswith("Patient-level split:")]
    patients = "\n".join(
        f"- {split} ({len(ids)}): {', '.join(ids)}"
        for split, ids in ((split, sorted(set(ds["patient_id"]))) for split, ds in dsdict.items())
    )
    body = f"""# {pretty}: 2D short-axis slices in the halsr-hf canonical schema

Converted with `halsr-hf prepare {source}` for the HALSR-Net left-ventricle segmentation models.
One row is one 2D short-axis slice. Labels: {labels}.

## Splits

Always by patient: no patient is in two splits, and the stacks of a patient (ED and ES, or its MRI sequences)
stay together.

| split | patients | slices | slices with LV | slices with myocardium annotated |
|---|---|---|---|---|
{rows}

{how[0] + chr(10) + chr(10) if how else ""}Patients of each split:

{patients}

## Schema

{SCHEMA_TABLE.format(labels=labels)}
Label names are also stored in the dataset info (`label_names:` line of the description).

{USAGE.format(split=next(iter(counts)), labels=labels)}

## Provenance

{provenance}

Homepage: {first.info.homepage or 'n/a'}

## License

{license_text}

## Citation

```bibtex
{first.info.citation.strip()}
```
"""
    return str(DatasetCard(f"---\n{metadata.to_yaml()}\n---\n\n{body}"))


def save_dataset(dsdict, out, *, overwrite: bool = False, card: str | None = None) -> Path:
    """``save_to_disk`` + README.md into a temporary folder beside ``out``, then rename it to
    ``out``: nothing appears at ``out`` unless everything was written. An existing ``out`` is
    refused (:class:`InputError`) unless ``overwrite``. ``card``: README text (default
    :func:`dataset_card`)."""
    out = Path(out).absolute()
    if out.exists() and not overwrite:
        raise InputError(f"{out}: already exists (pass --overwrite / overwrite=True to replace it)")
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    text = dataset_card(dsdict) if card is None else card
    with atomic_folder(out) as tmp:
        dsdict.save_to_disk(str(tmp))
        (tmp / "README.md").write_text(text)
    return out


def load_split(dataset_dir, split: str, *, dataset_name: str | None = None, config_name: str | None = None):
    """The ``datasets.Dataset`` of ``split``: from a ``save_to_disk`` folder (``dataset_dir``), else
    from the Hub (``dataset_name``, ``config_name``). The one loader of ``halsr-hf train``,
    ``train-roi`` and ``evaluate``.

    A folder may be a ``DatasetDict`` (picks ``split``), hold ``split/`` as a dataset, or be a plain
    ``Dataset`` (with a ``split`` column it is filtered on it; without, it is used as a whole)."""
    if dataset_dir is None:
        if dataset_name is None:
            raise InputError("no dataset: give --dataset-dir (a `halsr-hf prepare` folder) or --dataset-name (a Hub dataset)")
        return datasets.load_dataset(dataset_name, config_name, split=split)
    path = Path(dataset_dir)
    if not path.exists():
        raise InputError(f"--dataset-dir {path}: no such folder")
    if not path.is_dir():
        raise InputError(f"--dataset-dir {path}: not a folder (expected a datasets.save_to_disk folder)")
    try:
        loaded = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError, OSError) as error:
        sub = path / split
        if sub.is_dir():
            try:
                return datasets.load_from_disk(str(sub))
            except (FileNotFoundError, ValueError, OSError):
                pass
        raise InputError(
            f"--dataset-dir {path}: not a datasets.save_to_disk folder ({type(error).__name__}: {error}); "
            "write one with `halsr-hf prepare`"
        ) from None
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise InputError(f"--dataset-dir {path}: no split {split!r}; available: {sorted(loaded)}")
        return loaded[split]
    if "split" in loaded.column_names:
        values = set(loaded.unique("split"))
        if split not in values:
            raise InputError(f"--dataset-dir {path}: no rows with split == {split!r}; available: {sorted(map(str, values))}")
        return loaded.filter(lambda s: s == split, input_columns="split")
    return loaded


def upload_dataset(dsdict, repo_id: str, card: str | None, *, token=None, private: bool | None = None,
                   commit_message: str | None = None) -> None:
    """Upload to an existing Hub dataset repository: the card (README.md) first, then
    ``DatasetDict.push_to_hub``, which adds its ``dataset_info``/``configs`` to the metadata of the
    card it finds (pushed the other way round, the card would overwrite them). Used by ``halsr-hf
    prepare --push-to-hub`` (:func:`push_dataset`) and ``halsr-hf push-to-hub dataset``."""
    message = commit_message or "Upload dataset with halsr-hf"
    if card is not None:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "README.md"
            path.write_text(card)
            HfApi(token=token).upload_file(path_or_fileobj=str(path), path_in_repo="README.md", repo_id=repo_id,
                                           repo_type="dataset", commit_message=f"{message}: dataset card")
    dsdict.push_to_hub(repo_id, private=private, token=token, commit_message=message)


def push_dataset(dsdict, repo_id: str, *, card: str | None = None, private: bool | None = None, token=None) -> str:
    """Create the Hub dataset repository if needed and :func:`upload_dataset` (card: default
    :func:`dataset_card`). Offline (``HF_HUB_OFFLINE=1``) or without a connection:
    :class:`InputError` at once."""
    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise InputError(f"--push-to-hub {repo_id}: the Hub is offline (HF_HUB_OFFLINE=1); unset it to upload")
    text = dataset_card(dsdict) if card is None else card
    try:
        HfApi(token=token).create_repo(repo_id, repo_type="dataset", private=bool(private), exist_ok=True)
        upload_dataset(dsdict, repo_id, text, token=token, private=private)
    except OfflineModeIsEnabled as error:
        raise InputError(f"--push-to-hub {repo_id}: the Hub is offline ({error})") from None
    except (HfHubHTTPError, OSError, ConnectionError) as error:
        raise InputError(f"--push-to-hub {repo_id}: upload failed ({type(error).__name__}: {error})") from None
    return f"https://huggingface.co/datasets/{repo_id}"
