"""Screenshots of every tab of `pixgen serve`, for the README: starts the app over the given
runs, drives it in Debian's chromium with Playwright (as the browser tests do), runs each
tab's action with the built-in example images and saves one PNG per tab.

Usage:
    python docs/web_screenshots.py RUN [RUN ...] [--out docs/images/web]

The README's screenshots come from these runs, each made by a script in benchmarks/:
    python docs/web_screenshots.py runs/bench-diffusion/digits runs/bench-apps/vae \\
        runs/bench-apps/srresnet runs/web/cyclegan
(benchmarks/diffusion.py, benchmarks/apps.py, and benchmarks/cyclegan_shapes.py --steps 400
--width 16 --out runs/web/cyclegan). The first run named that can serve a tab is the one the
tab shows.
"""

from __future__ import annotations

import argparse
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


def pick(page, elem_id: str, index: int) -> None:
    """Choose the option number ``index`` of the Gradio dropdown ``#elem_id``."""
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option").nth(index).click()


def wait_image(page, selector: str) -> None:
    img = page.locator(selector)
    img.wait_for(state="visible", timeout=600_000)
    page.wait_for_function("(e) => e.complete && e.naturalWidth > 0", arg=img.element_handle())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--out", default="docs/images/web")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    import pixgen.web

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    demo = pixgen.web.serve(args.runs, port=0, block=False)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                        args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            page.set_default_timeout(600_000)
            page.goto(demo.local_url)

            def shot(tab: str) -> None:
                path = out / f"web-{tab.lower().replace(' ', '-')}.png"
                page.screenshot(path=path, full_page=True)
                print(f"wrote {path}")

            page.get_by_role("tab", name="Sample").click()
            if page.locator("#sample-class").is_visible():
                pick(page, "sample-class", 4)  # "any", then the classes
            page.locator("#sample-btn").click()
            wait_image(page, "#sample-out img")
            shot("Sample")

            page.get_by_role("tab", name="Interpolate").click()
            page.locator("#interp-btn").click()
            wait_image(page, "#interp-frame img")
            shot("Interpolate")

            page.get_by_role("tab", name="Inpaint").click()
            pick(page, "inpaint-example", 0)
            page.get_by_label("center").check()
            page.locator("#inpaint-btn").click()
            wait_image(page, "#inpaint-out img")
            shot("Inpaint")

            page.get_by_role("tab", name="Super-resolve").click()
            pick(page, "sr-example", 1)
            page.locator("#sr-original input").check()
            page.locator("#sr-btn").click()
            wait_image(page, "#sr-out img")
            shot("Super-resolve")

            page.get_by_role("tab", name="Translate").click()
            pick(page, "translate-example", 2)
            page.locator("#translate-btn").click()
            wait_image(page, "#translate-out img")
            shot("Translate")

            page.get_by_role("tab", name="Model card").click()
            page.wait_for_timeout(1500)
            shot("Model card")
            browser.close()
    finally:
        demo.close()


if __name__ == "__main__":
    main()
