"""Overlays as in the paper's figures: LV cavity in red, myocardium in blue, ROI box in yellow."""

import numpy as np

#: RGB colour of each canonical class id.
COLORS = {1: (230, 30, 30), 2: (40, 90, 240), 3: (40, 200, 80)}
ROI_COLOR = (255, 220, 0)


def to_uint8_display(image: np.ndarray) -> np.ndarray:
    """Window a slice to its 0.5-99.5 percentiles and scale to 0-255 for display."""
    image = np.asarray(image, dtype=np.float32)
    low, high = np.percentile(image, (0.5, 99.5))
    if high <= low:
        high = low + 1.0
    return (np.clip((image - low) / (high - low), 0, 1) * 255).astype(np.uint8)


def overlay(image: np.ndarray, label_map: np.ndarray, roi=None, alpha: float = 0.45, contour_only: bool = False):
    """An RGB PIL image: the slice in gray, classes blended with ``alpha``, and the ROI box outline."""
    from PIL import Image, ImageDraw

    gray = to_uint8_display(image)
    rgb = np.repeat(gray[..., None], 3, axis=-1).astype(np.float32)
    label_map = np.asarray(label_map)
    for class_id, color in COLORS.items():
        region = label_map == class_id
        if region.any():
            rgb[region] = (1 - alpha) * rgb[region] + alpha * np.array(color, dtype=np.float32)
    result = Image.fromarray(rgb.clip(0, 255).astype(np.uint8), mode="RGB")
    if roi is not None:
        draw = ImageDraw.Draw(result)
        x0, y0, x1, y1 = (int(v) for v in roi)
        draw.rectangle([x0, y0, x1, y1], outline=ROI_COLOR, width=max(1, min(gray.shape) // 128))
    return result
