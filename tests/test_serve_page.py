"""The page at ``GET /`` in a real browser: Debian's chromium driven by Playwright for Python.

`make test` installs chromium when missing (root); without it (or without Playwright) this test skips and
says why. Set EFFNET_SERVE_SCREENSHOT=path to keep the screenshot (benchmarks/results/serve_page.png).
"""

from __future__ import annotations

import os
import shutil

import pytest

from .test_serve import CATS, lite0_server  # noqa: F401  (the fixture is shared)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM:
        pytest.skip("no chromium on PATH: `make test` installs Debian's chromium (as root)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")
    with sync_api.sync_playwright() as p:
        # Playwright's own browser download is not reachable from here: drive the system's chromium
        try:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        except sync_api.Error as exc:
            pytest.skip(f"{CHROMIUM} does not start under Playwright: {str(exc).splitlines()[0]}")
        yield browser
        browser.close()


def open_page(browser, base: str):
    """The served page in a new tab, and the list of every request it makes outside the server (must stay empty:
    the page works offline)."""
    page = browser.new_page(viewport={"width": 1000, "height": 720})
    outside: list[str] = []
    page.on("request", lambda r: None if r.url.startswith(base) or r.url.startswith("blob:")
            else outside.append(r.url))
    page.goto(f"{base}/")
    return page, outside


def test_page_classifies_chelsea_in_a_real_browser(browser, lite0_server, photos, tmp_path):  # noqa: F811
    base, _, _ = lite0_server
    page, outside = open_page(browser, base)
    page.wait_for_function("document.getElementById('model').textContent.includes('efficientnet_lite0')")
    page.set_input_files("#file", str(photos["chelsea"]))
    page.wait_for_selector("#result:not([hidden]) #bars li", timeout=60_000)
    top = page.text_content("#top")
    labels = page.locator("#bars .label").all_text_contents()
    assert top in CATS and labels[0] == top and len(labels) == 5
    widths = page.eval_on_selector_all("#bars .fill", "els => els.map(e => e.getBoundingClientRect().width)")
    assert widths[0] > 0 and widths == sorted(widths, reverse=True)  # bars drawn, longest first
    assert page.evaluate("document.getElementById('preview').naturalWidth") == 451  # chelsea is 451 x 300
    shot = tmp_path / "serve_page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if os.environ.get("EFFNET_SERVE_SCREENSHOT"):
        shutil.copy(shot, os.environ["EFFNET_SERVE_SCREENSHOT"])

    # a bad upload shows the server's one-line reason on the page
    page.set_input_files("#file", files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"not a picture"}])
    page.wait_for_selector("#error:not([hidden])")
    assert "not an image" in page.text_content("#error")

    # the API docs render too, from assets effnet serves itself (no CDN)
    page.goto(f"{base}/docs")
    page.wait_for_selector("text=/predict", timeout=30_000)
    assert not outside, f"the page fetched from outside the server: {outside}"
    page.close()
