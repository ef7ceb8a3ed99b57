"""Issue 20, the pipeline half: every fallback is explicit, and every flag and message describes
what was done. Tiny models (conftest), hand-made arrays and network outputs; real data only where
it is needed (a fine-tune)."""

import hashlib
import json
import os
import shutil
import tomllib
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

import halsr_hf
from halsr_hf import (
    CardiacLVSegmentationPipeline,
    HalsrConfig,
    HalsrForSemanticSegmentation,
    HalsrImageProcessor,
    InputError,
    LvRoiOutput,
)
from halsr_hf.image_processing_halsr import ROI_STAGE_SETTINGS, square_boxes
from halsr_hf.roi_stage import localizer_results

from .conftest import REPO_ROOT, load_acdc_slices, tiny_models

EXAMPLE = REPO_ROOT / "space" / "examples" / "SCD0000101_48.dcm"


def _image(shape=(64, 64), seed=0):
    return np.random.default_rng(seed).random(shape).astype(np.float32)


def _tiny_pipe(run_segmentation=None, run_roi=None, presence_bias=5.0):
    """A pipeline of conftest's tiny models whose networks can be replaced by hand-made outputs."""
    model, roi = tiny_models(presence_bias=presence_bias)
    pipe = CardiacLVSegmentationPipeline(model=model, image_processor=HalsrImageProcessor(size=64, roi_size=64), roi_model=roi)
    if run_segmentation is not None:
        pipe._run_segmentation = run_segmentation
    if run_roi is not None:
        pipe._run_roi = run_roi
    return pipe


def _roi_outputs(boxes, probabilities):
    """A box regressor's output for a batch: normalised boxes of the padded square, LV probabilities."""

    def run(pixel_values):
        count = len(pixel_values)
        return LvRoiOutput(pred_boxes=torch.tensor(boxes[:count], dtype=torch.float32),
                           presence_logits=torch.logit(torch.tensor(probabilities[:count], dtype=torch.float32)))

    return run


# ---- silent fallbacks ------------------------------------------------------------------------------


