"""The web page at /ui/, in real headless Chromium (Debian's, driven by Playwright) against a real server."""

import shutil
from pathlib import Path

import pytest

sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


def test_page_classifies_and_draws_the_grid(server, browser):
    page = browser.new_page(viewport={"width": 1200, "height": 1400})
    outside = []
    page.on("request", lambda r: None if r.url.startswith(server) else outside.append(r.url))
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))

    page.goto(f"{server}/ui/")
    page.fill("#text", "a gripping , funny and moving film , though the ending drags .")
    page.click("#classify")
    page.wait_for_selector("#result:not([hidden])", timeout=30_000)

    assert page.text_content("#label") in {"negative", "positive"}
    tokens = page.locator("#tokens .token")
    assert tokens.first.text_content() == "[CLS]" and tokens.last.text_content() == "[SEP]"
    count = tokens.count()
    assert count > 5
    maps = page.locator("#grid canvas")
    assert maps.count() == 2 * 4  # tiny model: 2 layers × 4 heads
    assert page.evaluate("document.querySelector('#grid canvas').width") == count  # one pixel per token
    shaded = page.evaluate(
        "[...document.querySelectorAll('#tokens .token')].map(s => getComputedStyle(s).backgroundColor)"
    )
    assert len(set(shaded)) > 1, "tokens are shaded by rollout importance"

    tokens.nth(2).hover()  # hover a token: the caption and the shading follow it
    assert "attends" in page.text_content("#token-caption")
    maps.nth(5).click()  # layer 2, head 2
    page.wait_for_selector("#zoom:not([hidden])")
    assert page.text_content("#zoom-title") == "Layer 2, head 2"
    assert page.evaluate("document.getElementById('zoom-canvas').width") > 200

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "ui.png", full_page=True)
    assert not errors, errors
    assert not outside, f"the page fetched something from outside the service: {outside}"


def test_page_shows_server_errors(server, browser):
    page = browser.new_page()
    page.goto(f"{server}/ui/")
    page.fill("#text", "x" * 10_001)
    page.click("#classify")
    page.wait_for_function("document.getElementById('status').classList.contains('error')", timeout=30_000)
    assert "the limit is 10000" in page.text_content("#status")
