"""``halsr-hf evaluate`` tests: every output on a tiny ACDC split (2 patients, ED + ES) plus a
slice-only dataset with mm spacing, a tiny random model and a baseline; numbers checked against an
independent numpy computation from the saved masks; a perfect "model" (returns the ground truth)
gives Dice 1, distances 0, EF bias 0, ROI RMSE 0."""

import csv
import json
import math

import h5py
import numpy as np
import pytest
from PIL import Image

from halsr_hf import CardiacLVSegmentationPipeline, HalsrImageProcessor, InputError
from halsr_hf.cli import main as cli_main
from halsr_hf.data.schema import acdc_to_canonical, bbox_from_label
from halsr_hf.evaluation import agreement, box_iou, build_groups, corner_rmse, describe
from halsr_hf.evaluation import run as eval_run

from .conftest import tiny_models

PATIENTS = ["patient001", "patient011"]  # ACDC test-list patients, 10 and 9 slices (001 has an empty slice)
METRIC_KEYS = [f"{m}_{c}" for m in ("dice", "hd95", "assd", "hd") for c in ("lv_cavity", "myocardium")]
DICE_KEYS = [f"dice_{c}" for c in ("lv_cavity", "myocardium")]


# ---- fixtures: tiny models and datasets ----------------------------------------------------------


@pytest.fixture(scope="module")
def model_folders(tmp_path_factory):
    model, roi = tiny_models(0)
    processor = HalsrImageProcessor(size=64, roi_size=64)
    main = tmp_path_factory.mktemp("tiny-model")
    CardiacLVSegmentationPipeline(model=model, image_processor=processor, roi_model=roi).save_pretrained(main)
    baseline_model, _ = tiny_models(1)  # a segmentation model without ROI stage
    baseline = tmp_path_factory.mktemp("tiny-baseline")
    CardiacLVSegmentationPipeline(model=baseline_model, image_processor=processor).save_pretrained(baseline)
    return main, baseline


def _rows_to_dataset(rows, split):
    """Rows -> DatasetDict with the data module's features when it is there, else plain arrays."""
    from datasets import Dataset, DatasetDict

    try:
        from halsr_hf.data.schema import build_dataset_dict, make_row
    except ImportError:
        columns = {k: [r[k] for r in rows] for k in rows[0]}
        for key in ("image", "label"):
            columns[key] = [a.tolist() for a in columns[key]]
        return DatasetDict({split: Dataset.from_dict(columns)})
    made = [make_row(r["image"], r["label"], name=f"{r['patient_id']} {r['phase']} {r['slice_index']}",
                     **{k: v for k, v in r.items() if k not in ("image", "label", "roi", "has_lv")}) for r in rows]
    return build_dataset_dict({split: made}, source=rows[0]["source"])


def _row(image, label, **meta):
    return {"image": image.astype(np.float32), "label": label.astype(np.uint8), "roi": bbox_from_label(label),
            "has_lv": bool(label.any()), **meta}


def crop_box(labels, margin=24):
    """The LV's bounding box over all the given stacks plus a margin (small slices keep the test fast)."""
    _, ys, xs = np.nonzero(np.concatenate(labels))
    return slice(max(ys.min() - margin, 0), ys.max() + margin), slice(max(xs.min() - margin, 0), xs.max() + margin)


def read_acdc(acdc_dir, name):
    with h5py.File(acdc_dir / "data" / f"{name}.h5", "r") as f:
        return f["image"][()], acdc_to_canonical(f["label"][()])


def acdc_rows(acdc_dir, patients):
    rows = []
    for pid in patients:
        stacks = {phase: read_acdc(acdc_dir, f"{pid}_frame{frame}") for frame, phase in (("01", "ED"), ("02", "ES"))}
        ys, xs = crop_box([label for _, label in stacks.values()])  # one box: ED and ES keep one shape
        for phase, (image, label) in stacks.items():
            image, label = image[:, ys, xs], label[:, ys, xs]
            for k in range(image.shape[0]):
                rows.append(_row(image[k], label[k], patient_id=pid, source="acdc-ssl4mis", phase=phase, slice_index=k,
                                 num_slices=image.shape[0], pixel_spacing=None, slice_thickness=None,
                                 myocardium_annotated=True, group="DCM"))
    return rows


