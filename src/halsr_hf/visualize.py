"""Overlays as in the paper's figures: LV cavity in red, myocardium in blue, ROI box in yellow.

The one drawing code of the package: the Space, ``halsr-hf segment`` and the pictures of a cohort
(:func:`montage` per subject, :func:`ef_histogram`, :func:`volume_curve`; ``halsr-hf predict``)
all use :func:`overlay`."""

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


# ---- pictures of a cohort (halsr_hf.cohort): drawn from the same overlays ---------------------------

#: Colour of the frame and mark of a slice with a warning flag (``roi_stage.WARNING_FLAGS``).
WARNING_COLOR = (255, 140, 0)
#: Layout of :func:`montage` in pixels: tile side, the phase-label column, the caption under each
#: tile, the title band.
MONTAGE_TILE, MONTAGE_LABEL_WIDTH, MONTAGE_CAPTION, MONTAGE_HEADER = 160, 56, 26, 24


def _crop_box(label_maps, rois, shape, margin: float = 0.6):
    """A square around every segmented pixel and ROI box of a subject (the heart, the same window
    on every tile), ``margin`` of its side added on each side; the whole slice when there is none."""
    height, width = shape
    ys, xs = [], []
    for label_map in label_maps:
        found = np.nonzero(np.asarray(label_map))
        ys += [found[0].min(), found[0].max()] if found[0].size else []
        xs += [found[1].min(), found[1].max()] if found[1].size else []
    for roi in rois:
        if roi is not None:
            xs += [roi[0], roi[2]]
            ys += [roi[1], roi[3]]
    if not xs:
        return 0, 0, width, height
    side = max(max(xs) - min(xs), max(ys) - min(ys)) * (1 + 2 * margin) + 1
    cx, cy = (min(xs) + max(xs) + 1) / 2, (min(ys) + max(ys) + 1) / 2
    x0, y0 = int(max(round(cx - side / 2), 0)), int(max(round(cy - side / 2), 0))
    return x0, y0, int(min(round(cx + side / 2), width)), int(min(round(cy + side / 2), height))


