"""The Gaze BentoML service: `bentoml serve service.service:Gaze` (or `make serve`).

Requests reach the API methods through the edge (service/edge.py: paths, auth, CORS, pacing) and
admission (service/admission.py: limits, the body checked in the contract's words, cancellation). An API
method tokenizes, queues its texts on the worker's `Batcher` (service/batching.py), which runs texts of
concurrent requests together through the `Predictor` (inference/predictor.py), and returns the
predictions as pre-serialized JSON.

Importing this module reads the settings (service/config.py, README "Serving") and nothing else: the
model is checked once before any worker starts (`check_model`), and loaded in each worker's `__init__`.
"""

from __future__ import annotations

import functools
import gc
import json
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio.to_thread
import bentoml
import torch
from starlette.responses import Response
from starlette.staticfiles import StaticFiles

from inference.contract import ContractError, Options, OverCostError, Text, TooLongError, characters, sanitize
from inference.predictor import Item, Predictor
from model.folder import ModelLoadError

from .admission import GazeMiddleware
from .backpressure import Unsent
from .batching import Batcher, Overloaded
from .config import Settings, check_source
from .edge import GazeEdge
from .errors import STATUS, Kind, RequestError, error_body
from .internals import serve_behind, time_out_headers
from .requests import CLASSIFY_PATH, PREDICT_PATH, Classify, TeiPredict, predict_input
from .schemas import ClassifyResponse, PredictResponse, classify_request, predict_request

logger = logging.getLogger("gaze.service")
STATIC = Path(__file__).resolve().parent / "static"

try:  # the decorator below needs the worker count: a bad setting stops here, in one line
    SETTINGS = Settings.from_env()
except ValueError as _error:
    print(f"gaze: cannot start: {_error}", file=sys.stderr)
    raise SystemExit(2) from None

ClassifyRequest = classify_request(SETTINGS.max_texts, SETTINGS.max_chars)
PredictRequest = predict_request(SETTINGS.max_texts, SETTINGS.max_chars)


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
    "wrong API key, a preflight from an origin not allowed, a WebSocket handshake, headers that did not "
    "arrive within GAZE_HEADER_TIMEOUT_S), "
    "and clients dropped for reading nothing of their response (send_timeout)",
    labelnames=["reason"],
)
CANCELLED = bentoml.metrics.Counter(
    name="gaze_cancelled_total",
    documentation="Requests cancelled because their client hung up before the answer (queued work dropped)",
)
INLINE_ENCODE_CHARS = 2000  # see Gaze._items
# Response bytes this worker holds for clients that have not read them (GAZE_MAX_PENDING_BYTES).
UNSENT = Unsent(SETTINGS.max_pending_bytes)


@dataclass(frozen=True, slots=True)
class LabelsOnly(Item):
    """An item of /predict: its answer is the `top` list alone (every label, best first), not the prediction."""


def _record_batch(texts: int, requests: int) -> None:
    BATCH_SIZE.observe(texts)
    BATCH_REQUESTS.observe(requests)


def error_response(kind: Kind, message: str) -> Response:
    return Response(error_body(message), STATUS[kind], media_type="application/json")


