"""Model tests in the style of transformers' model testers: tiny configs, shapes, gradients,
save/load round trips, remote-code loading, and a short overfit on real ACDC slices."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModel, AutoModelForSemanticSegmentation

import halsr_hf
from halsr_hf import (
    PRESETS,
    HalsrConfig,
    HalsrForSemanticSegmentation,
    HalsrModel,
    InputError,
    LvRoiConfig,
    LvRoiRegressor,
)

from .conftest import load_acdc_slices


def assert_same_outputs(actual, expected):
    """Equal up to float32 summation-order noise (oneDNN picks kernels by memory alignment, so a
    reloaded copy of the same weights can differ in the last bits): relative to the output scale."""
    scale = expected.abs().max().clamp_min(1.0)
    assert ((actual - expected).abs().max() / scale).item() < 1e-5


class HalsrModelTester:
    """Builds tiny configs and inputs (the transformers ``ModelTester`` habit)."""

    def __init__(self, batch_size=2, height=40, width=56, hidden_sizes=(4, 8, 8, 16, 16), num_labels=3):
        self.batch_size, self.height, self.width = batch_size, height, width
        self.hidden_sizes, self.num_labels = list(hidden_sizes), num_labels

    def get_config(self, **kwargs):
        id2label = {i: f"class_{i}" for i in range(self.num_labels)}
        values = dict(hidden_sizes=self.hidden_sizes, id2label=id2label, label2id={v: k for k, v in id2label.items()})
        values.update(kwargs)
        return HalsrConfig(**values)

    def prepare_inputs(self):
        torch.manual_seed(0)
        pixel_values = torch.randn(self.batch_size, 1, self.height, self.width)
        labels = torch.randint(0, self.num_labels, (self.batch_size, self.height, self.width))
        return pixel_values, labels


@pytest.fixture
def tester():
    return HalsrModelTester()


def test_default_labels_and_config_round_trip(tmp_path):
    config = HalsrConfig()
    assert config.id2label == {0: "background", 1: "lv_cavity", 2: "myocardium"}
    assert config.label2id == {"background": 0, "lv_cavity": 1, "myocardium": 2}
    assert config.num_channels == 1 and config.num_labels == 3
    config.save_pretrained(tmp_path)
    reloaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(reloaded, HalsrConfig)
    assert reloaded.hidden_sizes == config.hidden_sizes and reloaded.id2label == config.id2label


def test_presets_exist_with_documented_budgets():
    assert set(PRESETS) >= {"small", "base", "large"}
    counts = {}
    for name in ("small", "base"):
        model = HalsrForSemanticSegmentation(HalsrConfig.from_preset(name))
        counts[name] = sum(p.numel() for p in model.parameters())
    assert 1e6 <= counts["small"] <= 3e6
    assert abs(counts["base"] - 10.7e6) / 10.7e6 < 0.10  # the paper's Table 9 budget
    assert HalsrConfig.from_preset("large").hidden_sizes == [64, 128, 256, 512, 1024]
    with pytest.raises(ValueError, match="unknown preset"):
        HalsrConfig.from_preset("huge")


@pytest.mark.parametrize("preset", ["tiny", "small", "base", "large"])
def test_forward_shapes_every_preset(preset):
    model = HalsrForSemanticSegmentation(HalsrConfig.from_preset(preset)).eval()
    with torch.inference_mode():
        out = model(torch.randn(2, 1, 48, 32))
    assert out.logits.shape == (2, 3, 48, 32)
    assert out.loss is None


@pytest.mark.parametrize("size", [(40, 56), (37, 61), (16, 16), (128, 96)])
def test_logits_at_input_resolution_for_any_size(tester, size):
    model = HalsrForSemanticSegmentation(tester.get_config()).eval()
    with torch.inference_mode():
        out = model(torch.randn(3, 1, *size))
    assert out.logits.shape == (3, tester.num_labels, *size)


def test_any_num_labels_and_loss(tester):
    tester.num_labels = 5
    pixel_values, labels = tester.prepare_inputs()
    model = HalsrForSemanticSegmentation(tester.get_config())
    out = model(pixel_values, labels=labels)
    assert out.logits.shape == (2, 5, tester.height, tester.width)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)


def test_bare_model_outputs(tester):
    config = tester.get_config()
    model = HalsrModel(config).eval()
    with torch.inference_mode():
        out = model(torch.randn(2, 1, 32, 48), output_hidden_states=True)
    assert out.last_hidden_state.shape == (2, config.hidden_sizes[0], 32, 48)
    assert out.latent.shape == (2, config.hidden_sizes[-1], 2, 3)
    assert len(out.hidden_states) == len(config.hidden_sizes)
    assert isinstance(AutoModel.from_config(config), HalsrModel)


def test_every_parameter_gets_a_gradient(tester):
    pixel_values, labels = tester.prepare_inputs()
    model = HalsrForSemanticSegmentation(tester.get_config(dropout_rate=0.0))
    model.train()
    model(pixel_values, labels=labels).loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"no/invalid gradient for {missing}"
    for branch in ("reconstruction", "hapm", "gate"):
        grads = [p.grad.abs().sum().item() for n, p in model.named_parameters() if branch in n]
        assert grads and sum(grads) > 0, f"branch {branch} receives no gradient"


@pytest.mark.parametrize(
    "flag,fragment", [("use_hapm", "hapm"), ("use_attention_gates", "gate"), ("use_reconstruction", "reconstruction")]
)
def test_ablation_flags_remove_their_parameters(tester, flag, fragment):
    full = HalsrForSemanticSegmentation(tester.get_config())
    ablated = HalsrForSemanticSegmentation(tester.get_config(**{flag: False}))
    assert any(fragment in n for n, _ in full.named_parameters())
    assert not any(fragment in n for n, _ in ablated.named_parameters())
    assert sum(p.numel() for p in ablated.parameters()) < sum(p.numel() for p in full.parameters())
    pixel_values, labels = tester.prepare_inputs()
    out = ablated(pixel_values, labels=labels)
    assert out.logits.shape == (2, 3, tester.height, tester.width)
    out.loss.backward()


def test_plain_unet_is_halsr_net_with_its_modules_off():
    """The U-Net baseline is a configuration: at the ``small`` widths it has the 1,577,523
    parameters of the plain U-Net the paper compares with, and none of the three modules."""
    config = HalsrConfig.plain_unet("small")
    assert (config.use_hapm, config.use_attention_gates, config.use_reconstruction, config.dropout_rate) == (False, False, False, 0.0)
    model = HalsrForSemanticSegmentation(config)
    assert model.num_parameters() == 1_577_523
    assert not any(part in n for n, _ in model.named_parameters() for part in ("hapm", "gate", "reconstruction"))
    assert HalsrConfig.plain_unet(hidden_sizes=[4, 8, 8, 16, 16]).hidden_sizes == [4, 8, 8, 16, 16]


def test_loss_ignores_the_ignore_index_and_rejects_unknown_labels():
    """Eqs. (6)-(8) themselves are pinned in test_paper_method.py."""
    from halsr_hf.modeling_halsr import bce_dice_loss

    logits = torch.tensor([[[[4.0, -4.0]], [[-4.0, 4.0]]]])  # (1, 2, 1, 2)
    labels = torch.tensor([[[0, 1]]])
    ignored = torch.tensor([[[0, 255]]])
    assert torch.allclose(
        bce_dice_loss(logits, ignored), bce_dice_loss(logits[..., :1], labels[..., :1]), atol=1e-6
    )
    with pytest.raises(InputError, match="labels must hold ids"):
        bce_dice_loss(logits, torch.tensor([[[0, 7]]]))


def test_save_load_round_trip_identical_logits(tester, tmp_path):
    model = HalsrForSemanticSegmentation(tester.get_config()).eval()
    pixel_values, _ = tester.prepare_inputs()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "halsr"
    assert "AutoModelForSemanticSegmentation" in config["auto_map"]
    for loader in (HalsrForSemanticSegmentation, AutoModelForSemanticSegmentation):
        reloaded = loader.from_pretrained(tmp_path).eval()
        assert isinstance(reloaded, HalsrForSemanticSegmentation)
        with torch.inference_mode():
            assert_same_outputs(reloaded(pixel_values).logits, model(pixel_values).logits)


REMOTE_CODE_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["halsr_hf"] = None  # the package must not be importable here
    try:
        import halsr_hf  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("halsr_hf is importable")
    import torch
    from transformers import AutoModel, AutoModelForSemanticSegmentation
    folder, roi_folder, inputs, roi_inputs, out = sys.argv[1:6]
    model = AutoModelForSemanticSegmentation.from_pretrained(folder, trust_remote_code=True).eval()
    roi = AutoModel.from_pretrained(roi_folder, trust_remote_code=True).eval()
    assert "halsr_hf" not in type(model).__module__, type(model).__module__
    with torch.inference_mode():
        torch.save({"logits": model(torch.load(inputs)).logits,
                    "boxes": roi(torch.load(roi_inputs)).pred_boxes}, out)
    """
)


