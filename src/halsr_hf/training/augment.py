"""On-the-fly augmentation of one normalised slice and its label map (torch/numpy only).

Everything here works on an *intensity-normalised* image (``normalize_intensity`` of the whole
slice, as at inference: 0.5-99.5 percentile clip, then z-score) and its uint8 label map, *before*
the crop: the caller recomputes the LV box from the transformed label, so the crop box follows
every geometric transform. The goal is a model that holds on other scanners, vendors and sequences;
nnU-Net v2's 2D set (``nnUNetTrainer.get_training_transforms``) is the reference for the
transforms, their ranges and their probabilities, with the deviations said below.
``docs/augmentation-samples.png`` (``scripts/augmentation_grid.py``) shows samples on ACDC, MyoPS
(cine and LGE) and EMIDEC slices.

Order (:func:`augment_slice`): :func:`intensity` (image content: bias field, intensity remapping,
inverted gamma, gamma, brightness, contrast), then the geometry (:func:`random_dihedral`,
:func:`geometric`), then :func:`acquisition` (simulated low resolution, blur, noise). Contrast-like
transforms come before the resampling so that the region outside the image stays 0 (what the
inference crop pads with); acquisition-like ones come after it, so that noise and blur are not
interpolated away by a zoom.

Geometry (one ``grid_sample`` for the non-exact part):

* a uniformly random element of the dihedral group D4 (the 8 combinations of 90-degree rotations
  and a transpose), always (``dihedral=True``): exact, no interpolation. This is what makes the
  model indifferent to the voxel orientation of other scanners/converters (transposed or mirrored
  slices), and it contains nnU-Net's mirroring;
* with ``rotation_prob``, a rotation uniform in ``+-rotation_degrees`` (45 by default: with D4, every
  angle of the circle is equally likely, as nnU-Net's 2D +-180 degrees);
* with ``scale_prob``, an isotropic scaling uniform in ``scale_range`` (nnU-Net's 0.7-1.4; > 1
  enlarges); with ``anisotropy_prob``, on top, a mild anisotropic scaling: x and y scaled by
  ``r**0.5`` and ``r**-0.5``, ``r`` log-uniform in ``[1 / (1 + anisotropy), 1 + anisotropy]``
  (non-square pixels resampled by a converter, a heart imaged slightly obliquely);
* with ``elastic_prob``, a smooth random displacement field (a coarse grid of Gaussian offsets,
  bicubically upsampled), up to ``elastic_magnitude`` of the image side (not in nnU-Net's default;
  kept from this project's earlier set).

Rotation and scaling are about the LV centre (the image centre without LV). Probabilities: nnU-Net
uses 0.2 for rotation and for scaling over 1000 epochs; training runs here last 15-50 epochs and
the earlier default applied rotation+scaling with 0.8, so 0.5 each (0.75 for either) is kept
closer to that. The image is resampled bilinearly, the label with nearest neighbour, so every label
value (255 = ignore included) is carried as is; outside the image: image 0 (the normalised mean,
the same padding value the inference crop uses) and label 0 (background, which is what the model
must predict on the padding of an inference crop).

Intensity, on the z-scored slice (nnU-Net apply probabilities; nnU-Net's ``p_per_channel=0.5`` of
blur and low resolution halves their effective rate on one channel, used here at the full apply
probability in favour of scanner variation):

* ``bias_prob`` 0.3: a smooth multiplicative bias field (exp of a random 2nd-order polynomial) on the
  positive-shifted image (coil sensitivity); the slice's mean and std are restored afterwards (it
  changes the spatial profile, not the global level: that is brightness's job);
* ``remap_prob`` 0.25: a random intensity curve on the [0, 1]-rescaled image (:func:`random_curve`,
  :func:`remap_intensity`), mean and std restored;
* ``inverted_gamma_prob`` 0.1 and ``gamma_prob`` 0.3: gamma in ``gamma_range`` (half the time below 1,
  half above, nnU-Net's ``BGContrast``) on the [0, 1]-rescaled image, once on the inverted image;
  mean and std restored (nnU-Net's ``p_retain_stats=1``);
* ``brightness_prob`` 0.15: multiplication by a factor in ``brightness_range`` (0.75-1.25);
* ``contrast_prob`` 0.15: ``(x - mean) * f + mean`` with ``f`` in ``contrast_range`` (0.75-1.25),
  clipped to the image's range before the transform (nnU-Net's ``preserve_range``: a stronger
  contrast saturates the bright blood pool and the dark lungs instead of extending them);
* ``lowres_prob`` 0.25: simulated low resolution, the slice downsampled by a zoom uniform in
  ``lowres_zoom_range`` (0.5-1: 1-2x coarser) with area averaging (a coarser acquisition averages
  the finer pixels; nnU-Net uses nearest) and brought back with bilinear interpolation;
* ``blur_prob`` 0.2: Gaussian blur, sigma uniform in ``blur_sigma_range`` (0.5-1 pixel) per axis;
* ``noise_prob`` 0.1: additive Gaussian noise of standard deviation uniform in ``[0, noise_std]``
  (0.1: nnU-Net's range, in units of the slice's standard deviation).

**Output normalisation: none at the end.** The transforms that reshape the histogram (bias field,
remapping, gamma) keep the slice's mean and std; brightness, contrast and noise change them on
purpose. Restoring the input's mean and std at the end (as this module did before) cancels a
linear transform (brightness, contrast) exactly. It is not needed either: at inference the whole
slice is z-scored but the crop the network sees is not, and the heart's intensities in a z-scored
slice vary widely between datasets (with the field of view, the background, the sequence).
Measured with ``normalize_intensity`` on the LV (cavity + myocardium) of real slices, median
[5th-95th percentile] of the LV's mean / std in z units: ACDC 0.83 [-0.10, 1.86] / 0.86
[0.28, 1.37]; MyoPS cine 1.38 [0.89, 2.10] / 0.96 [0.69, 1.25]; MyoPS LGE 0.79 [0.03, 1.87] / 0.81
[0.38, 1.40]; EMIDEC LGE 0.38 [-0.03, 0.79] / 0.18 [0.10, 0.35]. A +-25% gain of the z-scored
slice is well inside what the crop sees across sources.

**Intensity remapping (vendor contrast).** Scanners, vendors and sequences map the same tissues to
different grey levels: the blood/myocardium/fat/lung order is kept in cine (bSSFP) but their
spacing and the histogram's shape differ, and late enhancement (LGE) makes the myocardium darker
than the blood with bright scar inside it. Gamma alone is one global bend; the remapping is a
random piecewise-linear lookup curve on the [0, 1]-rescaled slice: ``remap_points`` equal segments,
their rises drawn from a Dirichlet distribution (``remap_alpha`` 4: slopes 0.4-1.8x identity for
90% of the segments, half of them within 0.7-1.3x; larger = closer to identity), so the curve is
monotonic, starts at 0 and ends at 1; with ``remap_nonmonotonic_prob`` (0.3 of the remaps) one
segment falls instead (by 0.2-1 x ``remap_dip`` of a mean rise), a mild tissue-order swap over a
narrow intensity band, as between cine and LGE. A piecewise-linear curve (MONAI's
``RandHistogramShift`` draws the same kind of curve) rather than a spline: no overshoot outside
[0, 1], monotonic by construction when wanted, and the lookup is two gathers (about 1 ms with the
stats restore). The slice's mean and std are restored after it.

**Library decision: plain torch, no MONAI/TorchIO/batchgenerators.** MONAI 1.6.1 installs beside
torch 2.13.0 without another torch and has all of these transforms, but measured on this 2-core
machine (256x256 slice, 1 thread, load ~0.9) its array transforms cost per call: Gaussian noise
1.7 ms, Gaussian smoothing 2.5 ms, histogram shift 1.9 ms, bias field 1.1 ms, affine 2.5 ms (twice:
image and label), 2D elastic 10.5 ms; the whole set with every transform on is over 20 ms against
the < 10 ms budget, and its rotation/scaling and elastic field are two resamplings about the image
centre where this module does one about the LV centre. Its randomness is ``np.random.RandomState``
per transform (re-seeding from the caller's ``Generator`` on every call works but adds a second
random state to keep in step), it returns ``MetaTensor``s to convert back, and it adds a 4 s import
to every training process. TorchIO is built around 4D (C, W, H, D) subjects and draws from
torch's global RNG; batchgenerators, and batchgeneratorsv2 (nnU-Net v2's own transforms), pull
scikit-image, scikit-learn and unittest2 and draw from numpy's/torch's global RNG. Each transform
here is a few lines of torch, tested one by one in ``tests/test_augment.py``; no dependency added.

**Speed** (``scripts/augmentation_grid.py --time``: the 256x256 EMIDEC slice, default config, one
thread, mean over 2000 calls), measured on the 2-core machine shared with a training run and other
test runs: 4.7 ms wall / 2.7 ms CPU per slice at load average 7.3 (``os.getloadavg()``; the wall
time includes waiting for a core); 2.9 ms wall at load 2.9 before the blur and elastic-field
speed-ups. In one process, alternating blocks at load 6.9: 3.4 ms CPU for this set against 3.8 ms for
the previous, smaller set. Every transform on at once: about 11 ms wall at load 2.2.

Everything random is drawn from the ``rng`` passed in (noise through a ``torch.Generator`` seeded
from it), in a fixed order: a slice, a config and a seed give one output.
"""

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

