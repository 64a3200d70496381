"""The app in a real browser: Debian Chromium driven by Playwright (never ``playwright install``).

Uploads a clip, classifies it, reads the predicted label, checks the explanation plot and that a
prototype's audio URL serves a WAV, runs an example clip, opens the Prototypes tab, takes screenshots.
Skipped when ``/usr/bin/chromium`` (``apt-get install chromium``) or Playwright is missing.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import LABELS

pytestmark = [pytest.mark.browser, pytest.mark.filterwarnings("ignore:::gradio.queueing")]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def app_url(tiny_model_dir, tmp_path_factory):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium); the browser test needs Debian Chromium")
    pytest.importorskip("playwright.sync_api", reason="Python playwright is not installed")
    from test_app import launch_app, make_examples

    examples = make_examples(tmp_path_factory.mktemp("browser-examples"))
    demo, url = launch_app(tiny_model_dir, examples, prewarm=False)
    yield url
    demo.close()


@pytest.fixture
def page(app_url):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(TIMEOUT_MS)
            errors: list = []
            page.on("pageerror", lambda exc: errors.append(exc))
            page.on("request", lambda req: None if req.url.startswith((app_url, "data:", "blob:"))
                    else errors.append(f"request to another host: {req.url}"))
            page.goto(app_url)
            page.wait_for_selector("#classify-button")
            yield page, errors
        finally:
            browser.close()


def _summary(page) -> str:
    return page.locator("#summary").inner_text()


def test_classify_explain_listen_and_browse_prototypes(page, tmp_path):
    from test_app import write_tone

    page, errors = page
    clip = write_tone(tmp_path / "upload.wav", 1.5, 523.0)
    page.locator("#classify-audio input[type=file]").set_input_files(str(clip))
    page.wait_for_selector("#classify-audio audio[src]", state="attached")
    page.click("#classify-button")
    page.wait_for_function("document.querySelector('#summary')?.innerText.includes('1.5 s')")

    label = page.locator("#scores [data-testid=label-output-value]").inner_text().strip()
    assert label in LABELS
    assert label in _summary(page)
    plot = page.locator("#explanation-plot img").first
    plot.wait_for(state="visible")
    assert plot.evaluate("img => img.complete && img.naturalWidth") > 500  # the matplotlib figure rendered

    link = page.locator("#top-prototype-1 a[download]").first
    link.wait_for(state="attached")
    href = link.get_attribute("href")
    assert "/gradio_api/file=" in href and href.endswith(".wav")
    response = page.request.get(href)
    body = response.body()
    assert response.ok and body[:4] == b"RIFF" and body[8:12] == b"WAVE"
    assert len(body) > 24000 * 2  # one second of 16-bit audio at 24 kHz
    page.screenshot(path=str(tmp_path / "classify.png"), full_page=True)

    page.get_by_role("button", name="violin", exact=True).click()  # an example clip: one click classifies it
    page.wait_for_function("document.querySelector('#summary')?.innerText.includes('2.5 s')")
    assert page.locator("#scores [data-testid=label-output-value]").inner_text().strip() in LABELS

    page.get_by_role("tab", name="Prototypes").click()
    for name in LABELS:
        page.get_by_text(f"{name} — 2 prototypes").wait_for(state="visible")
    assert page.locator("#prototype-select").is_visible()
    page.click("#play-prototype")
    page.locator("#prototype-audio a[download]").first.wait_for(state="attached")
    page.screenshot(path=str(tmp_path / "prototypes.png"), full_page=True)
    assert (tmp_path / "classify.png").stat().st_size > 10_000
    assert not errors, errors  # no JavaScript exception, and nothing fetched from outside the app
