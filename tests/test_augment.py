"""Each augmentation transform does what its docstring says (a no-op fails), the geometric ones move
the label with the image and keep the ignore label, and ``augment_slice`` is deterministic for a
given ``numpy`` generator. Synthetic z-scored phantoms: no data needed, a few seconds."""

import math
from dataclasses import fields

import numpy as np
import pytest
import torch

from halsr_hf.training import augment as A
from halsr_hf.training.augment import AugmentConfig, augment_slice

PROBS = [f.name for f in fields(AugmentConfig) if f.name.endswith("_prob")]


def only(*names, **overrides) -> AugmentConfig:
    """A config where only the named transforms run (with probability 1), no D4."""
    config = AugmentConfig(dihedral=False, **{p: 0.0 for p in PROBS})
    for name in names:
        setattr(config, f"{name}_prob", 1.0)
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


def phantom(height=128, width=128, seed=0):
    """A z-scored short-axis-like slice: textured background, dark myocardial ring, bright cavity,
    fine noise; the label has 1 (cavity), 2 (ring) and a 255 (ignore) patch."""
    g = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32), indexing="ij")
    r = torch.hypot(xs - 0.55 * width, ys - 0.45 * height)
    label = torch.zeros(height, width, dtype=torch.uint8)
    label[r < 14] = 1
    label[(r >= 14) & (r < 22)] = 2
    label[int(0.45 * height) - 8 : int(0.45 * height) + 8, int(0.55 * width) - 44 : int(0.55 * width) - 28] = 255
    image = 0.4 * torch.sin(xs / 7) * torch.cos(ys / 11) + 0.01 * xs
    image[label == 1] = 2.5
    image[label == 2] = 0.6
    image = image + 0.15 * torch.randn(height, width, generator=g)
    image = (image - image.mean()) / image.std()
    return image.float(), label


def high_frequency_energy(image: torch.Tensor, fraction: float) -> float:
    """Spectral energy beyond ``fraction`` of the Nyquist frequency (either axis)."""
    spectrum = torch.fft.fftshift(torch.fft.fft2(image - image.mean())).abs() ** 2
    h, w = image.shape
    fy = torch.fft.fftshift(torch.fft.fftfreq(h)).abs()[:, None] / 0.5
    fx = torch.fft.fftshift(torch.fft.fftfreq(w)).abs()[None, :] / 0.5
    return float(spectrum[(fy > fraction) | (fx > fraction)].sum())


def unit_median(image: torch.Tensor) -> float:
    return float(((image - image.min()) / (image.max() - image.min())).median())


def run(config, image=None, label=None, seed=0):
    image, label = phantom() if image is None else (image, label)
    return augment_slice(image.clone(), label.clone(), config, np.random.default_rng(seed))


# -- defaults -------------------------------------------------------------------------------------


def test_defaults_and_the_training_flags_build_the_same_config():
    from halsr_hf.training.train import DataArguments, augment_config

    config = AugmentConfig()
    assert config.scale_range == (0.7, 1.4) and config.dihedral
    assert augment_config(DataArguments()) == config
    custom = augment_config(DataArguments(scale_min=0.8, noise_prob=0.5, remap_prob=0.0, lowres_zoom_min=0.6))
    assert custom.scale_range == (0.8, 1.4) and custom.noise_prob == 0.5 and custom.remap_prob == 0.0
    assert custom.lowres_zoom_range == (0.6, 1.0)


def test_nothing_happens_with_every_probability_at_zero():
    image, label = phantom()
    out, out_label = run(only(), image, label)
    assert torch.equal(out, image) and torch.equal(out_label, label)


# -- intensity ------------------------------------------------------------------------------------


def test_brightness_multiplies_and_is_not_undone():
    image, label = phantom()
    out, _ = run(only("brightness"), image, label)
    factor = out / image
    assert float(factor.std()) < 1e-5 and 0.75 <= float(factor.mean()) <= 1.25 and abs(float(factor.mean()) - 1) > 1e-3
    assert float(out.std()) == pytest.approx(float(factor.mean()) * float(image.std()), rel=1e-4)