def test_saved_folder_loads_with_remote_code_without_the_package(tester, tmp_path):
    model = HalsrForSemanticSegmentation(tester.get_config()).eval()
    roi = LvRoiRegressor(LvRoiConfig(image_size=32, encoder_sizes=[4, 8], fc_sizes=[8], reduce_sizes=[8, 8, 8],
                                     global_channels=8, head_sizes=[8, 4])).eval()
    model.save_pretrained(tmp_path / "seg")
    roi.save_pretrained(tmp_path / "roi")
    assert (tmp_path / "seg" / "modeling_halsr.py").is_file() and (tmp_path / "seg" / "errors.py").is_file()
    pixel_values, _ = tester.prepare_inputs()
    roi_inputs = torch.randn(2, 1, 32, 32)
    torch.save(pixel_values, tmp_path / "x.pt")
    torch.save(roi_inputs, tmp_path / "r.pt")
    script = tmp_path / "remote.py"
    script.write_text(REMOTE_CODE_SCRIPT)
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "seg"), str(tmp_path / "roi"), str(tmp_path / "x.pt"),
         str(tmp_path / "r.pt"), str(tmp_path / "out.pt")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    remote = torch.load(tmp_path / "out.pt")
    with torch.inference_mode():
        assert_same_outputs(remote["logits"], model(pixel_values).logits)
        assert_same_outputs(remote["boxes"], roi(roi_inputs).pred_boxes)