def _cached_hub_repo(folder: Path, repo_id: str) -> Path:
    """``folder`` as huggingface_hub caches a downloaded repository (``$HF_HOME/hub/models--org--name``
    with ``refs/main`` and ``snapshots/<commit>``): what an offline user has after one download."""
    from huggingface_hub import constants

    cache = Path(constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    snapshot = cache / "snapshots" / commit
    shutil.copytree(folder, snapshot)
    (cache / "refs").mkdir(parents=True)
    (cache / "refs" / "main").write_text(commit)
    return snapshot


@pytest.mark.parametrize("damage", ["none", "broken_config", "not_in_the_cache"])
def test_a_hub_model_whose_roi_does_not_load_is_refused(tiny_folder, damage):
    """A Hub model whose roi/ fails to load used to segment whole slices silently (ACDC: LV 0.31,
    MYO 0.02 Dice). Offline (conftest sets HF_HUB_OFFLINE=1), from the Hub cache."""
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    repo_id = f"halsr-test/tiny-{damage.replace('_', '-')}"
    snapshot = _cached_hub_repo(tiny_folder, repo_id)
    if damage == "none":  # the cache layout is right: the intact repository loads with its ROI stage
        pipe = halsr_hf.load_pipeline(repo_id)
        assert pipe.roi_kind == "regressor" and "no_roi_model" not in pipe(_image())["qc"]
        return
    if damage == "broken_config":
        (snapshot / "roi" / "config.json").write_text("{not json")
    else:
        shutil.rmtree(snapshot / "roi")
    with pytest.raises(InputError, match=f"the ROI model of the Hub repository {repo_id} \\(roi/\\).*roi_model=False"):
        halsr_hf.load_pipeline(repo_id)
    # whole slices only when asked for, and the output says so
    out = halsr_hf.load_pipeline(repo_id, roi_model=False)(_image())
    assert out["qc"][0] == "no_roi_model" and out["message"].startswith("whole slice segmented (no ROI stage: roi_model=False)")


def test_a_missing_model_or_roi_folder_is_one_line(tmp_path, capsys):
    """``--model runs/nothere`` printed a 55-line traceback about huggingface.co."""
    from halsr_hf.cli import main

    for flag in ("--model", "--roi-model"):
        assert main(["segment", str(EXAMPLE), flag, "runs/nothere", "--out-dir", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"error: {flag} runs/nothere: no such folder" in err, err
    assert not (tmp_path / "out").exists()
    with pytest.raises(InputError, match="^model='./runs/nothere': no such folder$"):
        halsr_hf.load_pipeline("./runs/nothere")
    with pytest.raises(InputError, match="^roi_model='/no/such/roi': no such folder$"):
        halsr_hf.load_pipeline(roi_model="/no/such/roi")


def test_fine_tuning_carries_the_roi_stage_over(tiny_folder, acdc_dir, tmp_path):
    """``halsr-hf train --model_name_or_path <model with roi/>`` saved HALSR-Net only; segmenting
    with it then gave whole slices (cavity 955 mm², myocardium 0) flagged no_roi_model."""
    from halsr_hf.cli import main
    from halsr_hf.data.schema import build_dataset_dict, make_row

    names = ["patient003_frame01_slice_4", "patient003_frame01_slice_5"]
    rows = [make_row(image, label, name=name, patient_id="patient003", source="acdc", phase="ED", slice_index=i, num_slices=10)
            for i, (name, (image, label)) in enumerate(zip(names, load_acdc_slices(acdc_dir, names)))]
    build_dataset_dict({"train": rows}, source="acdc").save_to_disk(str(tmp_path / "data"))
    out = tmp_path / "finetuned"
    assert main(["train", "--dataset_dir", str(tmp_path / "data"), "--model_name_or_path", str(tiny_folder),
                 "--max_steps", "1", "--per_device_train_batch_size", "2", "--image_size", "64", "--eval_strategy", "no",
                 "--save_strategy", "no", "--disable_tqdm", "True", "--output_dir", str(out)]) == 0
    assert (out / "roi" / "model.safetensors").read_bytes() == (tiny_folder / "roi" / "model.safetensors").read_bytes()
    # with the processor's ROI-stage settings (the tiny regressor takes 64x64, not the default 128)
    assert HalsrImageProcessor.from_pretrained(out).roi_size == 64
    pipe = halsr_hf.load_pipeline(out)
    assert pipe.roi_kind == "regressor" and "no_roi_model" not in pipe(_image())["qc"]


def test_a_constant_slice_inside_a_volume_is_an_empty_flagged_slice(tiny_pipe):
    """Zero-padded end slices made the whole volume an InputError."""
    volume = _image((5, 64, 72))
    volume[0] = 0.0
    volume[4] = 7.0
    out = tiny_pipe(volume)
    for z in (0, 4):
        result = out["slices"][z]
        assert result["qc"] == ["constant_slice"] and result["message"].startswith("constant slice")
        assert not result["lv_found"] and result["roi"] is None and result["lv_probability"] is None
        assert not out["label_map"][z].any() and result["segments"] == []
    inner = tiny_pipe(volume[1:4])
    assert np.array_equal(out["label_map"][1:4], inner["label_map"])
    assert [s["qc"] for s in out["slices"][1:4]] == [s["qc"] for s in inner["slices"]]
    with pytest.raises(InputError, match="every slice is constant"):
        tiny_pipe(np.zeros((3, 32, 32), dtype=np.float32))
    with pytest.raises(InputError, match="constant"):  # one 2D slice: nothing to segment, as before
        tiny_pipe(np.zeros((32, 32), dtype=np.float32))


def test_axes_argument_and_ambiguous_axis_orders(tiny_pipe, tmp_path):
    """``nib.load(p).get_fdata()`` (X, Y, Z) was read as X slices of Y x Z; with Z = 3 as one RGB image."""
    zyx = _image((3, 60, 72))
    xyz = np.ascontiguousarray(np.transpose(zyx, (2, 1, 0)))  # (72, 60, 3)
    expected = tiny_pipe(zyx)["label_map"]
    assert np.array_equal(tiny_pipe(xyz, axes="xyz")["label_map"], expected)
    assert np.array_equal(tiny_pipe(torch.from_numpy(xyz), axes="XYZ")["label_map"], expected)
    with pytest.raises(InputError, match="ambiguous: an RGB image .* or a volume of 3 slices.*axes='xyz'"):
        tiny_pipe(xyz)
    with pytest.raises(InputError, match="ambiguous axis order: its last axis is the shortest.*axes='xyz'"):
        tiny_pipe(np.transpose(_image((10, 60, 72)), (2, 1, 0)))
    # a NIfTI file and nibabel's array of it, with axes="xyz": the same slices
    nii = tmp_path / "volume.nii.gz"
    nib.save(nib.Nifti1Image(xyz, np.eye(4)), nii)
    assert np.array_equal(tiny_pipe(nib.load(nii).get_fdata(), axes="xyz")["label_map"], tiny_pipe(str(nii))["label_map"])
    with pytest.raises(InputError, match="files and PIL images carry their own orientation"):
        tiny_pipe(str(nii), axes="xyz")
    # colour: explicit; a gray image stored as RGB stays a gray image
    gray = _image((60, 72))
    with pytest.warns(UserWarning, match="grayscale"):
        assert tiny_pipe(np.stack([gray] * 3, axis=-1))["label_map"].shape == (60, 72)
    colour = np.stack([gray, gray * 0.5, gray], axis=-1)
    with pytest.raises(InputError, match="axes='yxc' for a colour image"):
        tiny_pipe(colour)
    assert tiny_pipe(colour, axes="yxc")["label_map"].shape == (60, 72)
    with pytest.raises(InputError, match="axes='xy' does not name its 3 axes"):
        tiny_pipe(zyx, axes="xy")


def test_anisotropic_pixels_are_flagged_and_warned(tiny_pipe):
    """Anisotropic in-plane spacing was neither resampled nor mentioned. Chosen: flag and warn (the
    crops stay square in pixels, as the network was trained); areas in mm² use both spacings."""
    image = _image((64, 64))
    with pytest.warns(UserWarning, match="pixel spacing 1 x 1.6 mm .* is anisotropic"):
        out = tiny_pipe(image, pixel_spacing=(1.0, 1.6))
    assert "anisotropic_spacing" in out["qc"] and "anisotropic" in out["message"]
    assert np.array_equal(out["label_map"], tiny_pipe(image)["label_map"])  # not resampled
    assert out["areas_mm2"]["lv_cavity"] == pytest.approx(out["areas_px"]["lv_cavity"] * 1.6)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        iso = tiny_pipe(image, pixel_spacing=(1.367188, 1.367187))
    assert "anisotropic_spacing" not in iso["qc"] and not [w for w in caught if "anisotropic" in str(w.message)]


# ---- flags and messages ----------------------------------------------------------------------------


def _lv_logits(pixel_values, radius: float = 1 / 3, blob: bool = True):
    """Crop logits of a centred LV cavity disk (radius x the crop side) and, with ``blob``, a small
    myocardium blob at the crop's bottom-right corner, touching its border."""
    size = pixel_values.shape[-1]
    yy, xx = np.mgrid[:size, :size]
    labels = np.zeros((size, size), dtype=np.int64)
    labels[(yy - size / 2 + 0.5) ** 2 + (xx - size / 2 + 0.5) ** 2 <= (radius * size) ** 2] = 1
    if blob:
        labels[-4:, -4:] = 2
    logits = torch.nn.functional.one_hot(torch.from_numpy(labels), 3).permute(2, 0, 1).float() * 10
    return logits[None].expand(len(pixel_values), -1, -1, -1).clone()


def test_flags_and_segments_describe_the_output_after_the_clean_up():
    """A spurious blob at the crop's border, removed by the largest-component clean-up, caused
    re-crops, a mask_touches_crop_border flag and a ``myocardium`` segment that the output did not have."""
    out = _tiny_pipe(run_segmentation=_lv_logits)(_image((96, 96)))
    assert (out["label_map"] == 1).sum() > 1000 and not (out["label_map"] == 2).any()
    assert "several_components" in out["qc"]  # true: a component was removed
    assert not {"second_look", "mask_touches_crop_border"} & set(out["qc"]), out["qc"]
    assert "cropped again" not in out["message"] and "touches" not in out["message"]
    assert [s["label"] for s in out["segments"]] == ["lv_cavity"]
    assert out["segments"][0]["score"] == pytest.approx(1.0, abs=0.01)
    # the LV itself at the crop's border: both still act
    touching = _tiny_pipe(run_segmentation=lambda pv: _lv_logits(pv, radius=0.55, blob=False))(_image((96, 96)))
    assert {"second_look", "mask_touches_crop_border"} <= set(touching["qc"])


def test_presence_threshold_below_the_localiser_threshold_acts():
    """The localiser's probability is the peak of a component that already passed 0.5, so
    presence_threshold <= 0.5 did nothing."""
    prob = np.full((1, 16, 16), 0.05, dtype=np.float32)
    prob[0, 6:10, 6:10] = 0.3
    (strict,) = localizer_results(prob, sides=[64], sizes=[(64, 64)])
    assert strict.box is None
    (lenient,) = localizer_results(prob, sides=[64], sizes=[(64, 64)], presence_threshold=0.2)
    assert lenient.box == [24.0, 24.0, 39.0, 39.0] and lenient.probability == pytest.approx(0.3)
    logits = torch.log(torch.from_numpy(np.stack([1 - prob, prob], axis=1)))  # the localiser's output
    processor = HalsrImageProcessor(roi_size=16)
    assert processor.post_process_roi(logits, [(64, 64)])[0] is None
    assert processor.post_process_roi(logits, [(64, 64)], presence_threshold=0.2)[0].tolist() == [24.0, 24.0, 39.0, 39.0]
    assert HalsrImageProcessor(roi_size=16, presence_threshold=0.2).post_process_roi(logits, [(64, 64)])[0] is not None


def test_slices_the_consensus_filled_in_say_so_and_are_flagged():
    """Their message read "LV located by the ROI stage (probability 0.03)", and low_roi_confidence,
    set before the consensus, never reached them."""
    box = [0.3, 0.3, 0.6, 0.6]
    pipe = _tiny_pipe(run_roi=_roi_outputs([box] * 5, [0.99, 0.99, 0.03, 0.99, 0.99]))
    out = pipe(_image((5, 64, 64)))
    filled = out["slices"][2]
    assert filled["lv_found"] and {"box_corrected", "low_roi_confidence"} <= set(filled["qc"])
    assert filled["message"].startswith("LV box from the volume consensus: the stack's median LV box (the LV was located "
                                        "on slices above and below; the ROI stage's LV probability on this slice: 0.03)"), filled["message"]
    assert filled["status"] == "segmented" and filled["message"].split(";")[-1].strip().startswith("segmented")
    assert filled["lv_probability"] == pytest.approx(0.03)
    located = out["slices"][1]
    assert located["message"].startswith("LV located by the ROI stage (probability 0.99)")
    assert not {"box_corrected", "low_roi_confidence"} & set(located["qc"])


def test_a_degenerate_box_is_not_reported_as_a_low_probability():
    side = 64
    image = _image((side, side))
    out = _tiny_pipe(run_roi=_roi_outputs([[0.5, 0.3, 0.5 + 0.5 / side, 0.6]], [0.95]))(image)
    assert not out["lv_found"] and not out["label_map"].any()
    assert "degenerate" in out["message"] and "probability is 0.95" in out["message"], out["message"]
    assert "below presence_threshold" not in out["message"]
    low = _tiny_pipe(run_roi=_roi_outputs([[0.3, 0.3, 0.6, 0.6]], [0.2]))(image)
    assert "LV probability 0.20 is below presence_threshold 0.5" in low["message"]


# ---- conventions -----------------------------------------------------------------------------------


def test_roi_stage_settings_travel_with_the_checkpoint_and_calls_override_them(tmp_path):
    """They were class attributes of the pipeline: not saved, not settable per model."""
    for name in ROI_STAGE_SETTINGS:
        assert not hasattr(CardiacLVSegmentationPipeline, name), name
    model, roi = tiny_models(presence_bias=1.0)  # LV probability 0.73: below the default low_confidence 0.9
    processor = HalsrImageProcessor(size=64, roi_size=64, low_confidence=0.5)
    CardiacLVSegmentationPipeline(model=model, image_processor=processor, roi_model=roi).save_pretrained(tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "preprocessor_config.json").read_text())
    assert saved["low_confidence"] == 0.5 and set(ROI_STAGE_SETTINGS) <= set(saved)
    assert saved["size"] == {"height": 64, "width": 64}
    pipe = halsr_hf.load_pipeline(tmp_path / "m")
    image = _image()
    assert "low_roi_confidence" not in pipe(image)["qc"]
    assert "low_roi_confidence" in pipe(image, low_confidence=0.9)["qc"]  # a call overrides
    assert "low_roi_confidence" not in pipe(image)["qc"]  # for that call only
    assert not pipe(image, presence_threshold=0.8)["lv_found"]
    with pytest.raises(InputError, match="low_confidense"):
        pipe(image, low_confidense=0.5)
    # the bundled model's processor holds the tuned values (the ROI stage's defaults, the base rule at
    # 0.90 chosen on validation for issue 17's model, ES within ED and the apex rule for issue 24's); an older config (int
    # size, no settings) loads
    bundled = HalsrImageProcessor.from_pretrained(halsr_hf.default_model_dir())
    assert bundled.roi_stage_settings() == {**ROI_STAGE_SETTINGS, "basal_enclosure_threshold": 0.9, "es_within_ed": 1.0,
                                            "apex_growth": 2.0}
    assert bundled.size == {"height": 128, "width": 128}
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "preprocessor_config.json").write_text(json.dumps(
        {"image_processor_type": "HalsrImageProcessor", "size": 96, "roi_size": 128, "crop_margin": 0.25}))
    old = HalsrImageProcessor.from_pretrained(tmp_path / "old")
    assert old.size == {"height": 96, "width": 96} and old.crop_size == 96 and old.roi_stage_settings() == ROI_STAGE_SETTINGS


def _net(stage, labels):
    config = HalsrConfig(hidden_sizes=[4, 8, 8, 16, 16], image_size=64, stage=stage, id2label=dict(enumerate(labels)),
                         label2id={name: i for i, name in enumerate(labels)})
    return HalsrForSemanticSegmentation(config).eval()


def test_the_localiser_is_recognised_by_its_config_not_by_its_label_names(tmp_path):
    model, _ = tiny_models()
    processor = HalsrImageProcessor(size=64, roi_size=64)
    with pytest.raises(InputError, match="stage 'localization'.*stage 'segmentation'"):
        CardiacLVSegmentationPipeline(model=model, image_processor=processor, roi_model=_net("segmentation", ["background", "lv"]))
    pipe = CardiacLVSegmentationPipeline(model=model, image_processor=processor,
                                         roi_model=_net("localization", ["background", "left_ventricle"]))
    assert pipe.roi_kind == "localizer"
    assert json.loads((halsr_hf.default_model_dir() / "roi" / "config.json").read_text())["stage"] == "localization"
    # a localiser saved before configs said their stage: read as one, with a warning saying what to add
    _net("localization", ["background", "lv"]).save_pretrained(tmp_path / "legacy")
    config = json.loads((tmp_path / "legacy" / "config.json").read_text())
    del config["stage"]
    (tmp_path / "legacy" / "config.json").write_text(json.dumps(config))
    with pytest.warns(UserWarning, match='Add "stage": "localization"'):
        pipe = CardiacLVSegmentationPipeline(model=model, image_processor=processor, roi_model=str(tmp_path / "legacy"))
    assert pipe.roi_kind == "localizer"


def test_custom_pipelines_is_the_config_class_own_property(monkeypatch):
    """It was a property patched onto HalsrConfig from halsr_hf/__init__.py."""
    from transformers.pipelines import PIPELINE_REGISTRY

    prop = HalsrConfig.__dict__["custom_pipelines"]
    assert isinstance(prop, property) and prop.fget.__module__ == "halsr_hf.configuration_halsr"
    assert "HalsrConfig.custom_pipelines =" not in Path(halsr_hf.__file__).read_text()
    stored = {"cardiac-lv-segmentation": {"impl": "pipeline_halsr.CardiacLVSegmentationPipeline"}}
    config = HalsrConfig(custom_pipelines=stored)
    assert config.custom_pipelines == {} and config.to_dict()["custom_pipelines"] == stored  # registered here
    tasks = {k: v for k, v in PIPELINE_REGISTRY.supported_tasks.items() if k != "cardiac-lv-segmentation"}
    monkeypatch.setattr(PIPELINE_REGISTRY, "supported_tasks", tasks)
    assert config.custom_pipelines == stored  # where the package does not register the task: the copied code


def test_processor_follows_segformer_conventions():
    processor = HalsrImageProcessor(size={"height": 64, "width": 64})
    assert processor.crop_size == 64 and HalsrImageProcessor(size=48).size == {"height": 48, "width": 48}
    with pytest.raises(InputError, match="square"):
        HalsrImageProcessor(size={"height": 64, "width": 96})
    image = _image((70, 90))
    label = np.zeros((70, 90), dtype=np.uint8)
    label[20:50, 30:60] = 2
    label[28:42, 38:52] = 1
    label[0, 0] = 255  # "ignore" survives the crop as itself
    inputs = processor([image, image], segmentation_maps=[label, label], boxes=[[30, 20, 59, 49], None])
    assert inputs["labels"].shape == (2, 64, 64) and inputs["labels"].dtype == torch.long
    assert set(inputs["labels"].unique().tolist()) <= {0, 1, 2, 255} and (inputs["labels"][1] == 255).any()
    one_hot = torch.nn.functional.one_hot(torch.where(inputs["labels"] == 255, 0, inputs["labels"]), 3).permute(0, 3, 1, 2) * 10.0
    back = processor.post_process_semantic_segmentation(one_hot, target_sizes=inputs["original_sizes"], crop_boxes=inputs["crop_boxes"])
    for class_id in (1, 2):  # the labels are the same crops as the images
        ref = label == class_id
        assert 2 * (back[0].numpy() == class_id)[ref].sum() / ((back[0].numpy() == class_id).sum() + ref.sum()) > 0.9
    model = HalsrForSemanticSegmentation(HalsrConfig(hidden_sizes=[4, 8, 8, 16, 16], image_size=64))
    out = model(**inputs)  # the processor's output goes to the model as is
    assert out.loss is not None and out.logits.shape == (2, 3, 64, 64)


def test_the_training_crops_come_from_the_processor():
    from halsr_hf.data.schema import bbox_from_label
    from halsr_hf.training.data import HalsrCropDataset

    image = _image((70, 90))
    label = np.zeros((70, 90), dtype=np.uint8)
    label[20:50, 30:60] = 2
    label[28:42, 38:52] = 1

    class Source:
        has_lv = np.array([True])
        myocardium_annotated = np.array([True])

        def __len__(self):
            return 1

        def get(self, index):
            return image, label.copy()

    dataset = HalsrCropDataset(Source(), size=64, train=False)
    assert isinstance(dataset.processor, HalsrImageProcessor) and dataset.processor.crop_size == 64
    item = dataset[0]
    expected = dataset.processor(image, segmentation_maps=label, do_normalize=False,
                                 crop_boxes=square_boxes(torch.tensor([bbox_from_label(label)], dtype=torch.float32), 0.25))
    assert torch.equal(item["pixel_values"], expected["pixel_values"][0]) and torch.equal(item["labels"], expected["labels"][0])


def test_help_and_descriptions_name_what_the_bundled_model_uses(capsys):
    """``--device`` said "(default: cpu)" where transformers picks cuda:0; "ROI regressor" was used for
    the ROI stage, which in the bundled model is a localiser."""
    from halsr_hf import image_processing_halsr, pipeline_halsr
    from halsr_hf.cli import main

    assert main(["segment", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: cpu)" not in text and "cuda:0" in text
    assert "ROI regressor" not in text and "localiser" in text and "--no-roi" in text
    description = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["description"]
    texts = {"pyproject description": description, "halsr_hf": halsr_hf.__doc__, "pipeline_halsr": pipeline_halsr.__doc__,
             "image_processing_halsr": image_processing_halsr.__doc__}
    for name in ("evaluation.md", "hub.md", "space.md"):
        texts[f"docs/{name}"] = (REPO_ROOT / "docs" / name).read_text()
    for name, text in texts.items():
        assert "ROI regressor" not in " ".join(text.split()), name