def test_contrast_changes_the_foreground_against_the_background():
    image, label = phantom()
    fg, bg = label == 1, label == 0
    for factor in (0.8, 1.2):
        out = A.adjust_contrast(image, factor)
        # the cavity-to-background difference scales by the factor (up to the clip of the brightest pixels)
        ratio = float(out[fg].mean() - out[bg].mean()) / float(image[fg].mean() - image[bg].mean())
        assert ratio == pytest.approx(factor, abs=0.08 if factor > 1 else 1e-3)
        assert float(out.std()) / float(image.std()) == pytest.approx(factor, abs=0.08)
        assert float(out.min()) >= float(image.min()) and float(out.max()) <= float(image.max())  # range kept
    # through the pipeline: the spread changes, the end of the pipeline does not restore it
    stds = [float(run(only("contrast"), image, label, seed)[0].std()) for seed in range(8)]
    assert max(abs(s - float(image.std())) for s in stds) > 0.05


def test_gamma_bends_the_unit_image_and_keeps_mean_and_std():
    image, _ = phantom()
    median = unit_median(image)
    darker, brighter = A.adjust_gamma(image, 1.5), A.adjust_gamma(image, 1.5, invert=True)
    assert unit_median(darker) < median - 0.03 and unit_median(brighter) > median + 0.03
    for out in (darker, brighter, A.adjust_gamma(image, 0.7)):
        assert float(out.mean()) == pytest.approx(float(image.mean()), abs=1e-4)
        assert float(out.std()) == pytest.approx(float(image.std()), rel=1e-4)
    for name in ("gamma", "inverted_gamma"):
        medians = [unit_median(run(only(name), seed=seed)[0]) for seed in range(6)]
        assert max(abs(m - median) for m in medians) > 0.02, name


def test_gamma_factors_fall_on_both_sides_of_one():
    rng = np.random.default_rng(0)
    draws = np.array([A._factor(rng, (0.7, 1.5)) for _ in range(400)])
    assert 0.4 < (draws < 1).mean() < 0.6 and draws.min() >= 0.7 and draws.max() <= 1.5


def test_random_curve_is_a_monotonic_lookup_or_has_one_mild_dip():
    rng = np.random.default_rng(0)
    for _ in range(50):
        curve = A.random_curve(rng, points=5, nonmonotonic_prob=0.0)
        assert curve.shape == (6,) and curve[0] == 0 and curve[-1] == pytest.approx(1) and (np.diff(curve) > 0).all()
    dips = [A.random_curve(rng, points=5, nonmonotonic_prob=1.0, dip=0.5) for _ in range(50)]
    for curve in dips:
        steps = np.diff(curve)
        assert (steps < 0).sum() == 1 and curve.min() == 0 and curve.max() == pytest.approx(1)
        assert -0.5 / 5 <= steps.min() < -0.2 * 0.5 / 5 / 1.1  # mild: a fraction of a mean rise (1 / 5)


def test_remapping_changes_the_histogram_keeps_stats_and_label():
    image, label = phantom()
    curve = np.array([0.0, 0.05, 0.15, 0.6, 0.9, 1.0], dtype=np.float32)
    out = A.remap_intensity(image, curve)
    bins = torch.linspace(float(image.min()), float(image.max()), 33)
    h_in, h_out = (torch.histogram(x, bins=bins)[0] / x.numel() for x in (image, out))
    assert float((h_in - h_out).abs().sum()) > 0.2
    assert float(out.mean()) == pytest.approx(float(image.mean()), abs=1e-4)
    assert float(out.std()) == pytest.approx(float(image.std()), rel=1e-4)
    # the identity curve is the identity
    torch.testing.assert_close(A.remap_intensity(image, np.linspace(0, 1, 6)), image, atol=1e-4, rtol=0)
    # through the pipeline: the image changes, the label does not
    out, out_label = run(only("remap"), image, label)
    assert float((out - image).abs().mean()) > 0.02 and torch.equal(out_label, label)