@pytest.mark.parametrize(
    "shape,match",
    [((1, 40, 40), "rank 3"), ((2, 3, 40, 40), "3 channels instead of 1"), ((1, 1, 8, 40), "height and width >= 16")],
)
def test_bad_shapes_raise_input_error(tester, shape, match):
    model = HalsrForSemanticSegmentation(tester.get_config())
    with pytest.raises(InputError, match=match) as info:
        model(torch.randn(*shape))
    assert str(tuple(shape)) in str(info.value)
    assert isinstance(info.value, ValueError)
    with pytest.raises(InputError, match="pixel_values must be a torch.Tensor"):
        model(np.zeros((1, 1, 32, 32), dtype=np.float32))
    with pytest.raises(InputError, match="labels must have shape"):
        model(torch.randn(1, 1, 32, 32), labels=torch.zeros(1, 16, 16, dtype=torch.long))


def test_unknown_and_misspelt_keyword_arguments_raise_input_error(tester):
    """Issue 12: forward(label=...) (a typo) returned loss=None, and any other keyword argument was
    swallowed by **kwargs; the Trainer must not pass num_items_in_batch either."""
    model = HalsrForSemanticSegmentation(tester.get_config())
    pixel_values, labels = tester.prepare_inputs()
    with pytest.raises(InputError, match="unknown keyword argument 'label' \\(did you mean 'labels'\\?\\)"):
        model(pixel_values, label=labels)
    with pytest.raises(InputError, match="'output_hidden_state' \\(did you mean 'output_hidden_states'\\?\\)"):
        model(pixel_values, output_hidden_state=True)
    with pytest.raises(InputError, match="'crop_box' \\(did you mean 'crop_boxes'\\?\\)"):
        model(pixel_values, crop_box=torch.zeros(2, 4))
    roi = LvRoiRegressor(tiny_roi_config())
    with pytest.raises(InputError, match="LvRoiRegressor.forward: unknown keyword argument 'label' \\(did you mean 'labels'\\?\\)"):
        roi(torch.rand(1, 1, 64, 64), label=torch.zeros(1, 4))
    with pytest.raises(InputError, match="'has_LV' \\(did you mean 'has_lv'\\?\\)"):
        roi(torch.rand(1, 1, 64, 64), has_LV=torch.ones(1))
    assert model(pixel_values, labels=labels).loss is not None
    assert HalsrForSemanticSegmentation.accepts_loss_kwargs is False and LvRoiRegressor.accepts_loss_kwargs is False


