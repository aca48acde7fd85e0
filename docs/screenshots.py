"""The page's screenshots in docs/, taken from a real `bentoml serve` in Debian's headless Chromium.

    .venv/bin/python -m docs.screenshots                          # docs/ui.png: the shipped model
    .venv/bin/python -m docs.screenshots --model runs/genres/model --out docs/ui-multi-label.png --target horror \\
        --zoom none --text "A hilarious cartoon: talking animals, a haunted house, a demon, goofy gags, jump scares."

docs/ui-multi-label.png's model: the README's own-data command (`--train-file runs/genres/train.jsonl --output-dir
runs/genres/model`) on the 300 generated genre texts of tests/test_multi_label.py (`genre_rows(300, seed=0)`).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

from benchmarks.harness import ROOT, served, server_env

CHROMIUM = "/usr/bin/chromium"
NATURAL = "A gripping, funny and moving film — though the ending drags. 🎬 Don't miss it!"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "checkpoints" / "gaze-sst2"), help="the Gaze folder to serve")
    parser.add_argument("--text", default=NATURAL, help="the text to classify on the page")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "ui.png")
    parser.add_argument("--target", help="the label the shading explains (a multi-label model's picker)")
    parser.add_argument("--zoom", default="6,2", help="'layer,head' of the map to enlarge (from 1), or none")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as home:
        env = server_env(home, GAZE_MODEL=args.model, GAZE_WORKERS=1)
        with served(env=env, log_path=Path(home) / "server.log") as server, sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1200, "height": 1000})
            page.goto(f"{server}/ui/")
            page.fill("#text", args.text)
            page.click("#classify")
            page.wait_for_selector("#result:not([hidden])", timeout=120_000)
            if args.target:
                page.select_option("#target", args.target)
                page.wait_for_selector("#status:has-text(' ms')", timeout=120_000)  # its attribution is in
            page.click("#pieces summary")
            if args.zoom != "none":
                layer, head = (int(n) for n in args.zoom.split(","))
                labels = page.locator("#grid > *").all_text_contents()
                heads = sum(label.startswith("head ") for label in labels)
                page.locator("#grid canvas").nth((layer - 1) * heads + head - 1).click()
                page.wait_for_selector("#zoom:not([hidden])")
            page.mouse.move(0, 0)
            page.screenshot(path=args.out, full_page=True)
            browser.close()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
