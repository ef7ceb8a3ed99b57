"""The augmentation parameters (:class:`AugmentConfig`), without torch: the argument parser of
``halsr-hf train`` reads their defaults (its ``--help`` loads neither torch nor transformers).
What each transform does: :mod:`halsr_hf.training.augment`."""

from dataclasses import dataclass


@dataclass
class AugmentConfig:
    """Augmentation parameters; probabilities are per slice. See the module docstring for each."""

    # geometry
    dihedral: bool = True
    rotation_prob: float = 0.5
    rotation_degrees: float = 45.0
    scale_prob: float = 0.5
    scale_range: tuple = (0.7, 1.4)
    anisotropy_prob: float = 0.2
    anisotropy: float = 0.15
    elastic_prob: float = 0.3
    elastic_magnitude: float = 0.03
    elastic_grid: int = 5
    # image content (before the geometry)
    bias_prob: float = 0.3
    bias_strength: float = 0.3
    remap_prob: float = 0.25
    remap_points: int = 5
    remap_alpha: float = 4.0
    remap_nonmonotonic_prob: float = 0.3
    remap_dip: float = 0.5
    inverted_gamma_prob: float = 0.1
    gamma_prob: float = 0.3
    gamma_range: tuple = (0.7, 1.5)
    brightness_prob: float = 0.15
    brightness_range: tuple = (0.75, 1.25)
    contrast_prob: float = 0.15
    contrast_range: tuple = (0.75, 1.25)
    # acquisition (after the geometry)
    lowres_prob: float = 0.25
    lowres_zoom_range: tuple = (0.5, 1.0)
    blur_prob: float = 0.2
    blur_sigma_range: tuple = (0.5, 1.0)
    noise_prob: float = 0.1
    noise_std: float = 0.1