def slice_only_rows(acdc_dir):
    """A Sunnybrook-like set: isolated slices of one stack, real mm spacing, two of them
    cavity-only (myocardium not annotated). Built from ACDC slices (patient 013)."""
    image, label = read_acdc(acdc_dir, "patient013_frame01")
    ys, xs = crop_box([label])
    image, label = image[:, ys, xs], label[:, ys, xs]
    rows = []
    for k, annotated in ((2, True), (4, True), (5, False), (6, False)):
        lab = label[k].copy()
        if not annotated:
            lab[lab == 2] = 0
        rows.append(_row(image[k], lab, patient_id="SCD-fake", source="sunnybrook-like", phase="unknown", slice_index=k,
                         num_slices=image.shape[0], pixel_spacing=[1.3, 1.25], slice_thickness=8.0,
                         myocardium_annotated=annotated, group=None))
    return rows


@pytest.fixture(scope="module")
def datasets_dirs(acdc_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("eval-data")
    main_rows = acdc_rows(acdc_dir, PATIENTS)
    _rows_to_dataset(main_rows, "test").save_to_disk(str(root / "acdc"))
    extra_rows = slice_only_rows(acdc_dir)
    _rows_to_dataset(extra_rows, "test").save_to_disk(str(root / "sb"))
    return root / "acdc", root / "sb", main_rows, extra_rows


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def num(value):
    return math.nan if value == "" else float(value)


def check_stats(block, keys=METRIC_KEYS):
    assert set(block) == set(keys)
    for key, stats in block.items():
        assert set(stats) == {"mean", "sd", "median", "n"}, key
        assert isinstance(stats["n"], int)
        for k in ("mean", "sd", "median"):
            assert stats[k] is None and stats["n"] == 0 if stats[k] is None else isinstance(stats[k], float)


def check_schema(s, with_baseline=False):
    assert isinstance(s["model"], str)
    assert set(s["dataset"]) == {"name", "hf_id", "split", "source"}
    assert s["distance_unit"] in ("px", "mm")
    # without a spacing no 3D distance: a slice step would count as one pixel
    check_stats(s["volume_metrics"], METRIC_KEYS if s["distance_unit"] == "mm" else DICE_KEYS)
    check_stats(s["slice_metrics"])
    if s["roi"] is not None:
        assert set(s["roi"]) == {"box", "rmse", "rmse_sd", "unit", "outlier_rate_percent", "outlier_definition",
                                 "iou_mean", "in_crop_percent", "in_crop_definition", "final_crop_iou_mean",
                                 "final_crop_in_crop_percent", "final_crop_definition", "n"}
        assert 0.0 <= s["roi"]["final_crop_iou_mean"] <= 1.0 and 0.0 <= s["roi"]["final_crop_in_crop_percent"] <= 100.0
        if s["roi"]["iou_mean"] is not None:  # the pipeline reported the ROI stage's own box
            assert 0.0 <= s["roi"]["iou_mean"] <= 1.0 and 0.0 <= s["roi"]["in_crop_percent"] <= 100.0
        assert s["roi"]["unit"] in ("px", "mm") and isinstance(s["roi"]["outlier_definition"], str)
    assert set(s["clinical"]) == {f"{q}_{k}" for q in ("ef", "edv", "esv") for k in ("bias", "mae", "r")} | {"unit_volume"}
    assert s["clinical"]["unit_volume"] in ("ml", "voxels")
    for extra in s["extra_evaluations"]:
        assert {"dataset", "distance_unit", "slice_metrics", "roi"} <= set(extra)
        check_stats(extra["slice_metrics"])
    assert ("baseline" in s) == with_baseline
    allowed = {"model", "dataset", "distance_unit", "volume_metrics", "slice_metrics", "roi", "clinical",
               "extra_evaluations", "baseline"}
    assert set(s) <= allowed


# ---- the full run --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def full_run(model_folders, datasets_dirs, tmp_path_factory):
    main, baseline = model_folders
    acdc, sb, _, _ = datasets_dirs
    out = tmp_path_factory.mktemp("runs") / "R"
    code = cli_main(["evaluate", "--model", str(main), "--dataset-dir", str(acdc), "--split", "test",
                     "--extra-dataset-dir", str(sb), "--extra-split", "test", "--baseline", str(baseline),
                     "--out-dir", str(out), "--save-predictions", "--quiet"])
    assert code == 0
    return out


def test_every_output_file_and_row_counts(full_run, datasets_dirs):
    _, _, main_rows, extra_rows = datasets_dirs
    out = full_run
    expected = {"slices.csv", "volumes.csv", "roi.csv", "clinical.csv", "summary.md", "summary.json",
                "bland_altman_ef.png", "bland_altman_edv.png", "bland_altman_esv.png"}
    expected |= {f"boxplot_{m}.png" for m in ("dice", "iou", "hd", "hd95", "assd")}
    names = {p.name for p in out.iterdir()}
    assert expected <= names
    assert any(n.startswith("boxplot_dice_") for n in names)  # the extra dataset's boxplots
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".R.")]  # no temp folder left
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(png) as image:
            image.verify()
    slices = read_csv(out / "slices.csv")
    assert len(slices) == 2 * (len(main_rows) + len(extra_rows))  # main + baseline
    assert len({r["model"] for r in slices}) == 2 and len({r["dataset"] for r in slices}) == 2
    assert len(read_csv(out / "volumes.csv")) == 2 * 2 * len(PATIENTS)  # ED + ES, 2 models
    # every table names the models portably: the folders' names, not this machine's absolute paths
    for table in ("slices.csv", "volumes.csv", "roi.csv", "clinical.csv"):
        models = {r["model"] for r in read_csv(out / table)}
        assert models and all("/" not in m and m.startswith("tiny-") for m in models), (table, models)
    assert len(read_csv(out / "roi.csv")) == len(main_rows) + len(extra_rows)  # one ROI model
    assert len(read_csv(out / "clinical.csv")) == 2 * len(PATIENTS)


