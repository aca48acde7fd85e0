"""The web page at /ui/, in real headless Chromium (Debian's, driven by Playwright) against a real server."""

import contextlib
import io
import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch
from conftest import tiny_config
from PIL import Image
from test_multi_label import crafted_classifier

from model import GazeForSequenceClassification

sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


@pytest.fixture(scope="module")
def tiny_model_dir(wide_model_dir):
    """The page is served with conftest's wide model: its attributions shade tokens visibly (not all ~0)."""
    return wide_model_dir


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


SENTENCE = "a gripping , funny and moving film , though the ending drags ."
NATURAL = "A gripping, funny and moving film — though the ending drags. 🎬 Don't miss it!"


def classify_on_page(page, server: str, text: str) -> None:
    """Open the page, classify `text` with its button, and wait for the result to show."""
    page.goto(f"{server}/ui/")
    page.fill("#text", text)
    page.click("#classify")
    page.wait_for_selector("#result:not([hidden])", timeout=30_000)


def test_page_classifies_and_draws_the_grid(server, browser):
    page = browser.new_page(viewport={"width": 1200, "height": 1400})
    outside = []
    page.on("request", lambda r: None if r.url.startswith(server) else outside.append(r.url))
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None)

    classify_on_page(page, server, SENTENCE)

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
    assert len(set(shaded)) > 1, "tokens are shaded by the default method"
    assert page.input_value("#shading") == "integrated_gradients"
    assert "integrated gradients" in page.text_content("#token-caption")
    assert page.is_visible("#shade-legend") and page.is_visible("#map-scale")  # what the colours mean
    assert page.text_content("#legend-for").startswith("for “")
    signed = min(page.evaluate("[...document.querySelectorAll('#words .word')].map(s => +s.title.split(': ')[1])")) < 0
    assert page.is_visible("#legend-against-part") == signed  # red is explained only where it is used
    scale = page.evaluate(
        "(() => { const c = document.getElementById('map-scale').getContext('2d');"
        " return [c.getImageData(0, 5, 1, 1).data[0], c.getImageData(159, 5, 1, 1).data[0]]; })()"
    )
    assert scale == [68, 253], "the scale runs from the ramp's first colour to its last"

    page.click("#pieces summary")  # the pieces are shown on demand
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


def test_page_shows_the_text_as_typed_shaded_by_word(server, browser):
    page = browser.new_page(viewport={"width": 1200, "height": 1400})
    classify_on_page(page, server, NATURAL)
    assert page.text_content("#words") == NATURAL  # the em-dash, the emoji and "Don't" as typed, not [UNK] or n ' t
    words = page.evaluate("[...document.querySelectorAll('#words .word')].map(s => s.textContent)")
    assert "—" in words and "🎬" in words and "drags" in words, " | ".join(words)  # each word as typed
    shaded = page.evaluate("[...document.querySelectorAll('#words .word')].map(s => s.style.background)")
    assert len(set(shaded)) > 1, "words are shaded by the default method"
    assert not page.is_visible("#tokens"), "the pieces are shown on demand only"
    page.click("#pieces summary")
    assert page.is_visible("#tokens") and "##" not in page.text_content("#words")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "ui-natural-text.png", full_page=True)


def test_page_shows_server_errors_and_clears_the_earlier_result(server, browser):
    page = browser.new_page()
    classify_on_page(page, server, SENTENCE)
    page.fill("#text", "x" * 10_001)
    page.click("#classify")
    page.wait_for_selector("#status.error", timeout=30_000)
    assert "the limit is 10000" in page.text_content("#status")
    assert page.is_hidden("#result"), "the earlier text's result stays under the new error"


def backgrounds(page) -> list[str]:
    return page.evaluate("[...document.querySelectorAll('#tokens .token, #words .word')].map(s => s.style.background)")


def test_picking_a_method_reshades_the_tokens(server, browser):
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    classify_on_page(page, server, SENTENCE)
    seen = {"integrated_gradients": backgrounds(page)}
    for method, words in [
        ("rollout", "attention rollout"),
        ("gradient_x_input", "gradient × input"),
        ("attention_gradient", "attention × gradient"),
    ]:
        with page.expect_response(lambda r: "/classify" in r.url) if method != "rollout" else contextlib.nullcontext():
            page.select_option("#shading", method)
        page.wait_for_selector(f"#token-caption:has-text('{words}')")
        seen[method] = backgrounds(page)
        assert len(set(seen[method])) > 1, method
    assert len({tuple(shading) for shading in seen.values()}) == 4, "every method shades differently"
    page.select_option("#shading", "integrated_gradients")  # fetched once: shaded again from the page's state
    page.wait_for_selector("#token-caption:has-text('integrated gradients')")
    assert backgrounds(page) == seen["integrated_gradients"]
    assert not errors, errors


