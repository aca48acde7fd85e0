"""The request and response schemas of /classify and /predict, for BentoML's /docs.json.

/classify's are built from the contract (inference/contract.py): its request from the fields of
`Options` (types, defaults, help), its response from the `Prediction` TypedDict. The checks themselves
are the contract's (service/requests.py); these models only describe them. /predict's are TEI's shapes.
"""

from __future__ import annotations

from typing import Annotated

import bentoml
from pydantic import ConfigDict, Field, create_model

from inference.contract import OPTION_FIELDS, OPTION_TYPES, LabelScore, Prediction


class _Strict(bentoml.IODescriptor):
    model_config = ConfigDict(extra="forbid")  # /docs.json says what the parser enforces


def classify_request(max_texts: int, max_chars: int) -> type[bentoml.IODescriptor]:
    """/classify's request: `texts` within the service's limits, then every option of the contract."""
    text = Annotated[str, Field(min_length=1, max_length=max_chars)]
    texts = Field(
        description=f"A text, or a list of 1 to {max_texts} texts, of 1 to {max_chars} characters, not "
        "whitespace-only nor only characters the tokenizer drops (control and format characters) (one text is a "
        "list of one, as transformers' pipeline takes it). Longer texts than the "
        "model's max positions are truncated."
    )
    texts_type = text | Annotated[list[text], Field(min_length=1, max_length=max_texts)]
    options = {
        name: (OPTION_TYPES[name], Field(spec.default, description=spec.metadata["help"], ge=spec.metadata["minimum"]))
        for name, spec in OPTION_FIELDS.items()
    }
    model = create_model("ClassifyRequest", __base__=_Strict, texts=(texts_type, texts), **options)
    model.__doc__ = "Texts to classify, and what to return with each prediction."
    return model


def predict_request(max_texts: int, max_chars: int) -> type[bentoml.IODescriptor]:
    """POST /predict, the route of Text Embeddings Inference (TEI): one text, or a list of texts and pairs."""
    text = Annotated[str, Field(min_length=1, max_length=max_chars)]
    one_or_pair = Annotated[list[text], Field(min_length=1, max_length=2, description="[text] or a pair [text, text]")]

    class PredictRequest(_Strict):
        """POST /predict, the route of Text Embeddings Inference (TEI): one text, or a list of texts and pairs."""

        inputs: text | Annotated[list[text | one_or_pair], Field(min_length=1, max_length=max_texts)] = Field(
            description=f"A text, or a list of 1 to {max_texts} items, each a text, [text] or a pair [text, text] "
            "(premise and hypothesis, query and passage: joined as [CLS] a [SEP] b [SEP], the second of token "
            f"type 1; a list of two strings is two texts, not a pair as in TEI). Texts of 1 to {max_chars} "
            "characters (a pair's two together), not whitespace-only nor only characters the tokenizer drops "
            "(control and format characters)"
        )
        raw_scores: bool = Field(False, description="true: the raw logits; false: the model's default scores")
        truncate: bool = Field(
            False,
            description="true: cut a text longer than the model's max positions; false: such a text is a 413 "
            "error (as TEI)",
        )

    return PredictRequest


class ClassifyResponse(bentoml.IODescriptor):
    predictions: list[Prediction] = Field(description="One per text, in input order")


# /predict answers a text with its labels, best first; a list of texts with a list of those (as TEI).
PredictResponse = list[LabelScore] | list[list[LabelScore]]
