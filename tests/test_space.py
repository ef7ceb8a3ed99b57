"""The Gradio Space (space/app.py), launched on 127.0.0.1 and driven through gradio_client.

A tiny random-weights model (conftest's ``tiny_pipe``) keeps it fast: the masks mean nothing, but
structure, units, files and error messages are what the app must get right whatever the model.
"""

import importlib.util
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from halsr_hf.roi_stage import QC_FLAGS

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402

SPACE_DIR = Path(__file__).resolve().parents[1] / "space"
EXAMPLES = sorted((SPACE_DIR / "examples").glob("*.dcm"))


def load_space_module():
    """Import space/app.py under its own name (space/ is not a package)."""
    spec = importlib.util.spec_from_file_location("halsr_space_app", SPACE_DIR / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def space_module():
    return load_space_module()


@pytest.fixture(scope="module")
def space_url(space_module, tiny_pipe):
    demo = space_module.build_demo(tiny_pipe)
    port = free_port()
    space_module.launch(demo, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


@pytest.fixture(scope="module")
def client(space_url):
    return Client(space_url, verbose=False)


@pytest.fixture(scope="module")
def nifti_volume(tmp_path_factory):
    """A synthetic 10-slice short-axis-like volume (bright disc in a ring) with 1.5 x 1.25 mm
    pixels and 8 mm slices, in a non-trivial affine."""
    yy, xx = np.mgrid[:96, :80]
    radius = np.hypot(yy - 48, xx - 40)
    rng = np.random.default_rng(0)
    slices = []
    for k in range(10):
        image = 200.0 * (radius < 12 + k % 3) + 80.0 * ((radius >= 14) & (radius < 20)) + rng.normal(20, 5, radius.shape)
        slices.append(image.T)  # the app shows data[:, :, k].T: store (X, Y) = (80, 96)
    data = np.stack(slices, axis=-1).astype(np.float32)
    affine = np.array([[0, -1.25, 0, 30.0], [1.5, 0, 0, -12.0], [0, 0, 8.0, 5.0], [0, 0, 0, 1]])
    path = tmp_path_factory.mktemp("space-nifti") / "volume.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


def test_dicom_example_gives_overlay_and_areas_in_mm2(client):
    assert len(EXAMPLES) >= 3 and EXAMPLES[0].name == "SCD0000101_48.dcm", "space/examples/ must hold the Sunnybrook DICOM examples"
    overlay, areas, volumes, summary, masks = client.predict(
        handle_file(str(EXAMPLES[0])), 0, 0, 0, None, 0.45, api_name="/segment"
    )
    image = Image.open(overlay)
    assert image.mode == "RGB" and image.size == (256, 256)
    pixels = np.asarray(image)
    assert (pixels[..., 0] != pixels[..., 1]).any(), "the overlay has colour (mask or ROI box)"
    assert areas["headers"] == ["slice", "LV located", "LV cavity area (mm²)", "myocardium area (mm²)", "segmented", "message",
                                "quality flags"]
    assert len(areas["data"]) == 1 and areas["data"][0][1] == "yes"
    assert "1.367" in summary and "DICOM" in summary
    names = sorted(Path(m).name for m in masks)
    assert names == ["SCD0000101_48_mask.nii.gz", "SCD0000101_48_mask.png"]
    png = np.asarray(Image.open(next(m for m in masks if m.endswith(".png"))))
    assert png.shape == (256, 256) and set(np.unique(png)) <= {0, 1, 2}
    # the areas in the table are the mask's pixel counts times the DICOM pixel spacing
    spacing = 1.367188**2
    assert areas["data"][0][2] == pytest.approx(np.count_nonzero(png == 1) * spacing, abs=0.1)
    assert areas["data"][0][3] == pytest.approx(np.count_nonzero(png == 2) * spacing, abs=0.1)


def test_png_without_spacing_gives_pixels_then_mm2_when_entered(client, tmp_path):
    import pydicom

    array = pydicom.dcmread(EXAMPLES[1]).pixel_array.astype(np.uint16)
    path = tmp_path / "slice16.png"
    Image.fromarray(array).save(path)  # 16-bit PNG, no spacing
    _, areas, _, summary, *_ = client.predict(handle_file(str(path)), 0, 0, 0, None, 0.45, api_name="/segment")
    assert areas["headers"][2] == "LV cavity area (pixels)" and "spacing unknown" in summary
    _, areas_mm, *_ = client.predict(handle_file(str(path)), 2.0, 2.0, 0, None, 0.45, api_name="/segment")
    assert areas_mm["headers"][2] == "LV cavity area (mm²)"
    assert areas_mm["data"][0][2] == pytest.approx(4.0 * areas["data"][0][2], abs=0.5)


def test_nifti_volume_gives_per_slice_results_volumes_and_aligned_nifti(client, nifti_volume):
    overlay, areas, volumes, summary, masks = client.predict(
        handle_file(str(nifti_volume)), 0, 0, 0, None, 0.3, api_name="/segment"
    )
    assert Image.open(overlay).size == (80, 96)  # (W, H) of a displayed slice
    assert areas["headers"][2] == "LV cavity area (mm²)" and [row[0] for row in areas["data"]] == list(range(10))
    table = {row[0]: (row[1], row[2]) for row in volumes["data"]}
    assert set(table) == {"LV cavity volume", "myocardium volume", "myocardial mass"}
    assert table["LV cavity volume"][1] == "mL" and table["myocardial mass"][1] == "g"
    # volume = sum of slice areas x 8 mm slice thickness
    cavity_mm3 = sum(row[2] for row in areas["data"]) * 8.0
    assert float(table["LV cavity volume"][0]) == pytest.approx(cavity_mm3 / 1000, abs=0.05)
    assert "10 slices" in summary and "8 mm" in summary
    nifti = next(m for m in masks if m.endswith(".nii.gz"))
    mask = nib.load(nifti)
    source = nib.load(nifti_volume)
    assert mask.shape == source.shape and np.allclose(mask.affine, source.affine)
    assert any(m.endswith("_mask_png.zip") for m in masks)
    # another slice of the same session's volume
    other = client.predict(2, 0.6, api_name="/show_slice")
    assert Image.open(other).size == (80, 96)


def test_ed_es_pair_gives_cardiac_function(client, nifti_volume, tmp_path):
    data = nib.load(nifti_volume)
    smaller = data.get_fdata().astype(np.float32)
    smaller = np.where(smaller > 150, 60.0, smaller).astype(np.float32)  # a different "ES" image
    es_path = tmp_path / "es.nii.gz"
    nib.save(nib.Nifti1Image(smaller, data.affine), es_path)
    table, notes, gallery = client.predict(
        handle_file(str(nifti_volume)), handle_file(str(es_path)), 0, 0, 0, None, None, 0.45, api_name="/cardiac_function"
    )
    rows = {row[0]: row[1:] for row in table["data"]}
    assert set(rows) == {"EDV", "ESV", "stroke volume", "ejection fraction", "myocardial mass (ED)"}
    assert rows["EDV"][1] == "mL" and rows["ejection fraction"][1] == "%" and rows["myocardial mass (ED)"][1] == "g"
    assert len(gallery) == 2


def test_corrupt_and_unsupported_files_show_a_readable_error(client, tmp_path):
    from gradio_client.exceptions import AppError

    corrupt = tmp_path / "broken.dcm"
    corrupt.write_bytes(b"\x00" * 128 + b"DICM" + b"\x02\x00\x10\x00garbage" * 10)
    with pytest.raises(AppError) as info:
        client.predict(handle_file(str(corrupt)), 0, 0, 0, None, 0.45, api_name="/segment")
    message = str(info.value)
    assert message.startswith("broken.dcm: unreadable or truncated DICOM file")
    assert "Traceback" not in message and "/tmp" not in message
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(EXAMPLES[0].read_bytes()[:60000])  # a real DICOM, truncated in its pixel data
    with pytest.raises(AppError) as info:
        client.predict(handle_file(str(cut)), 0, 0, 0, None, 0.45, api_name="/segment")
    message = str(info.value)
    assert message.startswith("cut.dcm: unreadable or truncated DICOM file") and "/tmp" not in message
    truncated = tmp_path / "cut.nii.gz"
    truncated.write_bytes(b"\x1f\x8b\x08\x00garbage")  # a gzip header, then nothing valid
    with pytest.raises(AppError, match="cut.nii.gz"):
        client.predict(handle_file(str(truncated)), 0, 0, 0, None, 0.45, api_name="/segment")
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    with pytest.raises(AppError, match="unsupported file type"):
        client.predict(handle_file(str(text)), 0, 0, 0, None, 0.45, api_name="/segment")
    with pytest.raises(AppError, match="single slice"):
        client.predict(handle_file(str(EXAMPLES[0])), handle_file(str(EXAMPLES[1])), 0, 0, 0, None, None, 0.45,
                       api_name="/cardiac_function")


def test_dicom_without_extension_is_read_by_its_preamble(client, tmp_path):
    upload = tmp_path / "IM0001"  # scanners and PACS exports often write no extension
    upload.write_bytes(EXAMPLES[0].read_bytes())
    _, areas, _, summary, masks = client.predict(handle_file(str(upload)), 0, 0, 0, None, 0.45, api_name="/segment")
    assert areas["headers"][2] == "LV cavity area (mm²)" and "DICOM" in summary
    assert sorted(Path(m).name for m in masks) == ["IM0001_mask.nii.gz", "IM0001_mask.png"]


def test_results_table_shows_the_pipeline_message_and_quality_flags(space_module, tiny_pipe):
    """Each slice's ``message`` and ``qc`` (when the pipeline gives them) are columns of the table."""
    app = space_module.SpaceApp(tiny_pipe)
    pipe = app.pipe

    def flagged(data, **kwargs):
        result = pipe(data, **kwargs)
        result.update(message="no LV found", qc=["mask touches crop border", "small myocardium"])
        return result

    _, areas, *_ = app.segment(str(EXAMPLES[0]))
    message, flags = list(areas.iloc[0])[5:]
    assert message.startswith(("LV located", "no LV found", "whole slice")), message  # the pipeline's own
    assert flags == "-" or all(flag in QC_FLAGS for flag in flags.split("; ")), flags  # "-": none, as in the CLI's table
    app.pipe = flagged
    _, areas, *_ = app.segment(str(EXAMPLES[0]))
    assert list(areas.columns)[5:] == ["message", "quality flags"]
    assert list(areas.iloc[0])[5:] == ["no LV found", "mask touches crop border; small myocardium"]


def test_zoom_on_the_roi_and_a_volumes_table_for_volumes_only(space_module, tiny_pipe, nifti_volume):
    """Issue 20: the heart is small in the whole-slice overlay (a zoom on the ROI is shown beside
    it), and a single slice showed an empty volumes table (headers only)."""
    from halsr_hf.visualize import ROI_COLOR

    app = space_module.SpaceApp(tiny_pipe)
    *_, state = app.segment(str(EXAMPLES[0]))  # the tiny model's box is most of the slice: a heart-sized one instead
    label_map = np.zeros((256, 256), dtype=np.uint8)
    label_map[105:135, 105:135], label_map[112:128, 112:128] = 2, 1
    state = dict(state, label_maps=label_map[None], rois=[[100, 100, 139, 139]])
    zoom = app.zoom(state, 0)
    # 40 px box, 80 px around it, enlarged 4x without smoothing
    assert zoom.size == (320, 320)
    pixels = np.asarray(zoom)
    assert (pixels == ROI_COLOR).all(axis=-1).any(), "the ROI box is drawn in the zoom"
    assert (np.repeat(np.repeat(pixels[::4, ::4], 4, axis=0), 4, axis=1) == pixels).all()  # whole pixels, not blurred
    cavity = pixels[130:190, 130:190].astype(int)  # slice pixels 112-127, red
    assert (cavity[..., 0] > cavity[..., 1] + 30).all() and (cavity[..., 0] > cavity[..., 2] + 30).all()
    no_lv = dict(state, rois=[None], label_maps=np.zeros_like(state["label_maps"]))
    assert app.zoom(no_lv, 0) is None and app.zoom(None) is None
    assert app.layout(state)[1]["visible"] is False  # a single slice: no volumes table
    *_, volume_state = app.segment(str(nifti_volume))
    slider, volumes = app.layout(volume_state)
    assert volumes["visible"] is True and slider.visible


def test_remote_code_pipeline_uses_its_own_modules(space_module, tiny_folder):
    """Without halsr_hf on a Space, the model repository's code is the package: the app takes
    image_io/clinical/visualize from where the pipeline class was loaded (one code path)."""
    from transformers import pipeline
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    # with halsr_hf imported (as in this test process) the local classes win; take the repository's
    # pipeline class explicitly, as a Space without the package gets it
    remote_class = get_class_from_dynamic_module("pipeline_halsr.CardiacLVSegmentationPipeline", str(tiny_folder))
    remote = pipeline("cardiac-lv-segmentation", model=str(tiny_folder), trust_remote_code=True, pipeline_class=remote_class)
    app = space_module.SpaceApp(remote)
    assert type(remote).__module__.startswith("transformers_modules.")
    assert all(module.__name__.startswith("transformers_modules.") for module in vars(app.code).values())
    overlay, areas, *_ = app.segment(str(EXAMPLES[0]))
    assert overlay.size == (256, 256) and areas.iloc[0]["LV located"] == "yes"


def test_readme_front_matter_names_the_default_hub_model(space_module, tmp_path, monkeypatch):
    import yaml

    # the Space's own README, parsed here independently of the app (plain YAML between the --- lines)
    front = yaml.safe_load((SPACE_DIR / "README.md").read_text().split("---")[1])
    assert space_module.readme_model() == front["models"][0] == "halsr-hf/halsr-net"
    # and the app reads whatever the README names, not a constant of its own
    (tmp_path / "README.md").write_text("---\ntitle: x\nmodels:\n- someone/another-model\n---\n# x\n")
    monkeypatch.setattr(space_module, "HERE", tmp_path)
    assert space_module.readme_model() == "someone/another-model"
    (tmp_path / "README.md").unlink()
    assert space_module.readme_model() is None


def test_image_size_limit(client, space_module, tmp_path):
    big = tmp_path / "big.png"
    side = space_module.MAX_IMAGE_SIDE + 1
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (side, 16), dtype=np.uint8)).save(big)
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="limit"):
        client.predict(handle_file(str(big)), 0, 0, 0, None, 0.45, api_name="/segment")