def test_summary_json_follows_the_contract(full_run, datasets_dirs, model_folders):
    s = json.loads((full_run / "summary.json").read_text())
    check_schema(s, with_baseline=True)
    check_schema(s["baseline"])
    # the folders' names, not this machine's absolute paths (the folders are outside the working directory)
    assert s["model"] == model_folders[0].name and s["baseline"]["model"] == model_folders[1].name
    assert s["dataset"]["split"] == "test" and s["distance_unit"] == "px" and s["clinical"]["unit_volume"] == "voxels"
    assert s["volume_metrics"]["dice_lv_cavity"]["n"] == 2 * len(PATIENTS)
    (extra,) = s["extra_evaluations"]
    assert extra["distance_unit"] == "mm" and extra["roi"]["unit"] == "mm"
    assert "volume_metrics" not in extra  # isolated slices: 2D only
    assert extra["slice_metrics"]["dice_myocardium"]["n"] <= 2  # two cavity-only slices not scored
    # the baseline used the main model's ROI stage, on the same slices; its final boxes differ
    # (the second look re-crops around each segmentation network's own prediction)
    assert s["baseline"]["roi"]["n"] == s["roi"]["n"]
    md = (full_run / "summary.md").read_text()
    assert "baseline: mean ± sd" in md and "Cross-dataset" in md
    assert "Per volume (3D)" in md and "ROI stage (Table 3)" in md and "Clinical agreement" in md
    assert "no 3D distance is computed" in md


