"""The contract: what a caller may ask of a Gaze classifier, and what comes back (README "The contract").

`Options` is the one typed request: each field's type, default and help are read by the HTTP parser
(service/requests.py), the OpenAPI schema (service/schemas.py), the CLI's flags (inference/predict.py)
and the Predictor; constructing one is the validation, with the messages a caller sees. Adding an option
means adding its field here and using it where it has an effect, nothing else.

`Prediction` is what comes back per text: a TypedDict, so that it is a plain dict at run time (serialized
as it is, fast) and typed for every reader; the service's response schema is built from it.
"""

from __future__ import annotations

import re
from dataclasses import MISSING, dataclass, field, fields
from typing import Annotated, Any, Literal, get_args, get_origin, get_type_hints

from pydantic import Field
from typing_extensions import TypedDict  # pydantic reads TypedDicts from typing_extensions on Python < 3.12

# The attention modes: which maps come back with each prediction.
Mode = Literal["none", "cls", "last", "all", "rollout"]
MODES: tuple[str, ...] = get_args(Mode)
MAP_MODES = frozenset(MODES) - {"none"}
# How logits become `scores`, as in HF's TextClassificationPipeline: "none" returns the raw logits.
Function = Literal["softmax", "sigmoid", "none"]
FUNCTIONS: tuple[str, ...] = get_args(Function)
# Token attribution methods (inference/attributions.py): one score per token for one label.
Attribution = Literal["none", "gradient_x_input", "integrated_gradients", "attention_gradient"]
ATTRIBUTIONS: tuple[str, ...] = get_args(Attribution)
# A multi-label model's prediction lists every label whose sigmoid score reaches this (training evaluates so too).
THRESHOLD = 0.5

_SURROGATES = re.compile("[\ud800-\udfff]")

# What is classified: one text, or a pair of texts (premise and hypothesis, query and passage) that the tokenizer
# joins as BERT does, [CLS] a [SEP] b [SEP], the second with token type 1.
Text = str | tuple[str, str]


class ContractError(ValueError):
    """A request the contract refuses. `kind` is "invalid" (malformed or unknown) or "too_large" (over a limit):
    the service maps kinds to statuses (service/errors.py), the CLI prints the message."""

    def __init__(self, message: str, kind: Literal["invalid", "too_large"] = "invalid"):
        super().__init__(message)
        self.kind = kind


class OverCostError(ContractError):
    """A request whose estimated work passes the caller's limit (`Predictor.items`): too large."""

    def __init__(self, message: str):
        super().__init__(message, "too_large")


class TooLongError(ContractError):
    """A text longer than the model's max positions, where the caller asked not to truncate (`Predictor.items`):
    too large. `index` is the text's place in the request."""

    def __init__(self, message: str, index: int):
        super().__init__(message, "too_large")
        self.index = index


def option(default: Any, help: str, *, noun: str | None = None, minimum: int | None = None) -> Any:
    """A field of `Options`: its default, the help the schema and the CLI show, and what its checks need
    (`noun` names a choice in "unknown <noun> ..."; `minimum` bounds an integer)."""
    return field(default=default, metadata={"help": help, "noun": noun, "minimum": minimum})


@dataclass(frozen=True, slots=True)
class Options:
    """How to answer each text of a request: every field of a /classify request but `texts`."""

    attention: Mode = option(
        "cls",
        "none: no maps; cls: [L, H, T] rows of the [CLS] query; last: [H, T, T] of the last layer; "
        "all: [L, H, T, T]; rollout: [T] attention rollout from [CLS].",
        noun="attention mode",
    )
    attribution: Attribution = option(
        "none",
        "Token attributions, one number per token: none; gradient_x_input; integrated_gradients "
        "(20 steps from a [PAD] baseline); attention_gradient (Chefer et al. 2021). Gradients cost compute: "
        "they count in the request's cost limit (integrated_gradients about 20 times the others).",
        noun="attribution",
    )
    target: str | None = option(
        None,
        "The label to attribute: one of the model's labels, only with an attribution other than none; "
        "default: the predicted label",
        noun="a label",
    )
    function_to_apply: Function | None = option(
        None,
        "How logits become scores: softmax (they sum to 1), sigmoid (each label on its own) or none "
        "(the raw logits). Default (null): as HF's pipeline, sigmoid for a multi-label or one-label model, "
        "else softmax.",
        noun="function_to_apply",
    )
    top_k: int | None = option(
        None, "Also list the top_k labels, best first, in each prediction's `top`; null: no list", minimum=1
    )

    def __post_init__(self) -> None:
        for spec in fields(self):
            check_option(spec.name, getattr(self, spec.name))
        if self.target is not None and self.attribution == "none":
            raise ContractError("'target' names the label to attribute: it needs an 'attribution' other than 'none'")


OPTION_TYPES: dict[str, Any] = get_type_hints(Options)
OPTION_FIELDS = {spec.name: spec for spec in fields(Options)}
OPTION_DEFAULTS = {name: spec.default for name, spec in OPTION_FIELDS.items() if spec.default is not MISSING}


