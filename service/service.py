"""The Gaze BentoML service: `bentoml serve service.service:Gaze` (or `make serve`).

POST /classify is a plain `bentoml.api` (so it is in /docs.json with its schemas). Requests reach
it through `GazeMiddleware` (service/http.py), which checks them and answers every contract error
with our own JSON body; the API then tokenizes, queues its texts on the worker's `Batcher`
(service/batching.py), which runs texts of concurrent requests together through `Predictor`
(model/predictor.py), and returns the predictions as pre-serialized JSON.

Everything configurable is an environment variable (service/config.py, README "Serving").
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import anyio.to_thread
import bentoml
import torch
from bentoml._internal.context import server_context  # worker_index: None outside a worker
from pydantic import ConfigDict, Field
from starlette.responses import JSONResponse, Response
from starlette.staticfiles import StaticFiles

from model.predictor import Item, Mode, ModelLoadError, Predictor

from .batching import Batcher, Overloaded
from .config import Settings, check_source
from .http import GazeEdge, GazeMiddleware, Unsent, error_body

logger = logging.getLogger("gaze.service")
SETTINGS = Settings.from_env()
STATIC = Path(__file__).resolve().parent / "static"

# Fail here, in the process that runs `bentoml serve`/`bentoml build`, before any worker starts:
# a missing or corrupt model is a clear one-line error and a non-zero exit. (A worker whose model
# fails to load is restarted by BentoML forever, so the workers cannot be the ones to check.)
try:
    check_source(SETTINGS.model, full=server_context.worker_index is None)
except ModelLoadError as _error:
    print(f"gaze: cannot start: {_error}", file=sys.stderr)
    raise SystemExit(2) from None

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


class Attention(bentoml.IODescriptor):
    mode: Mode
    shape: list[int] = Field(description="[L, H, T] for cls, [H, T, T] for last, [L, H, T, T] for all, [T] rollout")
    values: list[float] | list[list[float]] | list[list[list[float]]] | list[list[list[list[float]]]] = Field(
        description="Nested lists of the given shape, rounded to 4 decimals; every last-axis row sums to 1"
    )


class Prediction(bentoml.IODescriptor):
    label: str
    score: float = Field(description="Probability of `label`")
    scores: dict[str, float] = Field(description="Probability of every label")
    tokens: list[str] = Field(description="The tokens the model saw, [CLS] and [SEP] included (T = len(tokens))")
    truncated: bool = Field(description="True if the text was cut to the model's max positions")
    attention: Attention | None


class ClassifyResponse(bentoml.IODescriptor):
    predictions: list[Prediction] = Field(description="One per text, in input order")


BATCH_SIZE = bentoml.metrics.Histogram(
    name="gaze_batch_size",
    documentation="Texts per batch run by the model (texts from concurrent requests share batches)",
    buckets=[1, 2, 4, 8, 16, 32, 64, 128, 256],
)
BATCH_REQUESTS = bentoml.metrics.Histogram(
    name="gaze_batch_requests",
    documentation="Requests that shared one batch",
    buckets=[1, 2, 4, 8, 16, 32, 64, 128],
)
REJECTED = bentoml.metrics.Counter(
    name="gaze_rejected_total",
    documentation="Requests refused by a limit or at the edge (unknown path, bad framing or header), "
    "and clients dropped for reading nothing of their response (send_timeout)",
    labelnames=["reason"],
)
CANCELLED = bentoml.metrics.Counter(
    name="gaze_cancelled_total",
    documentation="Requests cancelled because their client hung up before the answer (queued work dropped)",
)
# Response bytes this worker holds for clients that have not read them (GAZE_MAX_PENDING_BYTES).
UNSENT = Unsent(SETTINGS.max_pending_bytes)


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
        self.predictor = Predictor(path, max_batch_size=32, precision=SETTINGS.precision)
        self.batcher = Batcher(
            self._process,
            max_batch_texts=SETTINGS.max_batch_texts,
            max_queue_texts=SETTINGS.max_queue_texts,
            max_wait_ms=SETTINGS.batch_wait_ms,
            on_batch=_record_batch,
        )
        # Warm-up: the first forward passes allocate and pick kernels; /readyz waits for them.
        for mode in ("none", "cls", "rollout"):
            self.predictor.predict(["a warm-up sentence , to fill the caches .", "warm"], mode)
        logger.info("Gaze model %s loaded (%d torch threads, %s); ready", path, SETTINGS.threads, SETTINGS.precision)
        self.ready = True

    def __is_ready__(self) -> bool:
        return self.ready

    @bentoml.on_shutdown
    def _shutdown(self) -> None:
        self.batcher.close()

    def _process(self, items: list) -> list[str]:
        """Runs on the batcher's thread: predictions, serialized to JSON strings one per text."""
        # allow_nan=False: a NaN would be invalid JSON; failing the batch gives its requests a 500 instead.
        dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
        return [dumps(p) for p in self.predictor.run(items)]

    @bentoml.api(route="/classify", input_spec=ClassifyRequest, output_spec=ClassifyResponse)
    async def classify(self, texts: list[str], attention: str = "cls") -> Any:
        """Classify texts and return each one's label, scores, tokens and attention (see ClassifyRequest)."""
        encodings = await anyio.to_thread.run_sync(self.predictor.encode, texts)
        values = sum(self.predictor.attention_values(len(e.ids), attention) for e in encodings)
        if values > SETTINGS.max_attention_values:
            REJECTED.labels(reason="attention_size").inc()
            return JSONResponse(
                {
                    "error": f"attention {attention!r} for these texts would return {values} numbers; the limit is "
                    f"{SETTINGS.max_attention_values} per request: send fewer or shorter texts, or use 'cls'"
                },
                status_code=413,
            )

        try:
            parts, timing = await self.batcher.submit([Item(e, attention) for e in encodings])
        except Overloaded as error:
            REJECTED.labels(reason="queue_full").inc()
            return Response(error_body(f"overloaded: {error}; retry shortly"), 503, media_type="application/json")
        body = ('{"predictions":[' + ",".join(parts) + "]}").encode("utf-8")
        headers = {
            "x-queue-time": f"{timing.queue_ms:.2f}",
            "x-inference-time": f"{timing.inference_ms:.2f}",
            "x-batch-size": str(timing.batch_texts),
        }
        return Response(body, media_type="application/json", headers=headers)


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
        )


Gaze.__class__ = _EdgedService