def test_numbers_match_an_independent_computation(full_run, datasets_dirs):
    """Dice, EF and ROI corners recomputed with plain numpy from the saved predictions."""
    _, _, main_rows, _ = datasets_dirs
    out = full_run
    (npz_path,) = [p for p in (out / "predictions").glob("main_*test.npz") if "sunnybrook" not in p.name and "sb" not in p.name]
    preds = np.load(npz_path)
    ref = {(pid, ph): np.stack([r["label"] for r in main_rows if r["patient_id"] == pid and r["phase"] == ph])
           for pid in PATIENTS for ph in ("ED", "ES")}
    volumes = [r for r in read_csv(out / "volumes.csv") if r["model"] != json.loads((out / "summary.json").read_text())["baseline"]["model"]]
    checked = 0
    for row in volumes:
        pred = preds[f"{row['patient_id']}_{row['phase']}"]
        gt = ref[(row["patient_id"], row["phase"])]
        for cid, name in ((1, "lv_cavity"), (2, "myocardium")):
            a, b = pred == cid, gt == cid
            if a.sum() + b.sum() == 0:
                assert math.isnan(num(row[f"dice_{name}"]))
                continue
            assert num(row[f"dice_{name}"]) == pytest.approx(2 * (a & b).sum() / (a.sum() + b.sum()), abs=1e-9)
            checked += 1
    assert checked >= 4
    # EF from voxel counts
    clinical = [r for r in read_csv(out / "clinical.csv") if r["model"] == volumes[0]["model"]]
    for row in clinical:
        ed, es = preds[f"{row['patient_id']}_ED"], preds[f"{row['patient_id']}_ES"]
        edv, esv = (ed == 1).sum(), (es == 1).sum()
        assert num(row["edv_pred"]) == edv and num(row["esv_pred"]) == esv
        if edv:
            assert num(row["ef_pred"]) == pytest.approx(100 * (edv - esv) / edv)
        gt_ed, gt_es = (ref[(row["patient_id"], "ED")] == 1).sum(), (ref[(row["patient_id"], "ES")] == 1).sum()
        assert num(row["ef_ref"]) == pytest.approx(100 * (gt_ed - gt_es) / gt_ed)
    # ROI: reference corners from the label; the final crop's box IoU recomputed from the saved corners
    roi_rows = [r for r in read_csv(out / "roi.csv") if r["dataset"] == volumes[0]["dataset"]]
    final_ious, stage_ious = [], []
    for r in roi_rows:
        lab = ref[(r["patient_id"], r["phase"])][int(r["slice_index"])]
        ys, xs = np.nonzero(lab)
        if ys.size == 0:
            assert r["scored"] == "False"
            continue
        assert [num(r[k]) for k in ("ref_x_min", "ref_y_min", "ref_x_max", "ref_y_max")] == [xs.min(), ys.min(), xs.max(), ys.max()]
        if r["scored"] == "True":
            final = [num(r[k]) for k in ("final_x_min", "final_y_min", "final_x_max", "final_y_max")]
            final_ious.append(0.0 if math.isnan(final[0]) else box_iou(final, [xs.min(), ys.min(), xs.max(), ys.max()]))
        # the pipeline reports the ROI stage's own box (roi_stage_box): its IoU is scored from those corners
        assert r["stage_reported"] == "True"
        if r["scored"] == "True":
            stage = [num(r[k]) for k in ("stage_x_min", "stage_y_min", "stage_x_max", "stage_y_max")]
            stage_ious.append(0.0 if math.isnan(stage[0]) else box_iou(stage, [xs.min(), ys.min(), xs.max(), ys.max()]))
    s = json.loads((out / "summary.json").read_text())
    assert s["roi"]["final_crop_iou_mean"] == pytest.approx(np.mean(final_ious))
    assert s["roi"]["iou_mean"] == pytest.approx(np.mean(stage_ious)) and s["roi"]["rmse"] is not None


class PerfectPipe:
    """A stand-in for the pipeline that returns the reference label of each slice it is given."""

    roi_model = object()
    image_processor = HalsrImageProcessor()  # its crop_margin defines the ROI "in crop" check

    def __init__(self, rows):
        self.table = {r["image"].astype(np.float32).tobytes(): r["label"] for r in rows}

    def stage_box(self, box):
        """The ROI stage's own box (here: the reference box)."""
        return box

    def _slice(self, image):
        label = self.table[np.asarray(image, dtype=np.float32).tobytes()]
        box = bbox_from_label(label)
        return label, {"roi": box, "roi_stage_box": None if box is None else self.stage_box(box),
                       "lv_found": box is not None, "lv_probability": 1.0 if box is not None else 0.0}

    def __call__(self, inputs, batch_size=16, use_roi=True, tta=False, second_look=2, consensus=True):
        out = []
        for item in inputs:
            if item.ndim == 3:
                pairs = [self._slice(s) for s in item]
                out.append({"label_map": np.stack([p[0] for p in pairs]), "slices": [p[1] for p in pairs]})
            else:
                label, info = self._slice(item)
                out.append({"label_map": label, **info})
        return out


