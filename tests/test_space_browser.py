"""The Space in a real browser: Playwright drives Debian's headless Chromium, uploads an example,
clicks Segment and sees the overlay image, the zoom on the ROI and the per-slice table, whose
message and quality flags are on screen and not cut off (issue 20: they were off to the right of
a half-width table); a single slice shows no empty volumes table.

Needs /usr/bin/chromium (``apt-get install -y chromium chromium-driver``; `.ci/run` installs it).
The screenshot goes to a temp folder, or to docs/space-screenshot.png with HALSR_UPDATE_SCREENSHOT=1
(then the app uses the bundled default model when it exists, else the test's tiny random model).
"""

import os
import shutil
import socket
from pathlib import Path

import pytest

from tests.test_space import EXAMPLES, load_space_module

CHROMIUM = os.environ.get("HALSR_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--disable-quic"]
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "space-screenshot.png"

pytestmark = pytest.mark.browser

#: JavaScript: why an element's content is not fully on screen ("" when it is): outside the window,
#: outside an ancestor that clips (overflow not visible), or its text cut (wider or taller than its box).
NOT_SHOWN = """el => {
    const r = el.getBoundingClientRect();
    if (r.width === 0 || r.height === 0) return "no size";
    if (r.left < -1 || r.right > window.innerWidth + 1) return `outside the window: ${r.left}-${r.right}`;
    for (let a = el.parentElement; a; a = a.parentElement) {
        const style = getComputedStyle(a);
        if (style.overflowX === "visible" && style.overflowY === "visible") continue;
        const c = a.getBoundingClientRect();
        if (r.left < c.left - 1 || r.right > c.right + 1 || r.top < c.top - 1 || r.bottom > c.bottom + 1)
            return `clipped by ${a.className}: ${r.left}-${r.right} not within ${c.left}-${c.right}`;
    }
    for (const t of [el, ...el.querySelectorAll("*")]) {
        if (t.scrollWidth > t.clientWidth + 1 && getComputedStyle(t).overflowX !== "visible")
            return `text cut: ${t.scrollWidth} > ${t.clientWidth}`;
    }
    return "";
}"""


def assert_fully_shown(locator, what):
    locator.scroll_into_view_if_needed()
    problem = locator.evaluate(NOT_SHOWN)
    assert problem == "", f"{what}: {problem}"


def _pipe_for_screenshot(tiny_pipe):
    """The bundled model for the committed screenshot when it exists, else the tiny random one."""
    import halsr_hf

    if os.environ.get("HALSR_UPDATE_SCREENSHOT") == "1":
        try:
            return halsr_hf.load_pipeline(), "bundled default model"
        except FileNotFoundError:
            pass
    return tiny_pipe, "tiny random model"


@pytest.fixture(scope="module")
def browser_space(tiny_pipe):
    if not Path(CHROMIUM).exists() and not shutil.which(CHROMIUM):
        pytest.skip(f"Chromium not found at {CHROMIUM}: apt-get install -y chromium chromium-driver")
    pytest.importorskip("playwright.sync_api")
    space = load_space_module()
    pipe, which = _pipe_for_screenshot(tiny_pipe)
    demo = space.build_demo(pipe)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    space.launch(demo, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/", which
    finally:
        demo.close()


def test_upload_example_click_and_see_overlay_and_areas(browser_space, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    url, which = browser_space
    example = next(p for p in EXAMPLES if p.name == "SCD0000301_40.dcm")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1100})
            page.goto(url, wait_until="domcontentloaded")
            page.locator("#upload input[type=file]").set_input_files(str(example))
            # the file's name (its stem and extension are two spans, apart when the column is narrow)
            expect(page.locator("#upload td.filename")).to_have_attribute("aria-label", example.name, timeout=30_000)
            page.locator("#segment").click()
            overlay = page.locator("#overlay img")
            expect(overlay).to_be_visible(timeout=60_000)
            width = overlay.evaluate("img => img.decode().then(() => img.naturalWidth)")
            assert width == 256
            areas = page.locator("#areas")
            expect(areas).to_contain_text("LV cavity area (mm²)", timeout=30_000)
            expect(areas).to_contain_text("yes")
            # the pipeline's message and the quality flags are read on the page, not cut off
            message, flags = areas.locator("[data-testid='cell-0-5']"), areas.locator("[data-testid='cell-0-6']")
            expect(areas.locator("[data-testid='header-5']")).to_have_attribute("title", "message")
            expect(areas.locator("[data-testid='header-6']")).to_have_attribute("title", "quality flags")
            assert message.inner_text().strip().startswith(("LV located", "no LV found", "whole slice")), message.inner_text()
            assert flags.inner_text().strip(), "the quality flags cell is empty ('-' when there are none)"
            for locator, what in ((areas.locator("[data-testid='header-5']"), "the message header"), (message, "the message"),
                                  (areas.locator("[data-testid='header-6']"), "the quality flags header"),
                                  (flags, "the quality flags")):
                assert_fully_shown(locator, what)
            # the zoom on the ROI beside the overlay; no volumes table for a single slice
            zoom = page.locator("#zoom img")
            expect(zoom).to_be_visible(timeout=30_000)
            assert zoom.evaluate("img => img.decode().then(() => img.naturalWidth)") >= 192
            expect(page.locator("#volumes")).to_be_hidden()
            expect(page.locator("#summary")).to_contain_text("pixel spacing 1.289")
            expect(page.locator("#masks a[href$='/SCD0000301_40_mask.png']")).to_have_count(1)
            expect(page.locator("#masks a[href$='/SCD0000301_40_mask.nii.gz']")).to_have_count(1)
            page.wait_for_timeout(500)  # let the table and image settle before the screenshot
            if os.environ.get("HALSR_UPDATE_SCREENSHOT") == "1":
                target = SCREENSHOT
                target.parent.mkdir(parents=True, exist_ok=True)
            else:
                target = tmp_path / "space-screenshot.png"
            page.screenshot(path=str(target), full_page=True)
            print(f"screenshot ({which}): {target}")
            assert target.stat().st_size > 10_000
        finally:
            browser.close()