from .augment_config import AugmentConfig  # noqa: F401  (defined without torch, for the argument parser)


def _factor(rng: np.random.Generator, value_range) -> float:
    """nnU-Net's ``BGContrast``: for a range around 1, below 1 or above 1 with equal chance, then
    uniform on that side (so a range like 0.7-1.5 does not favour brightening)."""
    low, high = value_range
    if low < 1 < high and rng.random() < 0.5:
        return float(rng.uniform(low, 1.0))
    return float(rng.uniform(max(low, 1.0), high)) if high > 1 else float(rng.uniform(low, high))


def _retain_stats(out: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    mean, std = reference.mean(), reference.std()
    return (out - out.mean()) / out.std().clamp_min(1e-6) * std + mean


def _unit(image: torch.Tensor) -> tuple:
    low, high = image.min(), image.max()
    span = (high - low).clamp_min(1e-6)
    return (image - low) / span, low, span


# -- geometry -------------------------------------------------------------------------------------


def random_dihedral(image: torch.Tensor, label: torch.Tensor, rng: np.random.Generator):
    """A uniformly random element of D4 applied to (..., H, W) tensors: k x 90 degrees, then an
    optional transpose. Returns the transformed tensors and (k, transposed)."""
    k = int(rng.integers(4))
    transpose = bool(rng.integers(2))
    image, label = torch.rot90(image, k, dims=(-2, -1)), torch.rot90(label, k, dims=(-2, -1))
    if transpose:
        image, label = image.transpose(-2, -1), label.transpose(-2, -1)
    return image.contiguous(), label.contiguous(), (k, transpose)


def _lv_centre(label: torch.Tensor):
    rows, cols = torch.nonzero((label > 0) & (label != 255), as_tuple=True)
    if rows.numel() == 0:
        return None
    return (float(cols.min() + cols.max() + 1) / 2, float(rows.min() + rows.max() + 1) / 2)


def warp(image: torch.Tensor, label: torch.Tensor, angle: float = 0.0, scale=(1.0, 1.0), centre=None, field=None):
    """Resample (H, W) image (bilinear) and label (nearest) with one ``grid_sample``: the output is
    the input rotated by ``angle`` radians (clockwise as displayed, rows down: ``pi / 2`` is
    ``torch.rot90(x, -1)``) and scaled by ``scale`` = (sx, sy) about ``centre`` (x, y in pixels;
    default the image centre), then displaced by ``field`` (2, H, W) (source offsets in pixels, x
    then y). Outside the input: image 0, label 0."""
    height, width = image.shape
    c = np.array(centre if centre is not None else (width / 2, height / 2), dtype=np.float64)
    # output pixel p (continuous, pixel i covers [i, i + 1)) -> input A (p - c) + c, A = S^-1 R(-angle);
    # in grid_sample's coordinates n = p / P - 1 (P = diag(W, H) / 2): n -> P^-1 A P n + t
    cos, sin = math.cos(angle), math.sin(angle)
    a = np.array([[cos / scale[0], sin / scale[0]], [-sin / scale[1], cos / scale[1]]])
    half = np.array([width / 2, height / 2])
    linear = a * half[None, :] / half[:, None]
    shift = (a @ (half - c) + c) / half - 1
    theta = torch.from_numpy(np.concatenate([linear, shift[:, None]], axis=1)[None].astype(np.float32))
    grid = F.affine_grid(theta, [1, 1, height, width], align_corners=False)
    if field is not None:
        grid = grid + (field / torch.tensor([width / 2, height / 2]).view(2, 1, 1)).permute(1, 2, 0)[None]
    image = F.grid_sample(image[None, None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0, 0]
    label = F.grid_sample(label[None, None].float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)[0, 0]
    return image, label.to(torch.uint8)


@functools.lru_cache(maxsize=64)
def _cubic_weights(points: int, size: int) -> torch.Tensor:
    """(points, size): 1D bicubic interpolation (align_corners) from ``points`` knots to ``size``
    samples. ``Wy.T @ coarse @ Wx`` equals ``F.interpolate(coarse, mode="bicubic")`` (separable) at a
    twentieth of its cost on one CPU thread."""
    eye = torch.eye(points).view(points, 1, points, 1)
    return F.interpolate(eye, size=(size, 1), mode="bicubic", align_corners=True)[:, 0, :, 0].contiguous()


def geometric(image: torch.Tensor, label: torch.Tensor, config: AugmentConfig, rng: np.random.Generator):
    """Rotation, isotropic and anisotropic scaling about the LV centre and elastic deformation, in
    one resampling; (H, W) float image, (H, W) uint8 label."""
    height, width = image.shape
    do_rotation = rng.random() < config.rotation_prob
    do_scale = rng.random() < config.scale_prob
    do_anisotropy = rng.random() < config.anisotropy_prob
    do_elastic = rng.random() < config.elastic_prob
    angle = math.radians(rng.uniform(-config.rotation_degrees, config.rotation_degrees)) if do_rotation else 0.0
    scale = float(rng.uniform(*config.scale_range)) if do_scale else 1.0
    ratio = math.exp(rng.uniform(-1, 1) * math.log1p(config.anisotropy)) if do_anisotropy else 1.0
    field = None
    if do_elastic:
        grid = config.elastic_grid
        coarse = torch.from_numpy(rng.normal(0.0, config.elastic_magnitude * max(height, width), size=(2, grid, grid)).astype(np.float32))
        field = _cubic_weights(grid, height).T @ coarse @ _cubic_weights(grid, width)
    if not (do_rotation or do_scale or do_anisotropy or do_elastic):
        return image, label
    scales = (scale * math.sqrt(ratio), scale / math.sqrt(ratio))
    return warp(image, label, angle, scales, _lv_centre(label), field)


# -- image content --------------------------------------------------------------------------------


def bias_field(image: torch.Tensor, coefficients) -> torch.Tensor:
    """Multiply the positive-shifted image by exp(c0 x + c1 y + c2 xy + c3 x^2 + c4 y^2) (x, y in
    [-1, 1]); the image's mean and std are restored."""
    height, width = image.shape
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij")
    c = [float(v) for v in coefficients]
    log_field = c[0] * xs + c[1] * ys + c[2] * xs * ys + c[3] * xs**2 + c[4] * ys**2
    low = image.min()
    return _retain_stats((image - low) * torch.exp(log_field) + low, image)


def random_curve(rng: np.random.Generator, points: int = 5, alpha: float = 4.0, nonmonotonic_prob: float = 0.3,
                 dip: float = 0.5) -> np.ndarray:
    """A lookup curve on [0, 1]: its values at ``points + 1`` equally spaced knots. Monotonic (rises
    from a Dirichlet(alpha) distribution) from 0 to 1; with ``nonmonotonic_prob`` one segment falls
    by 0.2-1 x ``dip`` of a mean rise (1 / points), the others rising by that much more, and the curve
    is rescaled to [0, 1] (when the fall is at either end)."""
    if points > 1 and rng.random() < nonmonotonic_prob:
        fall = rng.uniform(0.2, 1.0) * dip / points
        falling = int(rng.integers(points))
        rises = np.insert(rng.dirichlet(np.full(points - 1, alpha)) * (1 + fall), falling, -fall)
    else:
        rises = rng.dirichlet(np.full(points, alpha))
    curve = np.concatenate([[0.0], np.cumsum(rises)])
    curve = (curve - curve.min()) / max(curve.max() - curve.min(), 1e-6)
    return curve.astype(np.float32)


def remap_intensity(image: torch.Tensor, curve) -> torch.Tensor:
    """Apply a lookup ``curve`` (values at equally spaced knots of [0, 1], linear in between) to the
    [0, 1]-rescaled image; the image's mean and std are restored."""
    curve = torch.as_tensor(curve, dtype=torch.float32)
    segments = curve.numel() - 1
    unit, _, _ = _unit(image)
    slopes = curve[1:] - curve[:-1]
    position = unit * segments
    index = position.floor().clamp(max=segments - 1)
    mapped = torch.take(curve, index.long()) + (position - index) * torch.take(slopes, index.long())
    return _retain_stats(mapped, image)


def adjust_gamma(image: torch.Tensor, gamma: float, invert: bool = False) -> torch.Tensor:
    """``unit ** gamma`` on the [0, 1]-rescaled image (of ``-image`` with ``invert``: bends the dark
    end instead of the bright one); the image's mean and std are restored."""
    source = -image if invert else image
    unit, low, span = _unit(source)
    out = unit**gamma * span + low
    return _retain_stats(-out if invert else out, image)


def multiply_brightness(image: torch.Tensor, factor: float) -> torch.Tensor:
    return image * factor


def adjust_contrast(image: torch.Tensor, factor: float) -> torch.Tensor:
    """``(x - mean) * factor + mean``, clipped to the image's range before the transform."""
    mean = image.mean()
    return ((image - mean) * factor + mean).clamp(image.min(), image.max())


def intensity(image: torch.Tensor, config: AugmentConfig, rng: np.random.Generator) -> torch.Tensor:
    """Bias field, remapping, inverted gamma, gamma, brightness, contrast (each with its probability)."""
    out = image
    if rng.random() < config.bias_prob:
        out = bias_field(out, rng.normal(0.0, config.bias_strength / 2, size=5))
    if rng.random() < config.remap_prob:
        out = remap_intensity(out, random_curve(rng, config.remap_points, config.remap_alpha,
                                                config.remap_nonmonotonic_prob, config.remap_dip))
    if rng.random() < config.inverted_gamma_prob:
        out = adjust_gamma(out, _factor(rng, config.gamma_range), invert=True)
    if rng.random() < config.gamma_prob:
        out = adjust_gamma(out, _factor(rng, config.gamma_range))
    if rng.random() < config.brightness_prob:
        out = multiply_brightness(out, _factor(rng, config.brightness_range))
    if rng.random() < config.contrast_prob:
        out = adjust_contrast(out, _factor(rng, config.contrast_range))
    return out


# -- acquisition ----------------------------------------------------------------------------------


def simulate_low_resolution(image: torch.Tensor, zoom: float) -> torch.Tensor:
    """Downsample by ``zoom`` (< 1) with area averaging, then back to the input size bilinearly."""
    height, width = image.shape
    small = (max(1, round(height * zoom)), max(1, round(width * zoom)))
    if small == (height, width):
        return image
    coarse = F.interpolate(image[None, None], size=small, mode="area")
    return F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)[0, 0]


def _gaussian_kernel(sigma: float) -> torch.Tensor:
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def _blur_axis(image: torch.Tensor, sigma: float, dim: int) -> torch.Tensor:
    kernel = _gaussian_kernel(sigma).tolist()
    radius = len(kernel) // 2
    pad = (0, 0, radius, radius) if dim == 0 else (radius, radius, 0, 0)
    padded = F.pad(image[None, None], pad, mode="reflect")[0, 0]
    size = image.shape[dim]
    # a weighted sum of shifted views: a few times faster than a one-channel conv2d on the CPU
    out = padded.narrow(dim, 0, size) * kernel[0]
    for offset, weight in enumerate(kernel[1:], start=1):
        out.add_(padded.narrow(dim, offset, size), alpha=weight)
    return out


def gaussian_blur(image: torch.Tensor, sigma_y: float, sigma_x: float) -> torch.Tensor:
    """Separable Gaussian blur (sigmas in pixels), reflected borders."""
    return _blur_axis(_blur_axis(image, sigma_y, 0), sigma_x, 1)


def gaussian_noise(image: torch.Tensor, std: float, seed: int) -> torch.Tensor:
    return image + torch.randn(image.shape, generator=torch.Generator().manual_seed(int(seed))) * std


def acquisition(image: torch.Tensor, config: AugmentConfig, rng: np.random.Generator) -> torch.Tensor:
    """Simulated low resolution, blur, noise (each with its probability)."""
    out = image
    if rng.random() < config.lowres_prob:
        out = simulate_low_resolution(out, float(rng.uniform(*config.lowres_zoom_range)))
    if rng.random() < config.blur_prob:
        out = gaussian_blur(out, float(rng.uniform(*config.blur_sigma_range)), float(rng.uniform(*config.blur_sigma_range)))
    if rng.random() < config.noise_prob:
        std = float(rng.uniform(0, config.noise_std)) * float(out.std())
        out = gaussian_noise(out, std, int(rng.integers(2**31)))
    return out


def augment_slice(image: torch.Tensor, label: torch.Tensor, config: AugmentConfig, rng: np.random.Generator):
    """Full augmentation of one (H, W) normalised float32 image and its (H, W) uint8 label map.
    Returns (image, label), float32 and uint8, of shape (H, W) or (W, H) (a transposing D4 element)."""
    image = intensity(image, config, rng)
    if config.dihedral:
        image, label, _ = random_dihedral(image, label, rng)
    image, label = geometric(image, label, config, rng)
    return acquisition(image, config, rng).contiguous(), label
