"""The bodies of the model's two routes, decoded and checked once, in the contract's words.

POST /classify is Gaze's own API: `texts` (a list, or one text) plus the fields of
`inference.contract.Options`, which are checked by constructing one. POST /predict is Text Embeddings
Inference's classification route (`inputs`, `raw_scores`, `truncate`; texts and text pairs), answered through
the same core.
Each parser returns what the API needs, its texts with any unpaired surrogate escape (valid JSON, not
valid Unicode) replaced by U+FFFD, or raises a RequestError.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any

from inference.contract import OPTION_FIELDS, ContractError, Options, Text, characters, check_text, kind_of, sanitize

from .errors import RequestError

CLASSIFY_PATH = "/classify"
PREDICT_PATH = "/predict"  # Text Embeddings Inference's classification route
CLASSIFY_FIELDS = ("texts", *OPTION_FIELDS)
PREDICT_FIELDS = ("inputs", "raw_scores", "truncate")


@dataclass(frozen=True, slots=True)
class Classify:
    """A checked /classify request."""

    texts: list[str]
    options: Options


@dataclass(frozen=True, slots=True)
class TeiPredict:
    """A checked /predict request: one text (`single`) or a list of texts and pairs."""

    texts: list[Text]
    single: bool
    raw_scores: bool
    truncate: bool


def max_body_bytes(max_texts: int, max_chars: int) -> int:
    """The largest body a valid request can have: every character as a 12-byte surrogate-pair escape."""
    return max_texts * (max_chars * 12 + 8) + 4096


def check_content_type(content_type: str | None) -> None:
    media_type = (content_type or "").split(";")[0].strip().lower()
    if media_type != "application/json":
        got = f"'{content_type}'" if content_type else "none"
        raise RequestError("unsupported_media_type", f"Content-Type must be application/json, got {got}")


def parse_classify(body: bytes, max_texts: int, max_chars: int) -> Classify:
    """Decode and check a /classify body. Whether `target` is one of the model's labels is the Predictor's
    to say (`Predictor.check_options`)."""
    payload = load_object(body, CLASSIFY_FIELDS, '{"texts": ["..."], "attention": "cls"}')
    if "texts" not in payload:
        raise RequestError("invalid", f"missing field 'texts' (a list of 1 to {max_texts} strings)")
    texts = payload.pop("texts")
    if isinstance(texts, str):  # one text, as transformers' pipeline takes it: a list of one
        try:
            check_text(texts, "texts", max_chars)
        except ContractError as error:
            raise RequestError(error.kind, str(error)) from None
        texts = [texts]
    if not isinstance(texts, list):
        raise RequestError("invalid", f"'texts' must be a list of strings, got {kind_of(texts)}")
    if not texts:
        raise RequestError("invalid", f"'texts' is empty; send 1 to {max_texts} texts")
    if len(texts) > max_texts:
        raise RequestError("too_large", f"too many texts: {len(texts)}; the limit is {max_texts} per request")
    try:
        for i, text in enumerate(texts):
            check_text(text, f"texts[{i}]", max_chars)
        options = Options(**payload)
    except ContractError as error:
        raise RequestError(error.kind, str(error)) from None
    return Classify([sanitize(text) for text in texts], options)


def parse_predict(body: bytes, max_texts: int, max_chars: int) -> TeiPredict:
    """Decode and check a /predict body: one text, or a list whose items are each a text, TEI's [text] or a
    pair [text, text]. (TEI reads a list of two strings as one pair; here it is two texts, as it always was.)"""
    payload = load_object(body, PREDICT_FIELDS, '{"inputs": "..."}')
    if "inputs" not in payload:
        raise RequestError("invalid", f"missing field 'inputs' (a string, or a list of 1 to {max_texts} strings)")
    inputs = payload["inputs"]
    try:
        if isinstance(inputs, list):
            if not inputs:
                raise RequestError("invalid", f"'inputs' is empty; send a string or a list of 1 to {max_texts} strings")
            if len(inputs) > max_texts:
                raise RequestError("too_large", f"too many inputs: {len(inputs)}; the limit is {max_texts} per request")
            texts = [predict_input(item, f"inputs[{i}]", max_chars) for i, item in enumerate(inputs)]
        elif isinstance(inputs, str):
            check_text(inputs, "inputs", max_chars)
            texts = [sanitize(inputs)]
        else:
            raise RequestError("invalid", f"'inputs' must be a string or a list of strings, got {kind_of(inputs)}")
    except ContractError as error:
        raise RequestError(error.kind, str(error)) from None
    flags = {name: payload.get(name, False) for name in ("raw_scores", "truncate")}
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise RequestError("invalid", f"'{name}' must be true or false, got {kind_of(value)}")
    return TeiPredict(texts, isinstance(inputs, str), **flags)


def predict_input(item: Any, name: str, max_chars: int) -> Text:
    """One item of /predict's `inputs` list, checked: a text, [text] (a text) or [text, text] (a pair, whose
    two texts share the limit on characters, as TEI counts them)."""
    if not isinstance(item, list):
        check_text(item, name, max_chars)
        return sanitize(item)
    if len(item) not in (1, 2):
        raise RequestError(
            "invalid", f"{name} has {len(item)} items; a list in 'inputs' is [text] or a pair [text, text]"
        )
    for side, text in enumerate(item):
        check_text(text, f"{name}[{side}]", max_chars)
    if len(item) == 1:
        return sanitize(item[0])
    pair = (item[0], item[1])
    if characters(pair) > max_chars:
        raise RequestError(
            "too_large", f"{name} has {characters(pair)} characters in its two texts; the limit is {max_chars}"
        )
    return sanitize(pair[0]), sanitize(pair[1])


# The routes that run the model, and each one's parser (the service answers both through the same Batcher).
PARSERS = {CLASSIFY_PATH: parse_classify, PREDICT_PATH: parse_predict}


def load_object(body: bytes, fields: tuple[str, ...], example: str) -> dict[str, Any]:
    """The body's JSON object, or RequestError("invalid") if it is malformed, not an object or has another field."""
    payload = load_json(body)
    if not isinstance(payload, dict):
        raise RequestError("invalid", f"the body must be a JSON object like {example}, got {kind_of(payload)}")
    unknown = sorted(set(payload) - set(fields))
    if unknown:
        names = ", ".join(f"'{name}'" for name in fields)
        raise RequestError("invalid", f"unknown field {unknown[0]!r:.60}; the fields are {names}")
    return payload


def load_json(body: bytes) -> Any:
    """The body's JSON value, or RequestError("invalid") that says what is malformed."""
    try:  # strictly UTF-8: json.loads(bytes) would also accept UTF-16/32 and a BOM, which BentoML refuses
        return json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise RequestError("invalid", f"malformed JSON: the body is not valid UTF-8 ({error.reason})") from None
    except json.JSONDecodeError as error:
        message = f"malformed JSON: {error.msg} at line {error.lineno} column {error.colno}"
        raise RequestError("invalid", message) from None
    except ValueError:  # the only other ValueError of json.loads: Python's limit on integer digits
        limit = sys.get_int_max_str_digits()
        raise RequestError("invalid", f"malformed JSON: a number has more than {limit} digits") from None
    except RecursionError:
        raise RequestError("invalid", "malformed JSON: nested too deeply") from None