def test_concurrent_requests_all_succeed(space_url, client):
    """Eight requests at once, each its own session, get exactly what each example gets alone (no
    request sees another's image, spacing or result)."""
    def one(index, session=None):
        own = session or Client(space_url, verbose=False)  # one session per request, like separate users
        result = own.predict(handle_file(str(EXAMPLES[index % len(EXAMPLES)])), 0, 0, 0, None, 0.45, api_name="/segment")
        return result[1]

    alone = {index: one(index, client) for index in range(len(EXAMPLES))}
    with ThreadPoolExecutor(max_workers=8) as pool:
        tables = list(pool.map(one, range(8)))
    for index, table in enumerate(tables):
        assert table["headers"][2] == "LV cavity area (mm²)"
        assert table["data"] == alone[index % len(EXAMPLES)]["data"], EXAMPLES[index % len(EXAMPLES)].name


def test_app_source_makes_no_outside_calls_and_reads_the_model_variables(space_module):
    source = (SPACE_DIR / "app.py").read_text()
    assert 'os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")' in source
    assert source.index("GRADIO_ANALYTICS_ENABLED") < source.index("import gradio")
    assert "HALSR_MODEL" in source and "HALSR_ROI_MODEL" in source
    readme = (SPACE_DIR / "README.md").read_text()
    header = readme.split("---")[1]
    for key in ("title:", "sdk: gradio", "sdk_version:", "app_file: app.py", "license:", "models:", "tags:"):
        assert key in header
    assert (SPACE_DIR / "examples" / "PROVENANCE.md").is_file()


