"""On-the-fly augmentation of one normalised slice and its label map (torch/numpy only).

Everything here works on an *intensity-normalised* image (``normalize_intensity`` of the whole
slice, as at inference) and its label map, *before* the crop: the caller recomputes the LV box from
the transformed label, so the crop box follows every geometric transform.

Geometry (one ``grid_sample`` for the non-exact part):

* a uniformly random element of the dihedral group D4 (the 8 combinations of 90-degree rotations
  and a transpose), always (``dihedral=True``): exact, no interpolation. This is what makes the
  model indifferent to the voxel orientation of other scanners/converters (transposed or mirrored
  slices);
* on top, with probability ``affine_prob``: a rotation uniform in ``+-rotation_degrees`` and an
  isotropic scaling uniform in ``scale_range``, about the LV centre (the image centre without LV);
* with probability ``elastic_prob``: a smooth random displacement field (a coarse grid of Gaussian
  offsets, bicubically upsampled), up to ``elastic_magnitude`` of the image side.

The image is resampled bilinearly, the label with nearest neighbour; outside the image: zeros
(the normalised mean, the same padding value the inference crop uses).

Intensity (on the normalised image, then the image's own mean and standard deviation are restored,
so a whole slice stays z-scored as at inference): gamma in ``gamma_range`` on the [0, 1]-rescaled
image, contrast/brightness, a smooth multiplicative bias field (exp of a random low-order
polynomial), Gaussian noise.
"""

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class AugmentConfig:
    dihedral: bool = True
    affine_prob: float = 0.8
    rotation_degrees: float = 30.0
    scale_range: tuple = (0.85, 1.2)
    elastic_prob: float = 0.3
    elastic_magnitude: float = 0.03
    elastic_grid: int = 5
    gamma_prob: float = 0.5
    gamma_range: tuple = (0.7, 1.5)
    contrast_prob: float = 0.3
    contrast_range: tuple = (0.75, 1.25)
    bias_prob: float = 0.3
    bias_strength: float = 0.3
    noise_prob: float = 0.3
    noise_std: float = 0.1


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
    rows, cols = torch.nonzero(label > 0, as_tuple=True)
    if rows.numel() == 0:
        return None
    return (float(cols.min() + cols.max() + 1) / 2, float(rows.min() + rows.max() + 1) / 2)


def geometric(image: torch.Tensor, label: torch.Tensor, config: AugmentConfig, rng: np.random.Generator):
    """Rotation/scaling about the LV centre and elastic deformation; (H, W) float image, (H, W) label."""
    height, width = image.shape
    do_affine = rng.random() < config.affine_prob
    do_elastic = rng.random() < config.elastic_prob
    if not (do_affine or do_elastic):
        return image, label
    centre = _lv_centre(label) or (width / 2, height / 2)
    angle = math.radians(rng.uniform(-config.rotation_degrees, config.rotation_degrees)) if do_affine else 0.0
    scale = rng.uniform(*config.scale_range) if do_affine else 1.0
    # output pixel centre p (pixels) -> input pixel R(-angle)/scale (p - c) + c
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float32) + 0.5, torch.arange(width, dtype=torch.float32) + 0.5, indexing="ij")
    dx, dy = xs - centre[0], ys - centre[1]
    cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
    src_x = cos * dx + sin * dy + centre[0]
    src_y = -sin * dx + cos * dy + centre[1]
    if do_elastic:
        side = max(height, width)
        coarse = torch.from_numpy(rng.normal(0.0, config.elastic_magnitude * side, size=(1, 2, config.elastic_grid, config.elastic_grid)).astype(np.float32))
        field = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=True)[0]
        src_x, src_y = src_x + field[0], src_y + field[1]
    grid = torch.stack([src_x / width * 2 - 1, src_y / height * 2 - 1], dim=-1)[None]
    image = F.grid_sample(image[None, None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0, 0]
    label = F.grid_sample(label[None, None].float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)[0, 0]
    return image, label.to(torch.uint8)


def intensity(image: torch.Tensor, config: AugmentConfig, rng: np.random.Generator) -> torch.Tensor:
    """Gamma, contrast, bias field and noise; the image's mean and std are restored afterwards."""
    mean, std = image.mean(), image.std().clamp_min(1e-6)
    out = image
    if rng.random() < config.gamma_prob:
        low, high = out.min(), out.max()
        unit = (out - low) / (high - low).clamp_min(1e-6)
        out = unit ** rng.uniform(*config.gamma_range) * (high - low) + low
    if rng.random() < config.contrast_prob:
        out = (out - out.mean()) * rng.uniform(*config.contrast_range) + out.mean()
    if rng.random() < config.bias_prob:
        height, width = out.shape
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij")
        c = rng.normal(0.0, config.bias_strength / 2, size=5).astype(np.float32)
        log_field = c[0] * xs + c[1] * ys + c[2] * xs * ys + c[3] * xs**2 + c[4] * ys**2
        low = out.min()
        out = (out - low) * torch.exp(log_field) + low  # multiplicative on the positive-shifted image
    if rng.random() < config.noise_prob:
        out = out + torch.randn(out.shape, generator=torch.Generator().manual_seed(int(rng.integers(2**31)))) * (
            rng.uniform(0, config.noise_std) * float(out.std())
        )
    out = (out - out.mean()) / out.std().clamp_min(1e-6) * std + mean
    return out


def augment_slice(image: torch.Tensor, label: torch.Tensor, config: AugmentConfig, rng: np.random.Generator):
    """Full augmentation of one (H, W) normalised image and its (H, W) uint8 label map."""
    image = intensity(image, config, rng)
    if config.dihedral:
        image, label, _ = random_dihedral(image, label, rng)
    return geometric(image, label, config, rng)
