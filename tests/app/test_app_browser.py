"""The app in a real browser: Debian Chromium driven by Playwright (never ``playwright install``).

On the embedded ``gm-solos`` model, at a desktop (1280 px) and a phone (390 px) width: upload
``examples/violin.wav``, classify it, read the label (the score bars say what the headline says), play a
decoded prototype and a nearest training chunk (their ``<audio>`` elements load a non-zero duration and
advance when played), check that the explanation's text is legible (≥ 11 px) and fits the screen, that
no Share button shows (it works on Spaces only) and, on the phone, that the first screen shows Classify
and that the headline is in view after it; then upload a broken file: the old result is cleared at once
and one message appears, on the upload box. The speech example shows the out-of-domain callout above a
"Best guess" headline. Help texts have a contrast of at least 4.5:1 (WCAG AA). One app server serves every
test. Screenshots go to the test's tmp dir (and to ``$PECMAE_SCREENSHOTS`` when set). Skipped when
``/usr/bin/chromium`` or Playwright is missing.
"""

from __future__ import annotations

import os
import re
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


IN_VIEW = "el => { const r = el.getBoundingClientRect(); return r.top >= -2 && r.top < window.innerHeight - 40; }"


def _in_view(page, selector: str, wait_ms: int = 2000) -> bool:
    """Whether the top of ``selector`` lies inside the viewport (waiting up to ``wait_ms`` for a scroll)."""
    try:
        page.wait_for_function(f"sel => ({IN_VIEW})(document.querySelector(sel))", arg=selector, timeout=wait_ms)
    except Exception:
        return False
    return True


def _contrast(page, selector: str) -> float:
    """WCAG contrast ratio of the text of ``selector`` against the first opaque background behind it."""
    return page.locator(selector).first.evaluate("""el => {
        const rgb = c => c.match(/[\\d.]+/g).map(Number);
        const lum = ([r, g, b]) => [r, g, b].map(v => { v /= 255; return v <= 0.03928 ? v / 12.92
            : Math.pow((v + 0.055) / 1.055, 2.4); }).reduce((a, v, i) => a + v * [0.2126, 0.7152, 0.0722][i], 0);
        let bg = el, back = null;
        while (bg && !back) { const c = rgb(getComputedStyle(bg).backgroundColor);
            if (c.length < 4 || c[3] > 0.99) back = c.slice(0, 3); bg = bg.parentElement; }
        const [a, b] = [lum(rgb(getComputedStyle(el).color)), lum(back || [255, 255, 255])];
        return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05); }""")


@pytest.mark.parametrize("device", list(VIEWPORTS))
def test_classify_hear_why_then_a_new_upload_clears_the_result(browser, app_url, device, tmp_path):
    page, errors = _open(browser, app_url, VIEWPORTS[device])
    width = VIEWPORTS[device][0]
    if device == "phone":  # the first screen is not all introduction: the input and Classify come first
        assert _in_view(page, "#classify-button"), "Classify is below the fold on a phone"
    _upload(page, ROOT / "examples" / "violin.wav")
    page.click("#classify-button")
    page.wait_for_function("document.querySelector('#summary')?.innerText.includes('chunks of 1.5 s')")
    assert "violin" in page.locator("#summary").inner_text()
    headline = page.locator("#summary h3").inner_text()
    top = page.locator("#score-bars .pe-score").first.inner_text()
    assert top.split()[0] == "violin" and top.split("violin", 1)[1].strip() in headline  # one rounding
    if device == "phone":  # after the tap, the answer (where the progress showed) is on screen
        assert _in_view(page, "#summary"), "the headline is off-screen after Classify"
    assert page.locator("#ood-warning").is_hidden()

    # both explanations play: the decoded prototype and its nearest real training chunk (1.5 s each)
    assert _plays(page, "#top-prototype-1") == pytest.approx(1.5, abs=0.05)
    assert _plays(page, "#nearest-1-1") == pytest.approx(1.5, abs=0.05)
    assert "Closest training chunk 1: violin," in page.locator("#nearest-1-1").inner_text()
    assert "bank, clip" in page.locator("#top-caption-1").inner_text()
    caption = page.locator("#top-caption-1").inner_text()
    assert re.match(r"1\. violin — prototype [1-3] of 3 ", caption) and not re.search(r"\(p\d+\)|#\d", caption)

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
    # Gradio's Share button works on Spaces only: locally it must not show (it broke the input)
    assert page.locator("button[aria-label*='hare' i], button[title*='hare' i]").count() == 0
    _save(page, tmp_path, f"classify-{device}")

    # a new (broken) upload: the old result is gone at once, and one message appears, on the upload box
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF\x00\x00\x00\x00WAVE" + b"\x01" * 2000)
    _upload(page, broken)
    page.wait_for_function("document.querySelector('#summary')?.innerText.includes('press Classify')")
    assert figure.count() == 0 and page.locator("#score-bars .pe-score").count() == 0
    page.wait_for_function("!document.querySelector('#top-caption-1')?.innerText.trim()")
    assert page.locator("#top-prototype-1").is_hidden()
    page.click("#classify-button")
    message = page.locator(".validation-error")
    message.wait_for(state="visible")
    assert message.count() == 1 and "Unreadable audio: cannot read 'broken.wav'" in message.inner_text()
    assert page.locator("#classify-audio .validation-error").count() == 1
    assert page.locator("[data-testid=toast-body]").count() == 0  # no second copy of the message
    if device == "phone":
        assert _in_view(page, "#classify-audio .validation-error")
    _save(page, tmp_path, f"refused-{device}")
    assert not errors, errors  # no JavaScript exception, and nothing fetched from outside the app
    page.close()


