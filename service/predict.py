"""Classify texts from the command line with the same core as the service.

python -m service.predict "a gripping, funny film" --attention rollout
python -m service.predict "text one" "text two" --model path/to/folder --top 3
python -m service.predict "text" --json          # the service's JSON for each text
"""

from __future__ import annotations

import argparse
import json
import sys

from model.predictor import DEFAULT_MODEL, MODES, PRECISIONS, ModelLoadError, Predictor

SPECIAL = {"[CLS]", "[SEP]", "[PAD]"}


def token_importance(prediction: dict) -> list[float] | None:
    """One weight per token: the rollout itself, or the [CLS] row averaged over heads (and layers)."""
    attention = prediction["attention"]
    if attention is None:
        return None
    values, mode = attention["values"], attention["mode"]
    if mode == "rollout":
        return values
    if mode == "cls":  # [L, H, T]
        rows = [row for layer in values for row in layer]
    elif mode == "last":  # [H, T, T]
        rows = [head[0] for head in values]
    else:  # all: [L, H, T, T]
        rows = [head[0] for layer in values for head in layer]
    return [sum(column) / len(rows) for column in zip(*rows, strict=True)]


def top_tokens(prediction: dict, k: int) -> list[tuple[str, float]]:
    weights = token_importance(prediction)
    if weights is None:
        return []
    pairs = [(token, w) for token, w in zip(prediction["tokens"], weights, strict=True) if token not in SPECIAL]
    return sorted(pairs, key=lambda pair: pair[1], reverse=True)[:k]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service.predict", description=__doc__.split("\n")[0])
    parser.add_argument("texts", nargs="+", help="one or more texts to classify")
    parser.add_argument("--attention", choices=MODES, default="rollout", help="attention mode (default: rollout)")
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="saved Gaze folder (default: %(default)s)")
    parser.add_argument("--top", type=int, default=5, help="how many tokens to list (default: 5)")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32", help="bf16: faster autocast (default: fp32)")
    parser.add_argument("--json", action="store_true", help="print the service's JSON prediction per text")
    args = parser.parse_args(argv)

    try:
        predictor = Predictor(args.model, precision=args.precision)
    except ModelLoadError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    texts = [text for text in args.texts if text.strip()]
    if len(texts) != len(args.texts):
        print("error: empty or whitespace-only text", file=sys.stderr)
        return 2
    for text, prediction in zip(texts, predictor.predict(texts, args.attention), strict=True):
        if args.json:
            print(json.dumps(prediction, ensure_ascii=False))
            continue
        print(f"{prediction['label']}  {prediction['score']:.4f}  {text}")
        if prediction["truncated"]:
            print(f"  (truncated to {len(prediction['tokens'])} tokens)")
        for token, weight in top_tokens(prediction, args.top):
            print(f"  {token:<20} {weight:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