# ---- ROI regressor ----------------------------------------------------------------------


def tiny_roi_config(**kwargs):
    values = dict(image_size=64, encoder_sizes=[4, 8, 8, 16], fc_sizes=[16, 32], reduce_sizes=[16, 16, 8],
                  global_channels=16, head_sizes=[8, 8])
    values.update(kwargs)
    return LvRoiConfig(**values)


def test_roi_regressor_paper_architecture():
    model = LvRoiRegressor(LvRoiConfig())
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    widths = [c.out_channels for c in convs]
    for width in (32, 64, 128, 256, 512):
        assert width in widths
    global_conv = model.global_conv[0]
    assert global_conv.kernel_size == (8, 8) and global_conv.out_channels == 128  # Conv AxA -> 128 maps
    assert model.box.out_channels == 4
    with torch.inference_mode():
        out = model.eval()(torch.rand(3, 1, 128, 128))
    assert out.pred_boxes.shape == (3, 4) and out.presence_logits.shape == (3,)
    assert ((out.pred_boxes >= 0) & (out.pred_boxes <= 1)).all()


def test_roi_loss_is_mse_plus_giou_on_present_slices_and_backward():
    from halsr_hf.modeling_roi import generalized_iou

    model = LvRoiRegressor(tiny_roi_config(presence_loss_weight=0.0, dropout_rate=0.0, giou_loss_weight=0.0))
    pixel_values = torch.rand(4, 1, 64, 64)
    boxes = torch.tensor([[0.2, 0.2, 0.6, 0.6]] * 4)
    has_lv = torch.tensor([1, 1, 0, 1])
    model.eval()
    out = model(pixel_values, labels=boxes, has_lv=has_lv)
    expected = ((out.pred_boxes - boxes) ** 2).mean(1)[has_lv.bool()].mean()  # eq. (1) alone
    assert torch.allclose(out.loss, expected)
    model.config.giou_loss_weight = 0.5
    out = model(pixel_values, labels=boxes, has_lv=has_lv)
    giou = generalized_iou(out.pred_boxes, boxes)
    assert torch.allclose(out.loss, expected + 0.5 * (1 - giou)[has_lv.bool()].mean())
    same = torch.tensor([[0.1, 0.2, 0.5, 0.7]])
    assert torch.allclose(generalized_iou(same, same), torch.ones(1))
    apart = generalized_iou(torch.tensor([[0.0, 0.0, 0.2, 0.2]]), torch.tensor([[0.6, 0.6, 1.0, 1.0]]))
    assert torch.allclose(apart, torch.tensor([0.0 - (1.0 - 0.2) / 1.0]))  # IoU 0, hull 1, union 0.2
    model.train()
    model(pixel_values, labels=boxes, has_lv=has_lv).loss.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if not n.startswith("presence"))


