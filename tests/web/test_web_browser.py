"""`pixgen serve` in a real browser: Debian's chromium driven by Playwright, headless. Click
Sample and get a grid of the expected size; upload an image, paint a mask with the mouse and
run Inpaint. Screenshots of every tab are written to $PIXGEN_ARTIFACTS (default
.artifacts/web in the repository)."""

import os
from pathlib import Path

import pytest
from _serve_helpers import CHROMIUM, REQUIRED, VAE_SIZE, need
from PIL import Image

from pixgen.web.backend import grid_size

#: as root, with no GPU and a closed network: no sandbox, no background connections
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
ARTIFACTS = Path(os.environ.get("PIXGEN_ARTIFACTS",
                                Path(__file__).resolve().parents[2] / ".artifacts")) / "web"
TABS = ["Sample", "Interpolate", "Inpaint", "Super-resolve", "Translate", "Model card"]


@pytest.fixture(scope="module")
def page(server):
    need("playwright")
    if not os.path.exists(CHROMIUM):
        if REQUIRED:
            pytest.fail(f"{CHROMIUM} is missing (PIXGEN_REQUIRE_WEB=1): apt-get install "
                        f"chromium")
        pytest.skip(f"{CHROMIUM} is missing (Debian: apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=CHROMIUM_ARGS)
        pg = browser.new_page(viewport={"width": 1280, "height": 1000})
        pg.set_default_timeout(60_000)
        pg.goto(server[0] + "/")
        yield pg
        browser.close()


def natural_size(page, selector):
    img = page.locator(selector)
    img.wait_for(state="visible")
    page.wait_for_function("(e) => e.complete && e.naturalWidth > 0", arg=img.element_handle())
    return tuple(page.evaluate("(e) => [e.naturalWidth, e.naturalHeight]",
                               img.element_handle()))


def show(page, tab):
    page.get_by_role("tab", name=tab).click()


def test_sample_shows_a_grid_of_the_expected_size(page):
    show(page, "Sample")
    page.locator("#sample-btn").click()
    assert natural_size(page, "#sample-out img") == grid_size(16, VAE_SIZE)
    page.screenshot(path=ARTIFACTS / "sample.png")
    # the grid in the page is the grid the server made: download it and compare pixels
    src = page.locator("#sample-out img").get_attribute("src")
    body = page.request.get(src).body()
    (ARTIFACTS / "sample-grid.png").write_bytes(body)
    assert Image.open(ARTIFACTS / "sample-grid.png").size == grid_size(16, VAE_SIZE)


def test_inpaint_an_uploaded_image_with_a_painted_mask(page, server, tmp_path):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    show(page, "Inpaint")
    photo = Image.new("RGB", (128, 128), (20, 20, 20))
    photo.paste((230, 230, 230), (32, 32, 96, 96))
    editor = page.locator("#inpaint-editor")
    placeholder = editor.get_by_text("Upload an image")
    placeholder.wait_for(state="visible")  # the tab's components are mounted
    # The editor ignores a file set before its canvas exists: on a page loaded just before
    # (this test alone) no upload was ever sent
    editor.locator("canvas").first.wait_for(state="attached")
    # The upload goes to the server and back before the editor shows it (slow under load).
    # A file set while the freshly shown tab is still settling can be dropped by the
    # browser, so it is set again (under a new name) if the editor has not taken it.
    for attempt in range(3):
        name = tmp_path / f"upload-{attempt}.png"
        photo.save(name)
        editor.locator("input[type=file]").set_input_files(name)
        try:
            placeholder.wait_for(state="hidden", timeout=20_000)
            break
        except PlaywrightTimeout:
            continue
    else:
        pytest.fail("the editor never showed the uploaded image; the server said:\n"
                    + "\n".join(server[2][-20:]))
    page.wait_for_timeout(500)  # the editor lays out the uploaded image
    canvas = editor.locator("canvas").first
    box = canvas.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx - 70, cy)
    page.mouse.down()
    for i in range(15):  # a brush stroke across the middle
        page.mouse.move(cx - 70 + 10 * i, cy + (i % 3) * 5, steps=2)
    page.mouse.up()
    page.screenshot(path=ARTIFACTS / "inpaint-painted.png")
    page.locator("#inpaint-btn").click()
    # original | masked | completed at the model's size
    assert natural_size(page, "#inpaint-out img") == grid_size(3, VAE_SIZE, nrow=3)
    info = page.locator("#inpaint-info").inner_text()
    assert "of the pixels (8x8) with vae" in info
    filled = int(info.split("filled ")[1].split("%")[0])
    assert 2 <= filled <= 50, info  # the stroke, not the whole image
    page.screenshot(path=ARTIFACTS / "inpaint.png")


def test_an_upload_over_the_limit_is_said_at_once(page, tmp_path):
    """Gradio answers an upload over --max-upload-mb (1 MB here) with HTTP 413 and shows
    nothing: the Inpaint editor spun forever after a click, the image boxes stayed empty."""
    import numpy as np

    big = tmp_path / "big.png"  # noise does not compress: about 1.8 MB
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (800, 800, 3), dtype=np.uint8)
                    ).save(big)
    assert big.stat().st_size > 2**20
    message = page.locator("#pixgen-upload-error")
    refused = []  # stopped in the page: nothing is sent
    page.on("response", lambda r: refused.append(r.url) if r.status == 413 else None)
    for tab, box in [("Inpaint", "#inpaint-editor"), ("Super-resolve", "#sr-in")]:
        show(page, tab)
        page.evaluate("document.getElementById('pixgen-upload-error')?.remove()")
        page.locator(f"{box} input[type=file]").set_input_files(big)
        message.wait_for(state="visible", timeout=10_000)
        assert message.inner_text().startswith(
            "big.png is 1.8 MB; this server takes uploads up to 1 MB (pixgen serve "
            "--max-upload-mb)"), tab
    page.wait_for_timeout(1000)
    assert not refused, refused
    # what gets past the check (an editor's composite re-encoded larger) is said too
    page.evaluate("document.getElementById('pixgen-upload-error')?.remove()")
    status = page.evaluate("""async () => {
        const form = new FormData();
        form.append("files", new Blob([new Uint8Array(2 * 1048576)]), "composite.png");
        return (await fetch("gradio_api/upload", {method: "POST", body: form})).status; }""")
    assert status == 413
    message.wait_for(state="visible", timeout=10_000)
    assert message.inner_text().startswith("the upload is too large; this server takes")


def test_every_tab_renders(page):
    for tab in TABS:
        show(page, tab)
        page.wait_for_timeout(300)
        page.screenshot(path=ARTIFACTS / f"tab-{tab.lower().replace(' ', '-')}.png",
                        full_page=True)
    assert "vae-digits: vae" in page.locator("#card-summary").inner_text()