def unwrap(hint: Any) -> tuple[Any, bool]:
    """(the type of an option without None, whether None is allowed): `int | None` → (int, True)."""
    members = get_args(hint) if get_origin(hint) is not Literal else ()
    if type(None) not in members:
        return hint, False
    (base,) = [member for member in members if member is not type(None)]
    return base, True


def check_option(name: str, value: Any) -> None:
    """ContractError, in the words a caller sees, unless `value` has the type of the option `name`."""
    base, nullable = unwrap(OPTION_TYPES[name])
    if value is None and nullable:
        return
    meta = OPTION_FIELDS[name].metadata
    or_null = " (or null)" if nullable else ""
    if get_origin(base) is Literal:
        choices = get_args(base)
        if not isinstance(value, str) or value not in choices:
            raise ContractError(f"unknown {meta['noun']} {value!r:.60}; expected one of {', '.join(choices)}{or_null}")
    elif base is int:
        minimum = meta["minimum"]
        if type(value) is not int or (minimum is not None and value < minimum):
            raise ContractError(f"{name} must be an integer of at least {minimum}{or_null}, got {value!r:.60}")
    elif base is str and not isinstance(value, str):
        raise ContractError(f"'{name}' must be {meta['noun']} (a string), got {kind_of(value)}")


def kind_of(value: Any) -> str:
    """What a JSON value is, in words, for an error message."""
    kinds = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return kinds.get(type(value), "a number")


def sanitize(text: str) -> str:
    """Replace unpaired UTF-16 surrogates (valid in JSON escapes, not in Unicode text) with U+FFFD."""
    return _SURROGATES.sub("\ufffd", text)


def characters(text: Text) -> int:
    """How long `text` is, in code points: a pair's two texts together."""
    return len(text) if isinstance(text, str) else len(text[0]) + len(text[1])


def check_text(text: Any, name: str, max_chars: int | None = None) -> None:
    """ContractError unless `text` (called `name` in the message) is a non-blank string within the limit."""
    if not isinstance(text, str):
        raise ContractError(f"{name} is not a string (got {kind_of(text)})")
    if not text or text.isspace():
        raise ContractError(f"{name} is empty or whitespace-only")
    if max_chars is not None and len(text) > max_chars:
        raise ContractError(f"{name} has {len(text)} characters; the limit is {max_chars}", "too_large")


# -- what comes back, per text -------------------------------------------------------------------


class LabelScore(TypedDict):
    label: str
    score: float


class Attention(TypedDict):
    mode: Mode
    shape: Annotated[
        list[int], Field(description="[L, H, T] for cls, [H, T, T] for last, [L, H, T, T] for all, [T] rollout")
    ]
    values: Annotated[
        list[float] | list[list[float]] | list[list[list[float]]] | list[list[list[list[float]]]],
        Field(description="Nested lists of the given shape, rounded to 4 decimals; every last-axis row sums to 1"),
    ]


class TokenAttribution(TypedDict):
    method: Attribution
    target: Annotated[str, Field(description="The label whose log-odds the values explain")]
    values: Annotated[
        list[float],
        Field(description="[T]: each token's contribution to the target's log-odds (positive: for it), 4 decimals"),
    ]


class Word(TypedDict):
    start: Annotated[int, Field(description="Where the word starts in the text as sent (a code point index)")]
    end: Annotated[int, Field(description="Where it ends, exclusive: text[start:end] is the word")]
    tokens: Annotated[list[int], Field(description="The indices of its tokens (WordPiece pieces) in `tokens`")]
    weight: Annotated[
        float | None,
        Field(description="The sum of its tokens' attention weights (see the contract), 4 decimals; null without maps"),
    ]
    attribution: Annotated[
        float | None,
        Field(description="The sum of its tokens' attribution values, 4 decimals; null without an attribution"),
    ]


class _PredictionBase(TypedDict):
    label: str
    score: Annotated[float, Field(description="The score of `label` (see `scores`)")]
    scores: Annotated[
        dict[str, float],
        Field(
            description="Probability of every label: a softmax (they sum to 1), or for a multi-label model each "
            "label's own sigmoid; or as `function_to_apply` asks"
        ),
    ]
    top: Annotated[list[LabelScore] | None, Field(description="With `top_k`: the top_k labels and scores, best first")]
    tokens: Annotated[
        list[str], Field(description="The tokens the model saw, [CLS] and [SEP] included (T = len(tokens))")
    ]
    offsets: Annotated[
        list[list[int] | None],
        Field(
            description="Per token, its [start, end) in the text as sent (code point indices); null for [CLS] and [SEP]"
        ),
    ]
    truncated: Annotated[bool, Field(description="True if the text was cut to the model's max positions")]
    attention: Attention | None
    words: Annotated[
        list[Word] | None,
        Field(description="With attention maps or an attribution: the words and their tokens' summed weights"),
    ]
    attribution: TokenAttribution | None


class Prediction(_PredictionBase, total=False):
    labels: Annotated[
        list[str],
        Field(
            description="Multi-label models only: every label whose score is 0.5 or more, in label order (may be empty)"
        ),
    ]