def test_roi_save_load_and_bad_input(tmp_path):
    model = LvRoiRegressor(tiny_roi_config()).eval()
    model.save_pretrained(tmp_path)
    reloaded = AutoModel.from_pretrained(tmp_path).eval()
    assert isinstance(reloaded, LvRoiRegressor)
    x = torch.rand(2, 1, 64, 64)
    with torch.inference_mode():
        assert_same_outputs(reloaded(x).pred_boxes, model(x).pred_boxes)
    with pytest.raises(InputError, match=r"\(batch, 1, 64, 64\).*got \(2, 1, 32, 64\)"):
        model(torch.rand(2, 1, 32, 64))
    with pytest.raises(ValueError, match="divisible"):
        LvRoiConfig(image_size=100)


# ---- real data --------------------------------------------------------------------------


def test_overfits_one_real_acdc_batch(acdc_dir):
    torch.manual_seed(0)
    names = ["patient001_frame01_slice_5", "patient001_frame02_slice_4", "patient003_frame01_slice_6",
             "patient005_frame01_slice_5"]
    names = [n for n in names if (acdc_dir / "data" / f"{n}.h5").exists()] or [
        line.strip() for line in (acdc_dir / "train_slices.list").read_text().split()[:40:10]
    ]
    images, labels = [], []
    for image, label in load_acdc_slices(acdc_dir, names):
        image = torch.from_numpy(image)[None, None]
        label = torch.from_numpy(label.astype(np.int64))[None, None].float()
        images.append(F.interpolate(image, size=(64, 64), mode="bilinear", align_corners=False)[0])
        labels.append(F.interpolate(label, size=(64, 64), mode="nearest")[0, 0].long())
    pixel_values = torch.stack(images)
    pixel_values = (pixel_values - pixel_values.mean()) / pixel_values.std()
    labels = torch.stack(labels)
    assert set(labels.unique().tolist()) <= {0, 1, 2} and (labels > 0).any()
    model = HalsrForSemanticSegmentation(HalsrConfig(hidden_sizes=[8, 16, 16, 32, 32], dropout_rate=0.0))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    losses = []
    for _ in range(40):
        optimizer.zero_grad()
        loss = model(pixel_values, labels=labels).loss
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
    assert isinstance(halsr_hf.__version__, str)


def test_channels_last_gives_the_same_logits_and_gradients_on_real_slices(acdc_dir):
    """Training runs channels_last on the CPU too (train.py): it must be a memory layout, not another
    function. The bundled model, real ACDC crops: logits and a gradient match NCHW within 1e-4."""
    from halsr_hf import default_model_dir
    from halsr_hf.image_processing_halsr import normalize_intensity

    model = HalsrForSemanticSegmentation.from_pretrained(default_model_dir()).eval()
    names = [f"patient003_frame01_slice_{k}" for k in (2, 4, 6)]
    crops = [torch.from_numpy(normalize_intensity(image)[40:168, 40:168].copy()) for image, _ in load_acdc_slices(acdc_dir, names)]
    pixel_values = torch.stack(crops)[:, None]
    labels = torch.zeros(len(names), 128, 128, dtype=torch.long)
    reference = model(pixel_values=pixel_values, labels=labels)
    reference.loss.backward()
    grad = model.head.weight.grad.clone()
    model.zero_grad()
    model_cl = model.to(memory_format=torch.channels_last)
    output = model_cl(pixel_values=pixel_values.contiguous(memory_format=torch.channels_last), labels=labels)
    output.loss.backward()
    assert torch.allclose(output.logits, reference.logits, atol=1e-4)
    assert torch.allclose(model_cl.head.weight.grad, grad, atol=1e-4, rtol=1e-4)