def test_perfect_prediction_gives_dice_1_and_ef_bias_0(datasets_dirs, tmp_path, monkeypatch):
    acdc, sb, main_rows, extra_rows = datasets_dirs
    pipe = PerfectPipe(main_rows + extra_rows)
    monkeypatch.setattr(eval_run, "_load", lambda model, roi_model, device: (pipe, "perfect"))
    out = tmp_path / "perfect"
    assert eval_run.main(["--dataset-dir", str(acdc), "--extra-dataset-dir", str(sb), "--out-dir", str(out), "--quiet", "--no-plots"]) == 0
    s = json.loads((out / "summary.json").read_text())
    check_schema(s)
    for block in (s["volume_metrics"], s["slice_metrics"], s["extra_evaluations"][0]["slice_metrics"]):
        for c in ("lv_cavity", "myocardium"):
            assert block[f"dice_{c}"]["mean"] == 1.0 and block[f"dice_{c}"]["sd"] == 0.0
            if block is not s["volume_metrics"]:  # ACDC here has no spacing: no 3D distance
                assert block[f"hd_{c}"]["mean"] == 0.0 and block[f"hd95_{c}"]["median"] == 0.0
    clinical = s["clinical"]
    assert clinical["ef_bias"] == 0.0 and clinical["ef_mae"] == 0.0 and clinical["edv_bias"] == 0.0 and clinical["esv_mae"] == 0.0
    assert s["roi"]["rmse"] == 0.0 and s["roi"]["outlier_rate_percent"] == 0.0
    assert s["roi"]["iou_mean"] == s["roi"]["final_crop_iou_mean"] == 1.0
    assert s["roi"]["in_crop_percent"] == s["roi"]["final_crop_in_crop_percent"] == 100.0
    assert s["extra_evaluations"][0]["roi"]["rmse"] == 0.0
    # slices with neither class in reference nor prediction are not scored (default --both-empty nan)
    n_lv = sum(bool((r["label"] == 1).any()) for r in main_rows)
    assert s["slice_metrics"]["dice_lv_cavity"]["n"] == n_lv < len(main_rows)


class StageBoxElsewherePipe(PerfectPipe):
    """Perfect label maps and final crops, but the ROI stage's own box lies beside the LV (IoU 0),
    as when the second look recovers from a wrong ROI box."""

    def stage_box(self, box):
        width = box[2] - box[0] + 1
        return [box[0] + width + 3, box[1], box[2] + width + 3, box[3]]


def test_roi_stage_box_and_final_crop_are_scored_separately(datasets_dirs, tmp_path, monkeypatch):
    """Issue 20: ROI IoU and the in-crop rate were computed on the final crop's box (the predicted
    LV after a second look), so they partly measured the segmentation network."""
    acdc, _, main_rows, _ = datasets_dirs
    monkeypatch.setattr(eval_run, "_load", lambda model, roi_model, device: (StageBoxElsewherePipe(main_rows), "stub"))
    out = tmp_path / "stage"
    assert eval_run.main(["--dataset-dir", str(acdc), "--out-dir", str(out), "--quiet", "--no-plots"]) == 0
    roi = json.loads((out / "summary.json").read_text())["roi"]
    assert roi["iou_mean"] == 0.0 and roi["outlier_rate_percent"] == 100.0 and roi["rmse"] > 5
    assert roi["in_crop_percent"] < 100.0  # the crop made from a box beside the LV does not hold it
    assert roi["final_crop_iou_mean"] == 1.0 and roi["final_crop_in_crop_percent"] == 100.0
    rows = [r for r in read_csv(out / "roi.csv") if r["scored"] == "True"]
    assert rows and all(num(r["iou"]) == 0.0 and num(r["final_iou"]) == 1.0 and r["outlier"] == "True" for r in rows)
    assert all(num(r["stage_x_min"]) > num(r["final_x_max"]) for r in rows)
    md = (out / "summary.md").read_text()
    assert "The final crop (after the second look" in md and "| 0.000 |" in md


def test_refuses_a_non_empty_out_dir_then_overwrites_in_no_roi_mode(model_folders, datasets_dirs, tmp_path, capsys):
    acdc = datasets_dirs[0]
    out = tmp_path / "R"
    out.mkdir()
    (out / "old.txt").write_text("keep me")
    args = ["evaluate", "--model", str(model_folders[0]), "--dataset-dir", str(acdc), "--out-dir", str(out),
            "--limit", "2", "--quiet", "--no-plots"]
    assert cli_main(args) == 2
    assert "not empty" in capsys.readouterr().err and (out / "old.txt").exists()
    assert cli_main(args + ["--overwrite", "--no-roi"]) == 0
    assert not (out / "old.txt").exists()
    s = json.loads((out / "summary.json").read_text())
    assert s["roi"] is None and s["volume_metrics"]["dice_lv_cavity"]["n"] == 2
    assert read_csv(out / "roi.csv") == [] and "ROI stage not evaluated" in (out / "summary.md").read_text()
    assert len(read_csv(out / "clinical.csv")) == 1  # --limit 2: one patient, ED + ES
    assert not list(out.glob("*.png"))  # --no-plots


