"""Classify texts from the command line with the same core as the service.

python -m inference.predict "a gripping, funny film" --attention rollout
python -m inference.predict "text one" "text two" --model path/to/folder --top 3
python -m inference.predict "text" --json          # the service's JSON for each text
python -m inference.predict "a dull film" --attribution integrated_gradients --target positive
python -m inference.predict "a dull film" --top-k 2 --function-to-apply none   # the 2 best labels, raw logits
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Literal, get_args, get_origin

from model.folder import ModelLoadError

from .contract import (
    OPTION_DEFAULTS,
    OPTION_FIELDS,
    OPTION_TYPES,
    ContractError,
    Options,
    Prediction,
    check_text,
    unwrap,
)
from .maps import token_importance
from .precision import DEVICES, PRECISION_CHOICES
from .predictor import DEFAULT_MODEL, Predictor

SPECIAL = {"[CLS]", "[SEP]", "[PAD]"}
# Where the CLI's default differs from the contract's: a terminal lists tokens, and rollout ranks them best.
CLI_DEFAULTS = {"attention": "rollout"}


def add_option_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per field of the contract's `Options`, with its choices, default and help."""
    for name, spec in OPTION_FIELDS.items():
        base, _ = unwrap(OPTION_TYPES[name])
        default = CLI_DEFAULTS.get(name, OPTION_DEFAULTS[name])
        shown = "" if default is None else f" (default: {default})"  # a None default is told by the help itself
        flag: dict = {"default": default, "help": spec.metadata["help"] + shown}
        if get_origin(base) is Literal:
            flag["choices"] = get_args(base)
        elif base is int:
            flag |= {"type": int, "metavar": "N"}
        parser.add_argument("--" + name.replace("_", "-"), dest=name, **flag)


def top_tokens(prediction: Prediction, k: int) -> list[tuple[str, float]]:
    """The k tokens of most weight: by the attribution if there is one, else by attention (token_importance)."""
    attribution = prediction["attribution"]
    weights = attribution["values"] if attribution is not None else token_importance(prediction)
    if weights is None:
        return []
    pairs = [(token, w) for token, w in zip(prediction["tokens"], weights, strict=True) if token not in SPECIAL]
    return sorted(pairs, key=lambda pair: pair[1], reverse=True)[:k]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inference.predict", description=__doc__.split("\n")[0])
    parser.add_argument("texts", nargs="+", help="one or more texts to classify")
    add_option_flags(parser)
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="saved Gaze folder (default: %(default)s)")
    parser.add_argument("--top", type=int, default=5, help="how many tokens to list (default: 5)")
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
        options = Options(**{name: getattr(args, name) for name in OPTION_FIELDS})
        for i, text in enumerate(args.texts):
            check_text(text, f"text {i + 1}")
        predictor = Predictor(args.model, precision=args.precision, device=args.device)
        if predictor.precision_choice is not None:
            print(f"--precision auto chose {predictor.precision_choice}", file=sys.stderr)
        predictions = predictor.predict(args.texts, options)
    except (ContractError, ModelLoadError, ValueError) as error:  # ValueError: --device cuda without a GPU
        print(f"error: {error}", file=sys.stderr)
        return 2
    for text, prediction in zip(args.texts, predictions, strict=True):
        if args.json:
            print(json.dumps(prediction, ensure_ascii=False))
            continue
        print_prediction(text, prediction, args.top)
    return 0


def print_prediction(text: str, prediction: Prediction, top: int) -> None:
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
    for token, weight in top_tokens(prediction, top):
        print(f"  {token:<20} {weight:.4f}")


if __name__ == "__main__":
    sys.exit(main())