@bentoml.service(name="gaze", workers=SETTINGS.workers, traffic={"timeout": SETTINGS.timeout_s})
class Gaze:
    """Gaze: a text classifier that shows where it looks. POST /classify; the page is at /ui/."""

    if SETTINGS.is_tag:  # referenced at class level so that a Bento built from this service carries it
        bento_model = bentoml.models.BentoModel(SETTINGS.model)

    @bentoml.on_deployment
    def check_model() -> None:
        """In the process of `bentoml serve`, before any worker starts: a missing or corrupt model or a bad
        setting (GAZE_DEVICE=cuda without a GPU, ...) is one line and exit 2, since BentoML restarts a worker
        whose model fails to load forever. The model is loaded and run once: that catches what a file check
        cannot. GAZE_PRECISION=auto is measured here, once, as one worker runs; the workers inherit this
        process's environment, so all of them run the chosen precision and no measurement competes with
        another worker's start."""
        torch.set_num_threads(SETTINGS.threads)
        try:
            checked = check_source(SETTINGS.model, device=SETTINGS.device, precision=SETTINGS.precision)
        except (ValueError, ModelLoadError) as error:
            print(f"gaze: cannot start: {error}", file=sys.stderr)
            raise SystemExit(2) from None
        if checked.precision_choice is not None:
            print(f"gaze: GAZE_PRECISION=auto chose {checked.precision_choice}", file=sys.stderr, flush=True)
            os.environ["GAZE_PRECISION"] = checked.precision

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

    def info(self) -> Response:
        """GET /info: TEI's keys for what a client checks before it sends (the model, its labels, the limits),
        and what Gaze adds (device, precision, the attention it can show)."""
        predictor = self.predictor
        labels = dict(enumerate(predictor.labels))
        body = {
            "model_id": SETTINGS.model if SETTINGS.is_tag else Path(SETTINGS.model).name,
            "model_dtype": "float32",  # the weights; bf16 autocast, when chosen, is `precision`
            "model_type": {"classifier": {"id2label": labels, "label2id": {name: i for i, name in labels.items()}}},
            "multi_label": predictor.multi_label,
            "max_input_length": predictor.max_length,
            "max_client_batch_size": SETTINGS.max_texts,
            "max_input_chars": SETTINGS.max_chars,
            "max_concurrent_requests": SETTINGS.max_concurrency,
            "device": predictor.device.type,
            "precision": predictor.precision,
            "attention": {"layers": predictor.num_layers, "heads": predictor.num_heads},
        }
        return Response(json.dumps(body), media_type="application/json")

    def health(self) -> Response:
        """GET /health, as TEI's: 200 once the model is loaded and warmed up, else 503."""
        return Response(b"", 200 if self.ready else 503)

    @bentoml.on_shutdown
    def _shutdown(self) -> None:
        self.batcher.close()

    def _process(self, items: list) -> list[str]:
        """Runs on the batcher's thread: predictions, serialized to JSON strings one per text."""
        # allow_nan=False: a NaN would be invalid JSON; failing the batch gives its requests a 500 instead.
        dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
        predictions = zip(items, self.predictor.run(items), strict=True)
        return [dumps(p["top"] if isinstance(item, LabelsOnly) else p) for item, p in predictions]

    async def _answer(self, items: list[Item], body: Callable[[list[str]], str]) -> Response:
        """Run `items` through the batcher; the response is `body(their JSON)`."""
        try:
            parts, timing = await self.batcher.submit(items)
        except Overloaded as error:
            REJECTED.labels(reason="queue_full").inc()
            return error_response("overloaded", f"overloaded: {error}; retry shortly")
        headers = {
            "x-queue-time": f"{timing.queue_ms:.2f}",
            "x-inference-time": f"{timing.inference_ms:.2f}",
            "x-batch-size": str(timing.batch_texts),
            "x-precision": self.predictor.precision,
        }
        return Response(body(parts).encode("utf-8"), media_type="application/json", headers=headers)

    async def _items(
        self, texts: list[Text], options: Options, field: str, kind: type[Item] = Item, truncate: bool = True
    ) -> list[Item]:
        """`texts` tokenized into items within GAZE_MAX_REQUEST_COST_MS (`Predictor.items`: a ContractError, an
        OverCostError past the limit, a TooLongError unless `truncate`). On the event loop when that is quicker
        than a hop to a thread and back (a few short texts: ~0.03 ms per 100 characters), on a thread otherwise
        (10,000 characters take ~3 ms)."""
        limit = SETTINGS.max_request_cost_ms
        work = functools.partial(self.predictor.items, texts, options, field, limit, kind, truncate)
        try:
            return (
                work() if sum(map(characters, texts)) <= INLINE_ENCODE_CHARS else await anyio.to_thread.run_sync(work)
            )
        except OverCostError:
            REJECTED.labels(reason="request_cost").inc()
            raise

    async def answer(self, request: Classify | TeiPredict) -> Response:
        """Answer a checked request. Over HTTP, admission (service/admission.py) checks the body in the
        contract's words and calls this directly: BentoML's router would parse and validate it again."""
        if isinstance(request, Classify):
            return await self._classify(request)
        return await self._predict(request)

    async def _classify(self, request: Classify) -> Response:
        try:  # only the model knows its labels, which texts its tokenizer reads nothing in, and their cost
            self.predictor.check_options(request.options)
            items = await self._items(request.texts, request.options, "texts")
        except ContractError as error:
            return error_response(error.kind, str(error))
        return await self._answer(items, lambda parts: '{"predictions":[' + ",".join(parts) + "]}")

    async def _predict(self, request: TeiPredict) -> Response:
        function = "none" if request.raw_scores else None
        options = Options("none", function_to_apply=function, top_k=len(self.predictor.labels))
        try:  # truncate: false (TEI's default) refuses the first text that overflows, as TEI does (413)
            items = await self._items(request.texts, options, "inputs", LabelsOnly, request.truncate)
        except TooLongError as error:
            name = "inputs" if request.single else f"inputs[{error.index}]"
            message = (
                f"{name} has more than {self.predictor.max_length} tokens, the model's limit; "
                'send "truncate": true to cut it to that'
            )
            return error_response(error.kind, message)
        except ContractError as error:
            return error_response(error.kind, str(error))
        if request.single:
            return await self._answer(items, lambda parts: parts[0])
        return await self._answer(items, lambda parts: "[" + ",".join(parts) + "]")

    @bentoml.api(route=CLASSIFY_PATH, input_spec=ClassifyRequest, output_spec=ClassifyResponse)
    async def classify(self, texts: str | list[str], **options: Any) -> Any:
        """Classify texts: each one's label, scores, tokens and attention (the contract: inference/contract.py).

        The typed entry of /docs.json and of callers in process; HTTP requests come through `answer`."""
        try:
            texts = [texts] if isinstance(texts, str) else texts
            request = Classify([sanitize(text) for text in texts], Options(**options))
        except ContractError as error:
            return error_response(error.kind, str(error))
        return await self.answer(request)

    @bentoml.api(route=PREDICT_PATH, input_spec=PredictRequest)
    async def predict(
        self, inputs: str | list[str | list[str]], raw_scores: bool = False, truncate: bool = False
    ) -> PredictResponse:
        """TEI's classification route: every label with its score, best first, per text or pair (see
        PredictRequest).

        Answered with pre-serialized JSON (a Response); the annotation gives /docs.json the response schema.
        """
        try:
            texts = [inputs] if isinstance(inputs, str) else inputs
            texts = [predict_input(text, f"inputs[{i}]", SETTINGS.max_chars) for i, text in enumerate(texts)]
        except (RequestError, ContractError) as error:
            return error_response(error.kind, str(error))
        return await self.answer(TeiPredict(texts, isinstance(inputs, str), raw_scores, truncate))