def montage(rows, title: str = "", tile: int = MONTAGE_TILE):
    """A QC montage in the style of UK Biobank's: one row per phase (ED, ES...), one tile per slice
    (base to apex in stack order), each the :func:`overlay` of the slice (LV cavity red, myocardium
    blue, ROI box yellow) on one window around the heart shared by all tiles. A slice with a
    warning flag gets an orange frame and its flags written under it; a slice where nothing was
    segmented says so.

    ``rows``: a list of ``(label, images, label_maps, rois, warnings)`` with, per slice, the image,
    its label map, its ROI box (or None) and its list of warning flags. Returns an RGB PIL image."""
    from PIL import Image, ImageDraw

    shape = np.asarray(rows[0][1][0]).shape
    x0, y0, x1, y1 = _crop_box([m for row in rows for m in row[2]], [r for row in rows for r in row[3]], shape)
    columns = max(len(row[1]) for row in rows)
    label_width, caption, header = MONTAGE_LABEL_WIDTH, MONTAGE_CAPTION, MONTAGE_HEADER if title else 4
    sheet = Image.new("RGB", (label_width + columns * (tile + 4), header + len(rows) * (tile + caption + 4)), (20, 20, 20))
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((6, 5), title, fill=(235, 235, 235))
    for r, (label, images, label_maps, rois, warnings) in enumerate(rows):
        top = header + r * (tile + caption + 4)
        draw.text((6, top + tile // 2 - 6), str(label), fill=(235, 235, 235))
        for z, (image, label_map) in enumerate(zip(images, label_maps)):
            roi = rois[z]
            shifted = None if roi is None else [roi[0] - x0, roi[1] - y0, roi[2] - x0, roi[3] - y0]
            picture = overlay(np.asarray(image)[y0:y1, x0:x1], np.asarray(label_map)[y0:y1, x0:x1], shifted)
            picture = picture.resize((tile, tile), resample=Image.Resampling.NEAREST)
            left = label_width + z * (tile + 4)
            sheet.paste(picture, (left, top))
            flags = list(warnings[z] or [])
            segmented = bool(np.any(np.asarray(label_map) > 0))
            text = f"z{z}" + ("" if segmented else " nothing segmented")
            if flags:
                draw.rectangle([left - 2, top - 2, left + tile + 1, top + tile + 1], outline=WARNING_COLOR, width=3)
                draw.text((left + 4, top + 3), "!", fill=WARNING_COLOR)
                text += " ! " + ", ".join(flag.replace("_", " ") for flag in flags)
            draw.text((left, top + tile + 2), _fit(text, tile), fill=WARNING_COLOR if flags else (200, 200, 200))
            if len(text) * 6 > tile:  # a second line for long flag lists
                draw.text((left, top + tile + 13), _fit(text[len(_fit(text, tile)):].lstrip(), tile),
                          fill=WARNING_COLOR if flags else (200, 200, 200))
    return sheet


def _fit(text: str, width: int) -> str:
    """The part of ``text`` that fits in ``width`` pixels of PIL's default font (6 px a character)."""
    return text[: max(width // 6, 1)]


def ef_histogram(path, ef: list, flagged: dict | None = None):
    """The cohort overview (PNG at ``path``): the EF histogram in 5-point bins with whole-number
    subject counts and a labelled median line, and beside it the subjects with warnings
    (``flagged``: subject -> what to check), so that the ones to look at are named. Returns the
    matplotlib ``Figure``."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend
    from matplotlib.ticker import MaxNLocator

    flagged = flagged or {}
    figure = Figure(figsize=(8.5 if flagged else 5.5, 3.4), dpi=100)
    axes = figure.add_axes([0.09, 0.15, 0.5 if flagged else 0.86, 0.72])
    axes.hist(np.clip(ef, 0, 100), bins=np.arange(0, 105, 5), color="tab:blue", edgecolor="white")
    median = float(np.median(ef))
    axes.axvline(median, color="black", linestyle="--", linewidth=1)
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlim(0, 100)
    axes.set_ylim(0, axes.get_ylim()[1] * 1.15)  # room for the median's label
    axes.text(median + 1, axes.get_ylim()[1] * 0.97, f"median {median:.1f} %", rotation=90, va="top", ha="left", fontsize=8)
    axes.set_xlabel("LV ejection fraction (%)")
    axes.set_ylabel("subjects")
    axes.set_title(f"EF of {len(ef)} subjects", fontsize=10)
    if flagged:
        shown = list(flagged.items())[:14]
        lines = [f"{name}: {what}" for name, what in shown]
        if len(flagged) > len(shown):
            lines.append(f"... and {len(flagged) - len(shown)} more (cohort.csv)")
        figure.text(0.63, 0.87, f"subjects with warnings ({len(flagged)}):", fontsize=9, weight="bold", va="top")
        figure.text(0.63, 0.80, "\n".join(_short(line, 48) for line in lines), fontsize=7.5, va="top", family="monospace")
    figure.savefig(path, format="png")
    return figure


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def volume_curve(path, frames: list, volumes: list, unit: str, title: str, marks: dict):
    """The LV volume curve (PNG at ``path``): volume per frame, whole-number frame ticks, the
    frames of ``marks`` (``{"ED": 0, "ES": 9}``) labelled. Returns the matplotlib ``Figure``."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(5, 3), dpi=100)
    axes = figure.add_subplot()
    axes.plot(frames, volumes, "o-", color="tab:red", markersize=3)
    for label, t in marks.items():
        if t is not None:
            axes.annotate(label, (t, volumes[frames.index(t)]), textcoords="offset points", xytext=(0, 6), ha="center")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.margins(x=0.05, y=0.15)  # room for the ED/ES labels
    axes.set_xlabel("frame")
    axes.set_ylabel(f"LV cavity volume ({unit})")
    axes.set_title(title, fontsize=10)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, format="png")
    return figure


# ---- the words of the summaries: one vocabulary for the Space, the command line and the cohorts ----

#: What can be said of a slice, from its result's fields (never from its message): the ROI stage
#: found the LV (``lv_found``), something was segmented (a cavity or myocardium area above 0), or
#: nothing was.
LV_LOCATED, SEGMENTED, NOTHING_SEGMENTED = "LV located", "segmented", "nothing segmented"


def _slices(result) -> list:
    return result.get("slices") or [result] if isinstance(result, dict) else list(result)


def is_segmented(item: dict) -> bool:
    """Whether a slice's result has an LV cavity or myocardium area above 0."""
    areas = item.get("areas_px") or {}
    return bool(areas.get("lv_cavity", 0) or areas.get("myocardium", 0))


def slice_words(item: dict) -> str:
    """``"LV located, segmented"``, ``"LV located, nothing segmented"``, ``"LV not located,
    nothing segmented"`` or ``"LV not located, segmented"`` (a box from the volume consensus, or
    whole slices)."""
    located = LV_LOCATED if item.get("lv_found") else "LV not located"
    return f"{located}, {SEGMENTED if is_segmented(item) else NOTHING_SEGMENTED}"


def _numbers(indices) -> str:
    return ", ".join(str(i) for i in indices)


def summary_lines(result) -> list:
    """What happened to a slice or a volume (a pipeline result, or a list of per-slice results), in
    a few lines of the one vocabulary: where the LV was located, what was segmented, and which
    slices have a warning flag (``qc_warnings``, else the warning flags of ``qc``), e.g.
    ``["LV located on 9 of 10 slices; segmented: 9; nothing segmented on slice 0",
    "warnings on slice 4 (several_components): check it"]``."""
    from .roi_stage import split_flags

    slices = _slices(result)
    warnings = [item.get("qc_warnings") if item.get("qc_warnings") is not None else split_flags(item.get("qc") or [])[0]
                for item in slices]
    if len(slices) == 1:
        lines = [f"{slice_words(slices[0])}."]
        if warnings[0]:
            lines.append(f"Warning: {', '.join(warnings[0])}: check the slice.")
        return lines
    located = sum(bool(item.get("lv_found")) for item in slices)
    segmented = [i for i, item in enumerate(slices) if is_segmented(item)]
    empty = [i for i, item in enumerate(slices) if not is_segmented(item)]
    line = f"{LV_LOCATED} on {located} of {len(slices)} slices; {SEGMENTED}: {len(segmented)}"
    if empty:
        line += f"; {NOTHING_SEGMENTED} on slice{'s' if len(empty) > 1 else ''} {_numbers(empty)}"
    lines = [line + "."]
    flagged = [(i, w) for i, w in enumerate(warnings) if w]
    if flagged:
        lines.append("Warnings: " + "; ".join(f"slice {i} ({', '.join(w)})" for i, w in flagged) + ": check them.")
    return lines