def test_bad_inputs_are_input_errors(datasets_dirs, tmp_path, capsys):
    acdc = datasets_dirs[0]
    assert cli_main(["evaluate", "--dataset-dir", str(tmp_path / "nope"), "--out-dir", str(tmp_path / "o")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert cli_main(["evaluate", "--dataset-dir", str(acdc), "--split", "validation", "--out-dir", str(tmp_path / "o")]) == 2
    assert "no split 'validation'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# ---- pieces --------------------------------------------------------------------------------------


def test_groups_from_plain_array_columns_and_completeness():
    from datasets import Dataset

    label = np.zeros((12, 10), dtype=np.uint8)
    label[3:7, 2:6] = 1
    rows = {"image": [np.ones((12, 10)).tolist()] * 4, "label": [label.tolist()] * 4,
            "patient_id": ["a", "a", "a", "b"], "phase": ["ED", "ED", "ED", "ED"], "slice_index": [2, 0, 1, 0],
            "num_slices": [3, 3, 3, 5]}
    groups = build_groups(Dataset.from_dict(rows))
    assert [g.key for g in groups] == ["a_ED", "b_ED"]
    assert [s.slice_index for s in groups[0].slices] == [0, 1, 2] and groups[0].complete
    assert not groups[1].complete  # 1 of 5 slices: scored in 2D only
    assert groups[0].slices[0].image.dtype == np.float32 and groups[0].spacing_3d is None
    # Sunnybrook groups hold only the contoured slices (num_slices counts those): 2D only
    sunnybrook = build_groups(Dataset.from_dict(dict(rows, source=["sunnybrook"] * 4)))
    assert not sunnybrook[0].complete
    with pytest.raises(InputError, match="missing column"):
        build_groups(Dataset.from_dict({"image": rows["image"], "label": rows["label"]}))
    bad = dict(rows, label=[(label * 3).tolist()] * 4)
    with pytest.raises(InputError, match="outside 0/1/2"):
        build_groups(Dataset.from_dict(bad))


def test_volume_distances_only_with_a_spacing(acdc_dir):
    """A 3D distance without the slice spacing counts a 10 mm slice step as one pixel: not computed."""
    from halsr_hf.metrics import segmentation_metrics

    _, label = read_acdc(acdc_dir, "patient001_frame01")
    pred = np.roll(label, 1, axis=2)
    without = segmentation_metrics(pred, label, distances=False)
    assert math.isnan(without["hd95_lv_cavity"]) and without["distance_unit"] is None
    assert without["dice_lv_cavity"] == segmentation_metrics(pred, label)["dice_lv_cavity"]
    with_spacing = segmentation_metrics(pred, label, spacing=(10.0, 1.5, 1.5))
    assert with_spacing["distance_unit"] == "mm" and with_spacing["hd95_lv_cavity"] == pytest.approx(1.5)


def test_model_label_is_the_same_on_every_machine(tmp_path, monkeypatch):
    from halsr_hf import default_model_dir

    assert eval_run.model_label(None) == eval_run.model_label(default_model_dir()) == "bundled:halsr_hf/default_model"
    assert eval_run.model_label("someone/halsr-net") == "someone/halsr-net"  # a Hub id
    (tmp_path / "runs" / "small").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert eval_run.model_label("runs/small") == "runs/small"
    assert eval_run.model_label(tmp_path / "runs" / "small") == "runs/small"  # inside the working directory
    monkeypatch.chdir(tmp_path / "runs")
    assert eval_run.model_label(tmp_path / "runs" / "small") == "small"
    outside = tmp_path.parent / f"{tmp_path.name}-elsewhere"
    outside.mkdir()
    assert eval_run.model_label(outside) == outside.name


def test_box_and_statistics_helpers():
    assert box_iou([0, 0, 9, 9], [0, 0, 9, 9]) == 1.0
    assert box_iou([0, 0, 9, 9], [5, 0, 14, 9]) == pytest.approx(50 / 150)
    assert box_iou([0, 0, 1, 1], [5, 5, 6, 6]) == 0.0
    # x errors scaled by the column spacing, y by the row spacing
    assert corner_rmse([1, 0, 1, 0], [0, 0, 0, 0], pixel_spacing=(2.0, 3.0)) == pytest.approx(math.sqrt((9 + 9) / 4))
    assert corner_rmse([0, 2, 0, 2], [0, 0, 0, 0], pixel_spacing=(2.0, 3.0)) == pytest.approx(math.sqrt((16 + 16) / 4))
    assert describe([1.0, float("nan"), 3.0, None]) == {"mean": 2.0, "sd": pytest.approx(math.sqrt(2)), "median": 2.0, "n": 2}
    assert describe([]) == {"mean": None, "sd": None, "median": None, "n": 0}
    a = agreement([50, 60, 40, 55], [52, 59, 45, 55])
    assert a["bias"] == pytest.approx(1.5) and a["mae"] == pytest.approx(2.0) and a["n"] == 4
    assert a["r"] == pytest.approx(np.corrcoef([50, 60, 40, 55], [52, 59, 45, 55])[0, 1])
    assert a["loa_high"] - a["bias"] == pytest.approx(1.96 * np.std([2, -1, 5, 0], ddof=1))


def test_scripts_are_the_cli_and_name_flags(tmp_path):
    """``python scripts/evaluate.py`` is ``halsr-hf evaluate``: its messages name CLI flags."""
    import subprocess
    import sys

    from .conftest import REPO_ROOT

    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    result = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "evaluate.py"), "--dataset-dir", str(tmp_path),
                             "--out-dir", str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "--overwrite" in result.stderr and "overwrite=True" not in result.stderr, result.stderr


def test_groups_keep_the_sequences_of_a_patient_apart():
    """MyoPS gives each patient a cine and an LGE stack, both phase 'unknown': grouped per source,
    each a complete volume, with keys that differ; a patient with one source keeps the plain key."""
    from datasets import Dataset

    label = np.zeros((12, 10), dtype=np.uint8)
    label[3:7, 2:6] = 1
    rows = {"image": [np.ones((12, 10)).tolist()] * 6, "label": [label.tolist()] * 6,
            "patient_id": ["a"] * 4 + ["b"] * 2, "phase": ["unknown"] * 6, "slice_index": [0, 0, 1, 1, 0, 1],
            "num_slices": [2] * 6, "source": ["cine", "lge", "cine", "lge", "lge", "lge"]}
    groups = build_groups(Dataset.from_dict(rows))
    assert [g.key for g in groups] == ["a_unknown_cine", "a_unknown_lge", "b_unknown"]
    assert [g.source for g in groups] == ["cine", "lge", "lge"] and all(g.complete for g in groups)


@pytest.fixture(scope="module")
def myops_eval_dir(myops_dir, tmp_path_factory):
    """One real MyoPS case (2 slices, cine + LGE) as a test split."""
    import os

    from halsr_hf.data import prepare_myops2020

    root = tmp_path_factory.mktemp("myops-eval")
    (root / "src").mkdir()
    os.symlink(myops_dir / "Case3011", root / "src" / "Case3011")
    prepare_myops2020(root / "src", ratios=(0.0, 0.0, 1.0), num_proc=1).save_to_disk(str(root / "myops"))
    return root / "myops"


def test_evaluate_one_source_of_a_multi_sequence_dataset(model_folders, myops_eval_dir, tmp_path, capsys):
    """--source scores one sequence of MyoPS alone, as 3D volumes in mm; without it both sequences are
    scored as separate stacks; an unknown source is an error naming those there are."""
    main, _ = model_folders
    common = ["evaluate", "--model", str(main), "--dataset-dir", str(myops_eval_dir), "--no-plots", "--quiet"]
    assert cli_main(common + ["--source", "myops2020-lge", "--out-dir", str(tmp_path / "lge")]) == 0
    slices, volumes = read_csv(tmp_path / "lge" / "slices.csv"), read_csv(tmp_path / "lge" / "volumes.csv")
    assert len(slices) == 2 and {r["source"] for r in slices} == {"myops2020-lge"}
    assert len(volumes) == 1 and volumes[0]["distance_unit"] == "mm" and volumes[0]["patient_id"] == "Case3011"
    assert float(volumes[0]["slice_thickness"]) == pytest.approx(23.0)
    s = json.loads((tmp_path / "lge" / "summary.json").read_text())
    assert s["dataset"]["source"] == "myops2020-lge" and s["dataset"]["name"] == "myops2020-lge"
    assert s["distance_unit"] == "mm" and s["volume_metrics"]["dice_lv_cavity"]["n"] == 1
    assert "- source: `myops2020-lge`" in (tmp_path / "lge" / "summary.md").read_text()

    assert cli_main(common + ["--out-dir", str(tmp_path / "both"), "--save-predictions"]) == 0
    volumes = read_csv(tmp_path / "both" / "volumes.csv")
    assert sorted(r["source"] for r in volumes) == ["myops2020-cine", "myops2020-lge"]
    (npz,) = (tmp_path / "both" / "predictions").glob("*.npz")
    assert sorted(np.load(npz)) == ["Case3011_unknown_myops2020-cine", "Case3011_unknown_myops2020-lge"]

    capsys.readouterr()
    assert cli_main(common + ["--source", "emidec-lge", "--out-dir", str(tmp_path / "x")]) == 2
    assert "no such source; the split has ['myops2020-cine', 'myops2020-lge']" in capsys.readouterr().err
    assert cli_main(common + ["--extra-dataset-dir", str(myops_eval_dir), "--extra-source", "myops2020-cine",
                              "--extra-source", "myops2020-lge", "--out-dir", str(tmp_path / "y")]) == 2
    assert "--extra-source: give one value or one per --extra-dataset-dir (1), got 2" in capsys.readouterr().err
    # C0 as the main dataset, LGE as a cross-sequence extra
    assert cli_main(common + ["--source", "myops2020-cine", "--extra-dataset-dir", str(myops_eval_dir),
                              "--extra-source", "myops2020-lge", "--out-dir", str(tmp_path / "z")]) == 0
    s = json.loads((tmp_path / "z" / "summary.json").read_text())
    assert s["dataset"]["source"] == "myops2020-cine" and s["extra_evaluations"][0]["dataset"]["source"] == "myops2020-lge"


def test_emidec_stacks_are_complete_volumes_in_pixels(emidec_dir, tmp_path):
    """EMIDEC PNG stacks (slices 0..n-1, no spacing) are complete volumes; distances in pixels."""
    import os

    from halsr_hf.data import prepare_emidec
    from halsr_hf.evaluation import load_eval_dataset

    for images, masks, patient in (("train", "trainannot", "Case_P001"), ("val", "valannot", "Case_N006")):
        for folder in (images, masks):
            (tmp_path / "src" / folder).mkdir(parents=True)
            for path in (emidec_dir / folder).glob(f"{patient}_slice*.png"):
                os.symlink(path, tmp_path / "src" / folder / path.name)
    prepare_emidec(tmp_path / "src", num_validation=0, num_proc=1).save_to_disk(str(tmp_path / "emidec"))
    dataset = load_eval_dataset(tmp_path / "emidec", "test")
    (group,) = dataset.groups
    assert group.key == "Case_N006_unknown" and group.complete and group.spacing_3d is None
    assert len(group.slices) == 9 and dataset.source == "emidec-lge"
    from halsr_hf.evaluation.core import distance_unit

    assert distance_unit(dataset) == "px"


def test_evaluate_setting_overrides_are_checked():
    from halsr_hf.evaluation.run import parse_settings

    assert parse_settings(["component_connectivity=8", "basal_enclosure_threshold=0.95"]) == {
        "component_connectivity": 8.0, "basal_enclosure_threshold": 0.95}
    with pytest.raises(InputError, match="NAME=VALUE"):
        parse_settings(["connectivity=8"])
    with pytest.raises(InputError, match="not a number"):
        parse_settings(["low_confidence=high"])


def test_committed_evaluation_outputs_name_the_model_portably():
    """The committed evaluation/ outputs recorded this machine's absolute model path (/work/main/...)."""
    from pathlib import PurePosixPath

    from .conftest import REPO_ROOT

    names = set()
    for path in (REPO_ROOT / "evaluation").rglob("*.csv"):
        names |= {row["model"] for row in read_csv(path)}
    for path in (REPO_ROOT / "evaluation").rglob("*.json"):
        summary = json.loads(path.read_text())
        if path.name == "roi_variants.json":  # the ROI stage against the reference: its model is summary.json's
            assert (path.parent / "summary.json").is_file() and all(isinstance(rows, list) for rows in summary.values())
            continue
        names |= {summary["model"]} | ({summary["baseline"]["model"]} if "baseline" in summary else set())
    assert names and not [n for n in names if PurePosixPath(n).is_absolute()], names
