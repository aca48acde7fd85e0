"""The naive peer of the serving benchmark: a minimal Starlette app that runs the HF pipeline per request.

    NAIVE_MODEL=path/to/bert-folder uvicorn benchmarks.naive_server:app --port 3001

POST /classify takes the same body as ours ({"texts": [...]}) and returns the pipeline's output
({"predictions": [{"label", "score"}, ...]}: no tokens, no attention maps). The endpoint is
`async` and calls the pipeline directly, so requests run one at a time, each as its own batch:
what a first, simple server does. (A plain `def` endpoint would run them on Starlette's thread
pool at once, every call with its own torch thread team, oversubscribing the cores.)
"""

from __future__ import annotations

import json
import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from transformers import pipeline
from transformers.utils import logging as hf_logging

hf_logging.set_verbosity_error()
classifier = pipeline("text-classification", model=os.environ["NAIVE_MODEL"], device="cpu")
classifier(["warm-up"])


async def classify(request: Request) -> Response:
    try:
        texts = json.loads(await request.body())["texts"]
    except (ValueError, KeyError, TypeError) as error:
        return JSONResponse({"error": f"bad request: {error}"}, status_code=400)
    return JSONResponse({"predictions": classifier(texts, truncation=True)})


async def healthz(request: Request) -> Response:
    return Response("ok")


app = Starlette(
    routes=[Route("/classify", classify, methods=["POST"]), Route("/healthz", healthz), Route("/readyz", healthz)]
)
