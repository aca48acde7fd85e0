"""Classify texts from the command line with the same core as the service.

python -m service.predict "a gripping, funny film" --attention rollout
python -m service.predict "text one" "text two" --model path/to/folder --top 3
python -m service.predict "text" --json          # the service's JSON for each text
python -m service.predict "a dull film" --attribution integrated_gradients --target positive
python -m service.predict "a dull film" --top-k 2 --function-to-apply none   # the 2 best labels, raw logits
"""

from __future__ import annotations

import argparse
import json
import sys

from model.predictor import (
    ATTRIBUTIONS,
    DEFAULT_MODEL,
    DEVICES,
    FUNCTIONS,
    MODES,
    PRECISION_CHOICES,
    ModelLoadError,
    Predictor,
    token_importance,
)

SPECIAL = {"[CLS]", "[SEP]", "[PAD]"}


def top_tokens(prediction: dict, k: int) -> list[tuple[str, float]]:
    """The k tokens of most weight: by the attribution if there is one, else by attention (token_importance)."""
    attribution = prediction["attribution"]
    weights = attribution["values"] if attribution is not None else token_importance(prediction)
    if weights is None:
        return []
    pairs = [(token, w) for token, w in zip(prediction["tokens"], weights, strict=True) if token not in SPECIAL]
    return sorted(pairs, key=lambda pair: pair[1], reverse=True)[:k]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service.predict", description=__doc__.split("\n")[0])
    parser.add_argument("texts", nargs="+", help="one or more texts to classify")
    parser.add_argument("--attention", choices=MODES, default="rollout", help="attention mode (default: rollout)")
    parser.add_argument(
        "--attribution",
        choices=ATTRIBUTIONS,
        default="none",
        help="token attributions, listed instead of attention (default: none)",
    )
    parser.add_argument("--target", help="the label to attribute (default: the predicted one)")
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="saved Gaze folder (default: %(default)s)")
    parser.add_argument("--top", type=int, default=5, help="how many tokens to list (default: 5)")
    parser.add_argument("--top-k", type=int, help="list the K best labels with their scores (default: the best one)")
    parser.add_argument(
        "--function-to-apply",
        choices=FUNCTIONS,
        help="how logits become scores; none: the raw logits (default: sigmoid for a multi-label model, else softmax)",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISION_CHOICES,
        default="fp32",
        help="bf16: bf16 autocast; auto: time both first, keep the faster (default: fp32)",
    )
    parser.add_argument(
        "--device", choices=DEVICES, default="auto", help="auto: cuda when torch sees a GPU, else cpu (default: auto)"
    )
    parser.add_argument("--json", action="store_true", help="print the service's JSON prediction per text")
    args = parser.parse_args(argv)

    try:
        predictor = Predictor(args.model, precision=args.precision, device=args.device)
    except (ModelLoadError, ValueError) as error:  # ValueError: --device cuda without a GPU
        print(f"error: {error}", file=sys.stderr)
        return 2
    if predictor.precision_choice is not None:
        print(f"--precision auto chose {predictor.precision_choice}", file=sys.stderr)
    texts = [text for text in args.texts if text.strip()]
    if len(texts) != len(args.texts):
        print("error: empty or whitespace-only text", file=sys.stderr)
        return 2
    try:
        predictions = predictor.predict(
            texts,
            args.attention,
            args.attribution,
            args.target,
            function_to_apply=args.function_to_apply,
            top_k=args.top_k,
        )
    except ValueError as error:  # a target that is not one of the model's labels, a top_k below 1
        print(f"error: {error}", file=sys.stderr)
        return 2
    for text, prediction in zip(texts, predictions, strict=True):
        if args.json:
            print(json.dumps(prediction, ensure_ascii=False))
            continue
        if "labels" in prediction:  # a multi-label model: every label at or above the threshold, with its score
            found = ", ".join(f"{name} {prediction['scores'][name]:.4f}" for name in prediction["labels"])
            print(f"{found or '(no label)'}  {text}")
        else:
            print(f"{prediction['label']}  {prediction['score']:.4f}  {text}")
        if prediction["top"] is not None:
            print("  top: " + ", ".join(f"{entry['label']} {entry['score']:.4f}" for entry in prediction["top"]))
        if prediction["truncated"]:
            print(f"  (truncated to {len(prediction['tokens'])} tokens)")
        if prediction["attribution"] is not None:
            print(f"  {prediction['attribution']['method']} for {prediction['attribution']['target']!r}:")
        for token, weight in top_tokens(prediction, args.top):
            print(f"  {token:<20} {weight:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