Gaze.add_asgi_middleware(
    GazeMiddleware,
    max_texts=SETTINGS.max_texts,
    max_chars=SETTINGS.max_chars,
    max_concurrency=SETTINGS.max_concurrency,
    retry_after_s=SETTINGS.retry_after_s,
    body_timeout_s=SETTINGS.body_timeout_s,
    max_receiving_bytes=SETTINGS.max_receiving_bytes,
    unsent=UNSENT,
    on_reject=lambda reason: REJECTED.labels(reason=reason).inc(),
    answer=lambda request: bentoml.get_current_service().answer(request),
    reads={
        "/info": lambda: bentoml.get_current_service().info(),
        "/health": lambda: bentoml.get_current_service().health(),
    },
    on_cancel=lambda: CANCELLED.inc(),
    api_key_required=SETTINGS.api_key is not None,
)
Gaze.mount_asgi_app(StaticFiles(directory=STATIC, html=True), path="/ui")

# BentoML's own routes besides the API's (its Swagger page at / and /static_content/ are left out:
# the page loads a third-party tag manager into the service's origin; / redirects to /ui/ instead).
SYSTEM_ROUTES = ("/livez", "/healthz", "/readyz", "/metrics", "/docs.json", "/schema.json")
TEI_ROUTES = ("/info", "/health")  # answered by GazeMiddleware from Gaze.info and Gaze.health


def edge(app, service) -> GazeEdge:
    """What each worker serves: BentoML's app (its middleware, ours inside it, the router) behind `GazeEdge`."""
    return GazeEdge(
        app,
        routes={*(api.route for api in service.apis.values()), *SYSTEM_ROUTES, *TEI_ROUTES},
        static_prefix="/ui/",
        static_files={p.relative_to(STATIC).as_posix() for p in STATIC.rglob("*") if p.is_file()},
        send_timeout_s=SETTINGS.send_timeout_s,
        unsent=UNSENT,
        on_reject=lambda reason: REJECTED.labels(reason=reason).inc(),
        protected={api.route for api in service.apis.values()},  # the model's routes: need GAZE_API_KEY if set
        api_key=SETTINGS.api_key,
        cors_origins=SETTINGS.cors_origins,
    )


serve_behind(Gaze, edge)
time_out_headers(SETTINGS.header_timeout_s, on_timeout=lambda: REJECTED.labels(reason="header_timeout").inc())