def test_bias_field_tilts_the_image_and_keeps_stats():
    image, _ = phantom()
    out = A.bias_field(image, [0.6, 0, 0, 0, 0])  # brighter to the right
    shifted_in, shifted_out = image - image.min(), out - out.min()
    w = image.shape[1]
    ratio_in = float(shifted_in[:, w // 2 :].mean() / shifted_in[:, : w // 2].mean())
    ratio_out = float(shifted_out[:, w // 2 :].mean() / shifted_out[:, : w // 2].mean())
    assert ratio_out > ratio_in * 1.3
    assert float(out.mean()) == pytest.approx(float(image.mean()), abs=1e-4)
    assert float(out.std()) == pytest.approx(float(image.std()), rel=1e-4)


# -- acquisition ----------------------------------------------------------------------------------


def test_blur_lowers_high_frequency_energy():
    image, label = phantom()
    out = A.gaussian_blur(image, 1.0, 1.0)
    assert high_frequency_energy(out, 0.5) < 0.1 * high_frequency_energy(image, 0.5)
    assert float(out.mean()) == pytest.approx(float(image.mean()), abs=1e-3)
    # anisotropic: sigma along y only smooths along y
    only_y = A.gaussian_blur(image, 1.0, 1e-3)
    assert float((only_y[:, 1:] - only_y[:, :-1]).abs().mean()) > 3 * float((only_y[1:] - only_y[:-1]).abs().mean()) * 0.5
    out, out_label = run(only("blur"), image, label)
    assert high_frequency_energy(out, 0.5) < 0.5 * high_frequency_energy(image, 0.5) and torch.equal(out_label, label)


def test_low_resolution_removes_the_top_frequencies():
    image, label = phantom()
    out = A.simulate_low_resolution(image, 0.5)
    assert out.shape == image.shape
    # above the new Nyquist frequency (half the old one) little is left
    assert high_frequency_energy(out, 0.6) < 0.1 * high_frequency_energy(image, 0.6)
    assert float(out.mean()) == pytest.approx(float(image.mean()), abs=1e-2)
    assert torch.equal(A.simulate_low_resolution(image, 1.0), image)
    out, out_label = run(only("lowres", lowres_zoom_range=(0.5, 0.6)), image, label)
    assert high_frequency_energy(out, 0.7) < 0.2 * high_frequency_energy(image, 0.7) and torch.equal(out_label, label)


def test_noise_adds_the_drawn_standard_deviation():
    image, label = phantom()
    out = A.gaussian_noise(image, 0.1, seed=3)
    assert float((out - image).std()) == pytest.approx(0.1, rel=0.05)
    assert torch.equal(out, A.gaussian_noise(image, 0.1, seed=3))
    out, out_label = run(only("noise"), image, label)
    residual = float((out - image).std())
    assert 0 < residual <= 0.1 * float(image.std()) * 1.05 and torch.equal(out_label, label)


# -- geometry -------------------------------------------------------------------------------------


def _image_of(label: torch.Tensor) -> torch.Tensor:
    image = torch.zeros(label.shape)
    image[label == 1], image[label == 2], image[label == 255] = 3.0, 1.5, -2.0
    return image


def _interior(mask: torch.Tensor) -> torch.Tensor:
    """The mask eroded by a 3x3 square."""
    return (-torch.nn.functional.max_pool2d(-mask[None, None].float(), 3, stride=1, padding=1))[0, 0] > 0.5


def test_warp_pins_its_conventions():
    image, label = phantom(64, 64)
    out, out_label = A.warp(image, label, math.pi / 2)
    torch.testing.assert_close(out, torch.rot90(image, -1), atol=1e-4, rtol=0)
    assert torch.equal(out_label, torch.rot90(label, -1))
    _, zoomed = A.warp(image, label, 0.0, (1.4, 1.4), centre=A._lv_centre(label))
    assert float((zoomed == 1).sum()) / float((label == 1).sum()) == pytest.approx(1.96, rel=0.1)
    _, stretched = A.warp(image, label, 0.0, (1.3, 1 / 1.3), centre=A._lv_centre(label))
    rows, cols = torch.nonzero(stretched == 1, as_tuple=True)
    rows0, cols0 = torch.nonzero(label == 1, as_tuple=True)
    aspect = float(cols.max() - cols.min() + 1) / float(rows.max() - rows.min() + 1)
    aspect0 = float(cols0.max() - cols0.min() + 1) / float(rows0.max() - rows0.min() + 1)
    assert aspect / aspect0 == pytest.approx(1.69, rel=0.12)


@pytest.mark.parametrize("name", ["rotation", "scale", "anisotropy", "elastic"])
def test_geometric_transforms_move_the_label_with_the_image(name):
    _, label = phantom()
    image = _image_of(label)
    moved = 0
    for seed in range(6):
        out, out_label = run(only(name), image, label, seed)
        assert out_label.dtype == torch.uint8 and set(out_label.unique().tolist()) <= {0, 1, 2, 255}
        # the image, drawn from the label, and the transformed label still agree
        for value, level in ((1, 3.0), (2, 1.5), (255, -2.0)):
            region = _interior(out_label == value)  # away from the region's edge, where bilinear blends
            assert region.sum() > 20, (name, seed, value)
            assert float((out[region] - level).abs().lt(0.5).float().mean()) > 0.95, (name, seed, value)
        moved += int(not torch.equal(out_label, label))
    assert moved >= 5, name


def test_the_ignore_label_survives_every_geometric_transform():
    image, label = phantom()
    config = only("rotation", "scale", "anisotropy", "elastic", dihedral=True)
    for seed in range(10):
        _, out_label = run(config, image, label, seed)
        ignored = int((out_label == 255).sum())
        # 255 is carried by nearest-neighbour sampling, never blended into a class
        assert ignored > 0 and set(out_label.unique().tolist()) <= {0, 1, 2, 255}
    # D4 alone is exact
    for seed in range(8):
        _, out_label = run(only(dihedral=True), image, label, seed)
        assert torch.equal(torch.bincount(out_label.flatten().long(), minlength=256), torch.bincount(label.flatten().long(), minlength=256))


def test_rotation_and_scaling_pivot_on_the_lv():
    image, label = phantom()
    centre = A._lv_centre(label)
    for seed in range(5):
        _, out_label = run(only("rotation", "scale", "anisotropy"), image, label, seed)
        moved = A._lv_centre(out_label)
        assert math.dist(moved, centre) < 2.0


# -- the whole pipeline ---------------------------------------------------------------------------


def test_augment_slice_keeps_shapes_dtypes_and_is_deterministic():
    image, label = phantom(96, 128)
    everything = AugmentConfig(**{p: 1.0 for p in PROBS})
    for config in (AugmentConfig(), everything):
        shapes = set()
        for seed in range(12):
            out, out_label = run(config, image, label, seed)
            assert out.dtype == torch.float32 and out_label.dtype == torch.uint8
            assert out.shape == out_label.shape and out.shape in ((96, 128), (128, 96)) and out.is_contiguous()
            assert torch.isfinite(out).all() and set(out_label.unique().tolist()) <= {0, 1, 2, 255}
            again, again_label = run(config, image, label, seed)
            assert torch.equal(out, again) and torch.equal(out_label, again_label)
            shapes.add(tuple(out.shape))
        assert len(shapes) == 2  # transposing D4 elements happen
    a, _ = run(everything, image, label, 0)
    b, _ = run(everything, image, label, 1)
    assert not torch.equal(a, b)


def test_default_output_is_not_renormalised_but_stays_in_a_sane_range():
    image, label = phantom()
    stds, means = [], []
    for seed in range(40):
        out, _ = run(AugmentConfig(), image, label, seed)
        stds.append(float(out.std()))
        means.append(float(out.mean()))
    stds, means = np.array(stds), np.array(means)
    assert stds.min() > 0.5 and stds.max() < 1.5 and np.abs(means).max() < 0.5
    # brightness survives, computed independently: with brightness alone each output is the input times
    # one factor f in brightness_range (least squares on the pixels, residual ~0), so its std is f, not 1
    factors = []
    for seed in range(40):
        out, _ = run(only("brightness"), image, label, seed)
        f = float((out * image).sum() / (image * image).sum())
        assert torch.allclose(out, image * f, atol=1e-5) and float(out.std()) == pytest.approx(f * float(image.std()), rel=1e-4)
        factors.append(f)
    assert min(factors) >= 0.75 and max(factors) <= 1.25 and max(factors) - min(factors) > 0.3  # spread over the range
    # contrast alone: (x - mean) * f + mean, clipped to the input's range
    out, _ = run(only("contrast"), image, label, 3)
    centred = image - image.mean()
    f = float(((out - image.mean()) * centred).sum() / (centred * centred).sum())
    inside = (out > image.min() + 1e-4) & (out < image.max() - 1e-4)
    assert 0.75 <= f <= 1.25 and torch.allclose(out[inside], (centred * f + image.mean())[inside], atol=1e-4)
