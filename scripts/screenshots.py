"""Screenshots of the app for the README, taken in Debian Chromium (never ``playwright install``).

    python scripts/screenshots.py [--out docs/images] [--extra DIR]

Starts the app on the embedded gm-solos model with the shipped examples, then:

- ``app-desktop.png`` (1280 px wide): the violin example classified (headline, scores, the "why" bars);
- ``app-phone.png`` (390 px wide): the speech example classified: the out-of-domain warning and the
  headline in view right after Classify.

Each PNG is reduced to 256 colours (Pillow) so that it stays well under 300 KB. ``--extra DIR`` also saves
full-page shots of both widths (first screen, results, Prototypes tab) for reviewing the layout.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-sync"]
DESKTOP, PHONE = (1280, 900), (390, 844)
MAX_BYTES = 300_000


def shrink(path: Path) -> int:
    """Re-save ``path`` with a 256-colour palette; returns its size in bytes."""
    from PIL import Image

    with Image.open(path) as image:
        small = image.convert("RGB").quantize(colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    small.save(path, optimize=True)
    return path.stat().st_size


def classify_example(page, name: str) -> None:
    """Click an example clip's button and wait for its headline."""
    page.get_by_role("button", name=name, exact=True).click()
    page.wait_for_function("document.querySelector('#summary')?.innerText.includes('chunk')", timeout=60_000)
    page.wait_for_timeout(400)  # let the players and bars settle


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images", help="folder of the README images")
    parser.add_argument("--extra", type=Path, help="also save full-page review shots here")
    args = parser.parse_args(argv)
    if not Path(CHROMIUM).exists():
        print(f"screenshots: {CHROMIUM} is missing (apt-get install chromium)", file=sys.stderr)
        return 1
    from playwright.sync_api import sync_playwright

    from pecmae_hub.app.ui import build_app

    demo = build_app(str(ROOT / "checkpoints" / "gm-solos"), examples_dir=ROOT / "examples", prewarm=False)
    demo.launch(prevent_thread_lock=True, quiet=True)
    url = demo.local_url
    args.out.mkdir(parents=True, exist_ok=True)
    shots = []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
            for name, size, example in (("desktop", DESKTOP, "violin"), ("phone", PHONE, "speech (not an instrument)")):
                page = browser.new_page(viewport={"width": size[0], "height": size[1]})
                page.goto(url)
                page.wait_for_selector("#classify-button")
                page.wait_for_timeout(500)
                if args.extra:
                    args.extra.mkdir(parents=True, exist_ok=True)
                    page.screenshot(path=str(args.extra / f"{name}-first-screen.png"))
                classify_example(page, example)
                if name == "phone":  # what the user sees right after the tap: the warning and the headline
                    page.evaluate("document.getElementById('ood-warning').scrollIntoView({block: 'start'})")
                    page.evaluate("window.scrollBy(0, -12)")
                else:
                    page.evaluate("window.scrollTo(0, 0)")
                path = args.out / f"app-{name}.png"
                page.screenshot(path=str(path))
                shots.append((path, shrink(path)))
                if args.extra:
                    page.screenshot(path=str(args.extra / f"{name}-result-full.png"), full_page=True)
                    page.get_by_role("tab", name="Prototypes").click()
                    page.wait_for_timeout(800)
                    page.screenshot(path=str(args.extra / f"{name}-prototypes-full.png"), full_page=True)
                page.close()
            browser.close()
    finally:
        demo.close()
    for path, size in shots:
        print(f"wrote {path} ({size / 1000:.0f} KB)")
    too_big = [str(p) for p, size in shots if size > MAX_BYTES]
    if too_big:
        print(f"screenshots: larger than {MAX_BYTES // 1000} KB: {', '.join(too_big)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