def test_the_view_downloads_as_svg_and_png(server, browser, tmp_path):
    page = browser.new_page()
    classify_on_page(page, server, "a gripping , funny film")
    tokens = page.evaluate("[...document.querySelectorAll('#tokens .token')].map(s => s.textContent)")

    with page.expect_download() as download:
        page.click("#download-svg")
    svg_path = tmp_path / download.value.suggested_filename
    download.value.save_as(svg_path)
    root = ET.parse(svg_path).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg" and float(root.get("width")) > 0
    texts = [element.text for element in root.iter("{http://www.w3.org/2000/svg}text")]
    assert texts[2:] == tokens  # a title, a caption, then every token in order
    assert page.text_content("#label") in texts[0]
    opacities = {r.get("fill-opacity") for r in root.iter("{http://www.w3.org/2000/svg}rect") if r.get("fill-opacity")}
    assert len(opacities) > 1, "the tokens keep their shading"

    with page.expect_download() as download:
        page.click("#download-png")
    png = download.value.path().read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (2 * int(root.get("width")), 2 * int(root.get("height")))
    colours = Image.open(io.BytesIO(png)).convert("RGB").getcolors(maxcolors=1 << 20)
    assert len(colours) > 20, "the drawing is on it: text and shaded boxes, not a blank image"


def test_six_layers_of_twelve_heads_fit_the_page(start_server, browser, tmp_path_factory, tiny_tokenizer):
    """gaze-base's shape (6 layers x 12 heads): 72 maps in a grid that scrolls within itself, not the page."""
    folder = tmp_path_factory.mktemp("twelve-heads")
    torch.manual_seed(0)
    sizes = {"num_hidden_layers": 6, "num_attention_heads": 12, "hidden_size": 48, "intermediate_size": 96}
    GazeForSequenceClassification(tiny_config(vocab_size=len(tiny_tokenizer), **sizes)).save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    server = start_server(GAZE_MODEL=str(folder))
    page = browser.new_page(viewport={"width": 1000, "height": 1200})
    classify_on_page(page, server, SENTENCE)
    maps = page.locator("#grid canvas")
    assert maps.count() == 6 * 12
    assert page.evaluate("document.documentElement.scrollWidth") <= 1000, "the page grew sideways"
    maps.nth(6 * 12 - 1).click()
    page.wait_for_selector("#zoom:not([hidden])")
    assert page.text_content("#zoom-title") == "Layer 6, head 12"
    page.set_viewport_size({"width": 420, "height": 900})  # a phone: the grid scrolls in its box, the page does not
    assert page.evaluate("document.documentElement.scrollWidth") <= 420, "the page grew sideways at 420 px"


def test_a_multi_label_model_behind_an_api_key(start_server, browser, tmp_path_factory, tiny_tokenizer):
    """The page sends the key it is given; a multi-label model shows its set of labels, and any label can be
    explained (test_multi_label's crafted model: action 0.88 and drama 0.62 apply, comedy 0.12 does not)."""
    folder = crafted_classifier(tmp_path_factory.mktemp("multi-label"), tiny_tokenizer, "multi_label_classification")
    server = start_server(GAZE_MODEL=str(folder), GAZE_API_KEY="page-secret")
    page = browser.new_page(viewport={"width": 1200, "height": 1000})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{server}/ui/")
    page.fill("#text", NATURAL)
    page.click("#classify")
    page.wait_for_selector("#status.error", timeout=30_000)
    assert "Authorization: Bearer" in page.text_content("#status") and page.is_hidden("#result")

    page.fill("#api-key", "page-secret")
    page.click("#classify")
    page.wait_for_selector("#result:not([hidden])", timeout=30_000)
    assert page.text_content("#label") == "action, drama" and "0.5" in page.text_content("#label-caption")
    assert page.eval_on_selector_all("#scores .bar.applies", "bars => bars.length") == 2
    assert page.input_value("#target") == "action" and "“action”" in page.text_content("#token-caption")
    with page.expect_request(lambda r: "/classify" in r.url) as sent:
        page.select_option("#target", "comedy")
    assert json.loads(sent.value.post_data)["target"] == "comedy"
    assert sent.value.headers["authorization"] == "Bearer page-secret"
    page.wait_for_selector("#token-caption:has-text('comedy')")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "ui-multi-label.png", full_page=True)
    assert not errors, errors