def test_out_of_domain_example_shows_the_callout(browser, app_url, tmp_path):
    page, errors = _open(browser, app_url, VIEWPORTS["phone"])
    page.get_by_role("button", name="speech (not an instrument)", exact=True).click()
    callout = page.locator("#ood-warning .pe-ood-clear[role=alert]")
    callout.wait_for(state="visible")
    text = callout.inner_text()
    assert "does not sound like anything this model was trained on" in text and "training clips" in text
    assert page.locator("#summary h3").inner_text().startswith("Best guess:")
    assert page.locator("#score-bars .pe-scores.pe-dim").count() == 1
    assert page.locator("#explanation .pe-why.pe-dim").count() == 1
    assert _in_view(page, "#ood-warning"), "the warning is off-screen after the tap"
    background = callout.evaluate("el => getComputedStyle(el).backgroundColor")
    assert background not in ("rgba(0, 0, 0, 0)", "rgb(255, 255, 255)")  # a coloured block, not plain text
    assert _contrast(page, "#ood-warning .pe-ood p") >= 4.5
    _save(page, tmp_path, "out-of-domain-phone")
    # a clip the model knows: the warning goes away with the old result
    page.get_by_role("button", name="violin", exact=True).click()
    page.wait_for_function("!document.querySelector('#summary')?.innerText.includes('Best guess')")
    assert page.locator("#ood-warning").is_hidden()
    assert not errors, errors
    page.close()


def test_example_click_prototypes_and_model_tabs(browser, app_url, tmp_path):
    page, errors = _open(browser, app_url, VIEWPORTS["desktop"])
    page.get_by_role("button", name="trumpet", exact=True).click()  # an example clip: one click classifies it
    page.wait_for_function("document.querySelector('#summary')?.innerText.includes('trumpet')")
    assert page.locator("#ood-warning").is_hidden()  # the shipped examples are in domain
    page.get_by_role("tab", name="Prototypes").click()
    page.get_by_text("violin — 3 prototypes").wait_for(state="visible")
    assert "denoising passes" in page.locator("#sonify-steps").inner_text()  # every control says what it does
    for text in (".info-text", "[data-testid=block-info]"):  # help text, and the control's label on its chip
        assert _contrast(page, f"#sonify-steps {text}") >= 4.5, text
    assert page.locator("#sonify-steps input[type=number]").input_value() == "14"  # UniPC's steps
    page.click("#play-prototype")
    page.locator("#prototype-audio a[download]").first.wait_for(state="attached")
    page.wait_for_function("document.querySelector('#prototype-caption')?.innerText.includes('pre-rendered')")
    caption = page.locator("#prototype-caption").inner_text()  # the shipped renders' settings, in words
    assert "unipc sampler, 14 steps" in caption and "noise temperature 0.4, vocos vocoder, -20 LUFS" in caption
    assert "What you hear." in page.locator("#prototypes-note").inner_text()
    _save(page, tmp_path, "prototypes-desktop")
    page.get_by_role("tab", name="Model").click()
    page.locator("#model-single").wait_for(state="visible")  # one model offered: no selector
    assert page.locator("#model-select").is_hidden()
    assert not errors, errors
    page.close()