def test_space_and_command_line_say_the_same_words(space_module, tiny_pipe, nifti_volume, tmp_path):
    """Issue 26: the Space said "No LV found on slices 0" where the command line said "LV found 1/1";
    both now speak of "LV located", "segmented" and "nothing segmented", from the result's fields
    (lv_found, areas, qc_warnings), never from the pipeline's messages."""
    import nibabel as nib

    from halsr_hf.visualize import summary_lines

    app = space_module.SpaceApp(tiny_pipe)
    pipe, seen = app.pipe, []
    empty = {"lv_cavity": 0, "myocardium": 0}

    def nothing_on_slice_0(data, **kwargs):
        result = pipe(data, **kwargs)
        result["slices"][0].update(lv_found=False, areas_px=dict(empty), areas_mm2=dict(empty), message="(not read)",
                                   qc=[], qc_warnings=[])
        result["slices"][1].update(qc=["several_components"], qc_warnings=["several_components"])
        seen.append(result)
        return result

    app.pipe = nothing_on_slice_0
    _, areas, _, summary, *_ = app.segment(str(nifti_volume))
    slices = seen[0]["slices"]
    located = sum(bool(item["lv_found"]) for item in slices)
    assert "No LV found" not in summary and "nothing segmented on slice" in summary and " 0" in summary, summary
    assert f"LV located on {located} of {len(slices)} slices" in summary, summary
    assert "slice 1 (several_components)" in summary, summary
    assert all(line in summary for line in summary_lines(slices))
    assert [areas.iloc[0]["LV located"], areas.iloc[0]["segmented"]] == ["no", "no"]
    assert summary_lines({"lv_found": True, "areas_px": {"lv_cavity": 0, "myocardium": 12}, "qc": []}) == [
        "LV located, segmented."]
    assert nib.load(nifti_volume).shape[2] == len(slices)
