"""The app in a real browser: Debian Chromium driven by Playwright (never ``playwright install``).

On the embedded ``gm-solos`` model, at a desktop (1280 px) and a phone (390 px) width: upload
``examples/violin.wav``, classify it, read the label, play a decoded prototype and a nearest training
chunk (their ``<audio>`` elements load a non-zero duration and advance when played), check that the
explanation's text is legible (≥ 11 px) and fits the screen, then upload a broken file: one message,
on the upload box, and every output unchanged. Screenshots go to the test's tmp dir (and to
``$PECMAE_SCREENSHOTS`` when set). Skipped when ``/usr/bin/chromium`` or Playwright is missing.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.filterwarnings("ignore:::gradio.queueing")]

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--autoplay-policy=no-user-gesture-required",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 30_000
VIEWPORTS = {"desktop": (1280, 900), "phone": (390, 844)}


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium); the browser test needs Debian Chromium")
    pytest.importorskip("playwright.sync_api", reason="Python playwright is not installed")
    from test_app import launch_app

    demo, url = launch_app(ROOT / "checkpoints" / "gm-solos", ROOT / "examples", prewarm=False)
    yield url
    demo.close()


@pytest.fixture(scope="module")
def browser(app_url):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def _open(browser, url: str, size: tuple[int, int]):
    page = browser.new_page(viewport={"width": size[0], "height": size[1]})
    page.set_default_timeout(TIMEOUT_MS)
    errors: list = []
    page.on("pageerror", lambda exc: errors.append(exc))
    page.on(
        "request",
        lambda req: (
            None
            if req.url.startswith((url, "data:", "blob:"))
            else errors.append(f"request to another host: {req.url}")
        ),
    )
    page.goto(url)
    page.wait_for_selector("#classify-button")
    return page, errors


def _upload(page, path) -> None:
    clear = page.locator("#classify-audio button[aria-label='Clear']")
    if clear.count():
        clear.last.click()  # the player's own clear button (a validation message has one too)
    page.locator("#classify-audio input[type=file]").set_input_files(str(path))
    page.wait_for_selector("#classify-audio audio[src]", state="attached")


def _plays(page, selector: str) -> float:
    """Duration (s) of the player's audio, read by an ``<audio>`` element from the file the player serves;
    asserts that pressing the player's Play button moves its clock."""
    href = page.locator(f"{selector} a[download]").first.get_attribute("href")
    duration = page.evaluate(
        """url => new Promise((ok, bad) => {
        const a = new Audio(); a.preload = 'metadata';
        a.onloadedmetadata = () => ok(a.duration);
        a.onerror = () => bad('cannot load ' + url); a.src = url; })""",
        href,
    )
    page.locator(f"{selector} button[aria-label='Play']").click()
    page.wait_for_function("sel => document.querySelector(sel + ' time#time')?.innerText !== '0:00'", arg=selector)
    page.locator(f"{selector} button[aria-label='Pause']").click()
    return duration


def _save(page, tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("PECMAE_SCREENSHOTS"):
        Path(os.environ["PECMAE_SCREENSHOTS"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(os.environ["PECMAE_SCREENSHOTS"]) / path.name)


@pytest.mark.parametrize("device", list(VIEWPORTS))
def test_classify_hear_why_and_refuse_a_broken_file(browser, app_url, device, tmp_path):
    page, errors = _open(browser, app_url, VIEWPORTS[device])
    width = VIEWPORTS[device][0]
    _upload(page, ROOT / "examples" / "violin.wav")
    page.click("#classify-button")
    page.wait_for_function("document.querySelector('#summary')?.innerText.includes('chunks of 1.5 s')")
    label = page.locator("#scores [data-testid=label-output-value]").inner_text().strip()
    assert label == "violin" and "violin" in page.locator("#summary").inner_text()

    # both explanations play: the decoded prototype and its nearest real training chunk (1.5 s each)
    assert _plays(page, "#top-prototype-1") == pytest.approx(1.5, abs=0.05)
    assert _plays(page, "#nearest-1-1") == pytest.approx(1.5, abs=0.05)
    assert "Closest training chunk 1: violin," in page.locator("#nearest-1-1").inner_text()
    assert "bank, clip" in page.locator("#top-caption-1").inner_text()

    # the explanation is text, legible and inside the screen at this width
    figure = page.locator("#explanation .pe-why")
    figure.wait_for(state="visible")
    sizes = figure.evaluate("""el => [...el.querySelectorAll('*')]
        .filter(e => [...e.childNodes].some(n => n.nodeType === 3 && n.textContent.trim()))
        .map(e => parseFloat(getComputedStyle(e).fontSize))""")
    assert sizes and min(sizes) >= 11, sorted(sizes)[:5]
    box = figure.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= width + 1
    assert figure.evaluate("el => el.scrollWidth <= el.clientWidth + 1")
    assert "Why violin" in figure.inner_text() and "points in total" in figure.inner_text()
    _save(page, tmp_path, f"classify-{device}")

    # a broken upload: one message, on the upload box; the outputs keep the violin answer
    summary = page.locator("#summary").inner_text()
    explanation = figure.inner_html()
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF\x00\x00\x00\x00WAVE" + b"\x01" * 2000)
    _upload(page, broken)
    page.click("#classify-button")
    message = page.locator(".validation-error")
    message.wait_for(state="visible")
    assert message.count() == 1 and "Unreadable audio: cannot read 'broken.wav'" in message.inner_text()
    assert page.locator("#classify-audio .validation-error").count() == 1
    page.wait_for_timeout(500)
    assert page.locator("#summary").inner_text() == summary and figure.inner_html() == explanation
    assert page.locator("#scores [data-testid=label-output-value]").inner_text().strip() == "violin"
    assert page.locator("[data-testid=toast-body]").count() == 0  # no second copy of the message
    _save(page, tmp_path, f"refused-{device}")
    assert not errors, errors  # no JavaScript exception, and nothing fetched from outside the app
    page.close()


def test_example_click_and_prototypes_tab(browser, app_url, tmp_path):
    page, errors = _open(browser, app_url, VIEWPORTS["desktop"])
    page.get_by_role("button", name="trumpet", exact=True).click()  # an example clip: one click classifies it
    page.wait_for_function("document.querySelector('#summary')?.innerText.includes('trumpet')")
    page.get_by_role("tab", name="Prototypes").click()
    page.get_by_text("violin — 3 prototypes").wait_for(state="visible")
    assert "denoising passes" in page.locator("#sonify-steps").inner_text()  # every control says what it does
    page.click("#play-prototype")
    page.locator("#prototype-audio a[download]").first.wait_for(state="attached")
    _save(page, tmp_path, "prototypes-desktop")
    assert not errors, errors
    page.close()
