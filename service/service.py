"""The Gaze BentoML service: `bentoml serve service.service:Gaze` (or `make serve`).

POST /classify is a plain `bentoml.api` (so it is in /docs.json with its schemas). Requests reach
it through `GazeMiddleware` (service/http.py), which checks them and answers every contract error
with our own JSON body; the API then tokenizes, queues its texts on the worker's `Batcher`
(service/batching.py), which runs texts of concurrent requests together through `Predictor`
(model/predictor.py), and returns the predictions as pre-serialized JSON.

Everything configurable is an environment variable (service/config.py, README "Serving").
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import anyio.to_thread
import bentoml
import torch
from bentoml._internal.context import server_context  # worker_index: None outside a worker
from pydantic import ConfigDict, Field
from starlette.responses import JSONResponse, Response
from starlette.staticfiles import StaticFiles

from model.predictor import Attribution, Function, Item, Mode, ModelLoadError, Predictor

from .batching import Batcher, Overloaded
from .config import Settings, check_source
from .http import GazeEdge, GazeMiddleware, Unsent, error_body

logger = logging.getLogger("gaze.service")
STATIC = Path(__file__).resolve().parent / "static"
MAIN_PROCESS = server_context.worker_index is None  # `bentoml serve`/`bentoml build` itself, not a worker

# Fail here, in the process that runs `bentoml serve`/`bentoml build`, before any worker starts:
# a bad setting (GAZE_DEVICE=cuda without a GPU, ...) or a missing or corrupt model is a clear one-line
# error and a non-zero exit. (A worker whose model fails to load is restarted by BentoML forever, so the
# workers cannot be the ones to check.)
try:
    SETTINGS = Settings.from_env()
    if MAIN_PROCESS:
        torch.set_num_threads(SETTINGS.threads)  # GAZE_PRECISION=auto measures as one worker runs
    _checked = check_source(SETTINGS.model, full=MAIN_PROCESS, device=SETTINGS.device, precision=SETTINGS.precision)
except (ValueError, ModelLoadError) as _error:
    print(f"gaze: cannot start: {_error}", file=sys.stderr)
    raise SystemExit(2) from None
if _checked is not None and _checked.precision_choice is not None:
    # GAZE_PRECISION=auto is measured once, here, before any worker starts. The workers inherit this
    # process's environment, so all of them run the chosen precision, and no measurement competes with
    # another worker's start.
    print(f"gaze: GAZE_PRECISION=auto chose {_checked.precision_choice}", file=sys.stderr, flush=True)
    os.environ["GAZE_PRECISION"] = _checked.precision
    SETTINGS = dataclasses.replace(SETTINGS, precision=_checked.precision)
del _checked

Text = Annotated[str, Field(min_length=1, max_length=SETTINGS.max_chars)]


class ClassifyRequest(bentoml.IODescriptor):
    """Texts to classify, and which attention to return with each prediction."""

    model_config = ConfigDict(extra="forbid")  # /docs.json says what the middleware enforces

    texts: Annotated[
        list[Text],
        Field(
            min_length=1,
            max_length=SETTINGS.max_texts,
            description=f"1 to {SETTINGS.max_texts} texts of 1 to {SETTINGS.max_chars} characters, "
            "not whitespace-only. Longer texts than the model's max positions are truncated.",
        ),
    ]
    attention: Mode = Field(
        "cls",
        description="none: no maps; cls: [L, H, T] rows of the [CLS] query; last: [H, T, T] of the last layer; "
        "all: [L, H, T, T]; rollout: [T] attention rollout from [CLS].",
    )
    attribution: Attribution = Field(
        "none",
        description="Token attributions, one number per token: none; gradient_x_input; integrated_gradients "
        "(20 steps from a [PAD] baseline); attention_gradient (Chefer et al. 2021). Gradients cost compute: "
        "they count in the request's cost limit (integrated_gradients about 20 times the others).",
    )
    target: str | None = Field(
        None,
        description="The label to attribute: one of the model's labels, only with an attribution other than none "
        "(else 400); default: the predicted label",
    )
    function_to_apply: Function | None = Field(
        None,
        description="How logits become scores: softmax (they sum to 1), sigmoid (each label on its own) or none "
        "(the raw logits). Default (null): as HF's pipeline, sigmoid for a multi-label or one-label model, "
        "else softmax.",
    )
    top_k: int | None = Field(
        None, ge=1, description="Also list the top_k labels, best first, in each prediction's `top`; null: no list"
    )


class PredictRequest(bentoml.IODescriptor):
    """POST /predict, the route of Text Embeddings Inference (TEI): one text, or a list of texts."""

    model_config = ConfigDict(extra="forbid")

    inputs: Text | Annotated[list[Text], Field(min_length=1, max_length=SETTINGS.max_texts)] = Field(
        description=f"A text, or a list of 1 to {SETTINGS.max_texts} texts, of 1 to {SETTINGS.max_chars} characters, "
        "not whitespace-only"
    )
    raw_scores: bool = Field(False, description="true: the raw logits; false: the model's default scores")
    truncate: bool = Field(
        False,
        description="true: cut a text longer than the model's max positions; false: such a text is a 413 error "
        "(as TEI)",
    )


class LabelScore(bentoml.IODescriptor):
    label: str
    score: float


# /predict answers a text with its labels, best first; a list of texts with a list of those (as TEI).
PredictResponse = list[LabelScore] | list[list[LabelScore]]


class Attention(bentoml.IODescriptor):
    mode: Mode
    shape: list[int] = Field(description="[L, H, T] for cls, [H, T, T] for last, [L, H, T, T] for all, [T] rollout")
    values: list[float] | list[list[float]] | list[list[list[float]]] | list[list[list[list[float]]]] = Field(
        description="Nested lists of the given shape, rounded to 4 decimals; every last-axis row sums to 1"
    )


class TokenAttribution(bentoml.IODescriptor):
    method: Attribution
    target: str = Field(description="The label whose log-odds the values explain")
    values: list[float] = Field(
        description="[T]: each token's contribution to the target's log-odds (positive: for it), 4 decimals"
    )


class Word(bentoml.IODescriptor):
    start: int = Field(description="Where the word starts in the text as sent (a code point index)")
    end: int = Field(description="Where it ends, exclusive: text[start:end] is the word")
    tokens: list[int] = Field(description="The indices of its tokens (WordPiece pieces) in `tokens`")
    weight: float = Field(description="The sum of its tokens' attention weights (see the contract), 4 decimals")


class Prediction(bentoml.IODescriptor):
    label: str
    score: float = Field(description="The score of `label` (see `scores`)")
    labels: list[str] | None = Field(
        None,
        description="Multi-label models only: every label whose score is 0.5 or more, in label order (may be empty)",
    )
    scores: dict[str, float] = Field(
        description="Probability of every label: a softmax (they sum to 1), or for a multi-label model each label's "
        "own sigmoid; or as `function_to_apply` asks"
    )
    top: list[LabelScore] | None = Field(description="With `top_k`: the top_k labels and scores, best first")
    tokens: list[str] = Field(description="The tokens the model saw, [CLS] and [SEP] included (T = len(tokens))")
    offsets: list[list[int] | None] = Field(
        description="Per token, its [start, end) in the text as sent (code point indices); null for [CLS] and [SEP]"
    )
    truncated: bool = Field(description="True if the text was cut to the model's max positions")
    attention: Attention | None
    words: list[Word] | None = Field(description="With attention maps: the words and their summed token weights")
    attribution: TokenAttribution | None


class ClassifyResponse(bentoml.IODescriptor):
    predictions: list[Prediction] = Field(description="One per text, in input order")


BATCH_SIZE = bentoml.metrics.Histogram(
    name="gaze_batch_size",
    documentation="Texts per batch run by the model (texts from concurrent requests share batches)",
    buckets=[1, 2, 4, 8, 16, 32, 64, 128, 256],
)
BATCH_REQUESTS = bentoml.metrics.Histogram(
    name="gaze_batch_requests",
    documentation="Requests with texts in one batch (a large request split over batches counts in each)",
    buckets=[1, 2, 4, 8, 16, 32, 64, 128],
)
REJECTED = bentoml.metrics.Counter(
    name="gaze_rejected_total",
    documentation="Requests refused by a limit or at the edge (unknown path, bad framing or header, no or a "
    "wrong API key, a preflight from an origin not allowed), "
    "and clients dropped for reading nothing of their response (send_timeout)",
    labelnames=["reason"],
)
CANCELLED = bentoml.metrics.Counter(
    name="gaze_cancelled_total",
    documentation="Requests cancelled because their client hung up before the answer (queued work dropped)",
)
INLINE_ENCODE_CHARS = 2000  # see Gaze._encode
# Response bytes this worker holds for clients that have not read them (GAZE_MAX_PENDING_BYTES).
UNSENT = Unsent(SETTINGS.max_pending_bytes)


@dataclasses.dataclass(frozen=True)
class LabelsOnly(Item):
    """An item of /predict: its answer is the `top` list alone (every label, best first), not the prediction."""


def _record_batch(texts: int, requests: int) -> None:
    BATCH_SIZE.observe(texts)
    BATCH_REQUESTS.observe(requests)


@bentoml.service(name="gaze", workers=SETTINGS.workers, traffic={"timeout": SETTINGS.timeout_s})
class Gaze:
    """Gaze: a text classifier that shows where it looks. POST /classify; the page is at /ui/."""

    if SETTINGS.is_tag:  # referenced at class level so that a Bento built from this service carries it
        bento_model = bentoml.models.BentoModel(SETTINGS.model)

    def __init__(self) -> None:
        self.ready = False
        torch.set_num_threads(SETTINGS.threads)
        path = self.bento_model.path if SETTINGS.is_tag else SETTINGS.model
        self.predictor = Predictor(path, max_batch_size=32, precision=SETTINGS.precision, device=SETTINGS.device)
        if self.predictor.precision_choice is not None:  # a worker not started by `bentoml serve` measures itself
            print(f"gaze: GAZE_PRECISION=auto chose {self.predictor.precision_choice}", file=sys.stderr, flush=True)
        self.batcher = Batcher(
            self._process,
            cost_ms=self.predictor.cost_ms,
            max_batch_cost=SETTINGS.batch_cost_ms,
            max_batch_texts=SETTINGS.max_batch_texts,
            max_queue_texts=SETTINGS.max_queue_texts,
            max_wait_ms=SETTINGS.batch_wait_ms,
            on_batch=_record_batch,
        )
        # Warm-up: the first forward passes allocate and pick kernels; /readyz waits for them.
        for mode in ("none", "cls", "rollout"):
            self.predictor.predict(["a warm-up sentence , to fill the caches .", "warm"], mode)
        logger.info(
            "Gaze model %s loaded (%s, %d torch threads, %s); ready",
            path,
            self.predictor.device,
            SETTINGS.threads,
            self.predictor.precision,
        )
        # What is loaded now (model, BentoML, pydantic, torch) lives as long as the worker. Out of the garbage
        # collector's reach, it no longer makes each full collection stall every request for ~250 ms (p99 at 32
        # clients: 323 -> 172 ms, benchmarks/README.md, 3).
        gc.collect()
        gc.freeze()
        self.ready = True

    def __is_ready__(self) -> bool:
        return self.ready

    @bentoml.on_shutdown
    def _shutdown(self) -> None:
        self.batcher.close()

    def _too_costly(self, items: list[Item]) -> JSONResponse | None:
        """413 when `items` would take more than GAZE_MAX_REQUEST_COST_MS of a worker (the cost model's estimate)."""
        cost = sum(self.predictor.cost_ms(item) for item in items)
        if cost <= SETTINGS.max_request_cost_ms:
            return None
        REJECTED.labels(reason="request_cost").inc()
        values = sum(self.predictor.attention_values(len(item.encoding.ids), item.mode) for item in items)
        tokens = sum(len(item.encoding.ids) for item in items)
        error = (
            f"this request would take about {cost:.0f} ms of a worker ({len(items)} texts, {tokens} tokens, "
            f"{values} attention values); the limit is {SETTINGS.max_request_cost_ms:.0f} ms per request: "
            "send fewer or shorter texts, or ask for less attention ('cls' instead of 'all') or a cheaper attribution"
        )
        return JSONResponse({"error": error}, status_code=413)

    def _process(self, items: list) -> list[str]:
        """Runs on the batcher's thread: predictions, serialized to JSON strings one per text."""
        # allow_nan=False: a NaN would be invalid JSON; failing the batch gives its requests a 500 instead.
        dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
        predictions = zip(items, self.predictor.run(items), strict=True)
        return [dumps(p["top"] if isinstance(item, LabelsOnly) else p) for item, p in predictions]

    async def _answer(self, items: list[Item], body: Callable[[list[str]], str]) -> Response:
        """Run `items` through the batcher (within the cost limit); the response is `body(their JSON)`."""
        if too_costly := self._too_costly(items):
            return too_costly
        try:
            parts, timing = await self.batcher.submit(items)
        except Overloaded as error:
            REJECTED.labels(reason="queue_full").inc()
            return Response(error_body(f"overloaded: {error}; retry shortly"), 503, media_type="application/json")
        headers = {
            "x-queue-time": f"{timing.queue_ms:.2f}",
            "x-inference-time": f"{timing.inference_ms:.2f}",
            "x-batch-size": str(timing.batch_texts),
            "x-precision": self.predictor.precision,
        }
        return Response(body(parts).encode("utf-8"), media_type="application/json", headers=headers)

    async def _encode(self, texts: list[str]) -> list:
        """Tokenize on the event loop when that is quicker than a hop to a thread and back (a few short
        texts: ~0.03 ms per 100 characters), on a thread otherwise (10,000 characters take ~3 ms)."""
        if sum(map(len, texts)) <= INLINE_ENCODE_CHARS:
            return self.predictor.encode(texts)
        return await anyio.to_thread.run_sync(self.predictor.encode, texts)

    @bentoml.api(route="/classify", input_spec=ClassifyRequest, output_spec=ClassifyResponse)
    async def classify(
        self,
        texts: list[str],
        attention: str = "cls",
        attribution: str = "none",
        target: str | None = None,
        function_to_apply: str | None = None,
        top_k: int | None = None,
    ) -> Any:
        """Classify texts and return each one's label, scores, tokens and attention (see ClassifyRequest)."""
        try:  # the middleware checked the values' types; only the model knows its labels
            self.predictor.check_attribution(attribution, target)
        except ValueError as error:
            return JSONResponse({"error": str(error)}, status_code=400)
        encodings = await self._encode(texts)
        items = [Item(e, attention, attribution, target, function_to_apply, top_k) for e in encodings]
        return await self._answer(items, lambda parts: '{"predictions":[' + ",".join(parts) + "]}")

    @bentoml.api(route="/predict", input_spec=PredictRequest)
    async def predict(
        self, inputs: str | list[str], raw_scores: bool = False, truncate: bool = False
    ) -> PredictResponse:
        """TEI's classification route: every label with its score, best first, per text (see PredictRequest).

        Answered with pre-serialized JSON (a Response); the annotation gives /docs.json the response schema.
        """
        texts = [inputs] if isinstance(inputs, str) else inputs
        encodings = await self._encode(texts)
        cut = next((i for i, encoding in enumerate(encodings) if encoding.overflowing), None)
        if cut is not None and not truncate:  # TEI refuses it too (its status: 413)
            name = "inputs" if isinstance(inputs, str) else f"inputs[{cut}]"
            error = (
                f"{name} has more than {self.predictor.max_length} tokens, the model's limit; "
                'send "truncate": true to cut it to that'
            )
            return JSONResponse({"error": error}, status_code=413)
        function = "none" if raw_scores else None
        labels = len(self.predictor.labels)
        items = [LabelsOnly(e, "none", function_to_apply=function, top_k=labels) for e in encodings]
        if isinstance(inputs, str):
            return await self._answer(items, lambda parts: parts[0])
        return await self._answer(items, lambda parts: "[" + ",".join(parts) + "]")


Gaze.add_asgi_middleware(
    GazeMiddleware,
    max_texts=SETTINGS.max_texts,
    max_chars=SETTINGS.max_chars,
    max_concurrency=SETTINGS.max_concurrency,
    retry_after_s=SETTINGS.retry_after_s,
    body_timeout_s=SETTINGS.body_timeout_s,
    unsent=UNSENT,
    on_reject=lambda reason: REJECTED.labels(reason=reason).inc(),
    on_cancel=lambda: CANCELLED.inc(),
)
Gaze.mount_asgi_app(StaticFiles(directory=STATIC, html=True), path="/ui")

# BentoML's own routes besides the API's (its Swagger page at / and /static_content/ are left out:
# the page loads a third-party tag manager into the service's origin; / redirects to /ui/ instead).
SYSTEM_ROUTES = ("/livez", "/healthz", "/readyz", "/metrics", "/docs.json", "/schema.json")


class _EdgedService(type(Gaze)):
    """BentoML's Service class, whose ASGI app (what each worker serves) sits behind `GazeEdge`.

    BentoML adds a service's middleware inside its own (metrics, access log, router), and some
    requests must be answered before those see them (service/http.py). The Service object is an
    attrs class with slots, so the method is overridden by giving the object this subclass.
    """

    __slots__ = ()

    def to_asgi(self, is_main: bool = True):
        return GazeEdge(
            super().to_asgi(is_main),
            routes={*(api.route for api in self.apis.values()), *SYSTEM_ROUTES},
            static_prefix="/ui/",
            static_files={p.relative_to(STATIC).as_posix() for p in STATIC.rglob("*") if p.is_file()},
            send_timeout_s=SETTINGS.send_timeout_s,
            unsent=UNSENT,
            on_reject=lambda reason: REJECTED.labels(reason=reason).inc(),
            protected={api.route for api in self.apis.values()},  # the model's routes: need GAZE_API_KEY if set
            api_key=SETTINGS.api_key,
            cors_origins=SETTINGS.cors_origins,
        )


Gaze.__class__ = _EdgedService
