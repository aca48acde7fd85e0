"""The HTTP edge of the service: request validation, admission control and timing headers.

`GazeMiddleware` sits in front of BentoML's router, so every rule of the contract answers with our
own JSON error body ({"error": "what is wrong and the limit"}) before BentoML's generic validation
sees the request:

- 415 for a Content-Type other than application/json, 400 for malformed JSON or a wrong shape,
  413 for more texts or longer texts (or a larger body) than the limits;
- 408 + close when the body has not all arrived within the body deadline. A request takes one of the
  in-flight slots only once its body is complete, and gives it back when its response starts: a client
  that sends or reads slowly holds no slot;
- 429 + Retry-After when more /classify and /predict requests are in flight than the limit (checked at
  once, and again when the body is complete); 503 + Retry-After while the worker holds more response bytes for clients
  that have not read them than its limit (`Unsent`);
- a request whose client hangs up before its answer is cancelled (its job leaves the batch queue unrun)
  and logged as 499;
- `x-total-time` (ms) on every response; /classify and /predict add `x-queue-time` and `x-inference-time`;
- /docs.json marks the /classify and /predict bodies required and lists their error statuses next to BentoML's.

`GazeEdge` sits in front of all of BentoML (service.py wraps the ASGI app BentoML serves), because some
requests must never reach BentoML's own middleware, which labels metrics with the raw path, decodes the
Content-Type for its access log, and redirects to URLs built from the Host header:

- 404 for every path the service does not have (so /metrics only ever names real routes);
- 415 for a Content-Type that is not ASCII; 400 + close for Content-Length together with Transfer-Encoding;
- `/` and `/ui` redirect to `/ui/` with a relative Location (never BentoML's Swagger page);
- with an API key (GAZE_API_KEY), 401 + `WWW-Authenticate: Bearer` on the model's routes without
  `Authorization: Bearer <key>`: refused before any of BentoML's work;
- with allowed origins (GAZE_CORS_ORIGINS), preflights answered (204, or 403 for another origin) and
  `Access-Control-Allow-Origin` on every answer to an allowed origin;
- response bodies go out in chunks of `CHUNK_BYTES`, each only once the socket has taken the last
  (back-pressure), so a client that does not read holds at most about two chunks in the socket's buffer;
  a client that takes no chunk for `send_timeout_s` is dropped, its response freed.
"""

from __future__ import annotations

import asyncio
import ctypes
import hmac
import inspect
import json
import logging
import sys
import time
from collections.abc import Collection
from typing import Any

from model.predictor import ATTRIBUTIONS, MODES, check_scores, sanitize

CLASSIFY_PATH = "/classify"
FIELDS = ("texts", "attention", "attribution", "target", "function_to_apply", "top_k")
PREDICT_PATH = "/predict"  # Text Embeddings Inference's classification route
PREDICT_FIELDS = ("inputs", "raw_scores", "truncate")
CHUNK_BYTES = 64 * 1024  # asyncio's default write-buffer high-water mark, above which uvicorn's send waits
CLIENT_CLOSED = 499  # nginx's status for "the client closed the connection before the answer"
# The response headers a browser script of an allowed origin may read (CORS hides all others but a few).
EXPOSED_HEADERS = b"x-total-time, x-queue-time, x-inference-time, x-batch-size, x-precision, retry-after"
logger = logging.getLogger("gaze.http")


class RequestError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def error_body(message: str) -> bytes:
    return json.dumps({"error": message}, ensure_ascii=False).encode("utf-8")


def max_body_bytes(max_texts: int, max_chars: int) -> int:
    """The largest body a valid request can have: every character as a 12-byte surrogate-pair escape."""
    return max_texts * (max_chars * 12 + 8) + 4096


def check_content_type(content_type: str | None) -> None:
    media_type = (content_type or "").split(";")[0].strip().lower()
    if media_type != "application/json":
        got = f"'{content_type}'" if content_type else "none"
        raise RequestError(415, f"Content-Type must be application/json, got {got}")


def parse_request(body: bytes, max_texts: int, max_chars: int) -> tuple[dict[str, Any], bool]:
    """Decode and check a /classify body, or raise RequestError.

    Returns ({"texts": [...], "attention": mode, "attribution": method, "target": label or None}, changed),
    where `changed` says that a text held an unpaired surrogate escape (valid JSON, not valid Unicode), now
    replaced by U+FFFD. Whether `target` is one of the model's labels is for the API to check.
    """
    payload = load_object(body, FIELDS, '{"texts": ["..."], "attention": "cls"}')
    if "texts" not in payload:
        raise RequestError(400, f"missing field 'texts' (a list of 1 to {max_texts} strings)")
    texts = payload["texts"]
    if isinstance(texts, str):
        raise RequestError(400, "'texts' must be a list of strings, got a single string; wrap it in [ ]")
    if not isinstance(texts, list):
        raise RequestError(400, f"'texts' must be a list of strings, got {_kind(texts)}")
    if not texts:
        raise RequestError(400, f"'texts' is empty; send 1 to {max_texts} texts")
    if len(texts) > max_texts:
        raise RequestError(413, f"too many texts: {len(texts)}; the limit is {max_texts} per request")
    for i, text in enumerate(texts):
        check_text(text, f"texts[{i}]", max_chars)
    attention = payload.get("attention", "cls")
    if attention not in MODES or not isinstance(attention, str):
        raise RequestError(400, f"unknown attention mode {attention!r:.60}; expected one of {', '.join(MODES)}")
    attribution = payload.get("attribution", "none")
    if attribution not in ATTRIBUTIONS or not isinstance(attribution, str):
        raise RequestError(400, f"unknown attribution {attribution!r:.60}; expected one of {', '.join(ATTRIBUTIONS)}")
    target = payload.get("target")
    if target is not None and not isinstance(target, str):
        raise RequestError(400, f"'target' must be a label (a string), got {_kind(target)}")
    if target is not None and attribution == "none":
        raise RequestError(400, "'target' names the label to attribute: it needs an 'attribution' other than 'none'")
    function_to_apply, top_k = payload.get("function_to_apply"), payload.get("top_k")
    try:
        check_scores(function_to_apply, top_k)
    except ValueError as error:
        raise RequestError(400, str(error)) from None
    clean = [sanitize(text) for text in texts]
    request = {
        "texts": clean,
        "attention": attention,
        "attribution": attribution,
        "target": target,
        "function_to_apply": function_to_apply,
        "top_k": top_k,
    }
    return request, clean != texts


def parse_predict_request(body: bytes, max_texts: int, max_chars: int) -> tuple[dict[str, Any], bool]:
    """Decode and check a /predict body (TEI's: one text or a list of texts), or raise RequestError.

    Returns ({"inputs": text or [texts], "raw_scores": bool, "truncate": bool}, changed), as `parse_request`.
    """
    payload = load_object(body, PREDICT_FIELDS, '{"inputs": "..."}')
    if "inputs" not in payload:
        raise RequestError(400, f"missing field 'inputs' (a string, or a list of 1 to {max_texts} strings)")
    inputs = payload["inputs"]
    if isinstance(inputs, list):
        if not inputs:
            raise RequestError(400, f"'inputs' is empty; send a string or a list of 1 to {max_texts} strings")
        if len(inputs) > max_texts:
            raise RequestError(413, f"too many inputs: {len(inputs)}; the limit is {max_texts} per request")
        for i, text in enumerate(inputs):
            if isinstance(text, list):  # TEI's forms [[text], ...] and [text, text] (a pair) are for pair models
                raise RequestError(
                    400, f"inputs[{i}] is a list: Gaze classifies single texts, not pairs; send a list of strings"
                )
            check_text(text, f"inputs[{i}]", max_chars)
        clean = [sanitize(text) for text in inputs]
    elif isinstance(inputs, str):
        check_text(inputs, "inputs", max_chars)
        clean = sanitize(inputs)
    else:
        raise RequestError(400, f"'inputs' must be a string or a list of strings, got {_kind(inputs)}")
    flags = {name: payload.get(name, False) for name in ("raw_scores", "truncate")}
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise RequestError(400, f"'{name}' must be true or false, got {_kind(value)}")
    return {"inputs": clean, **flags}, clean != inputs


# The routes that run the model: each body's checks (the service answers both through the same Batcher).
PARSERS = {CLASSIFY_PATH: parse_request, PREDICT_PATH: parse_predict_request}


def load_object(body: bytes, fields: tuple[str, ...], example: str) -> dict[str, Any]:
    """The body's JSON object, or RequestError(400) if it is malformed, not an object or has another field."""
    payload = load_json(body)
    if not isinstance(payload, dict):
        raise RequestError(400, f"the body must be a JSON object like {example}, got {_kind(payload)}")
    unknown = sorted(set(payload) - set(fields))
    if unknown:
        names = ", ".join(f"'{name}'" for name in fields)
        raise RequestError(400, f"unknown field {unknown[0]!r:.60}; the fields are {names}")
    return payload


def load_json(body: bytes) -> Any:
    """The body's JSON value, or RequestError(400) that says what is malformed."""
    try:  # strictly UTF-8: json.loads(bytes) would also accept UTF-16/32 and a BOM, which BentoML refuses
        return json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise RequestError(400, f"malformed JSON: the body is not valid UTF-8 ({error.reason})") from None
    except json.JSONDecodeError as error:
        raise RequestError(400, f"malformed JSON: {error.msg} at line {error.lineno} column {error.colno}") from None
    except ValueError:  # the only other ValueError of json.loads: Python's limit on integer digits
        limit = sys.get_int_max_str_digits()
        raise RequestError(400, f"malformed JSON: a number has more than {limit} digits") from None
    except RecursionError:
        raise RequestError(400, "malformed JSON: nested too deeply") from None


def check_text(text: Any, name: str, max_chars: int) -> None:
    """RequestError unless `text` (called `name` in the message) is a non-blank string within the limit."""
    if not isinstance(text, str):
        raise RequestError(400, f"{name} is not a string (got {_kind(text)})")
    if not text or text.isspace():
        raise RequestError(400, f"{name} is empty or whitespace-only")
    if len(text) > max_chars:
        raise RequestError(413, f"{name} has {len(text)} characters; the limit is {max_chars}")


def openapi_30_nullable(node: Any) -> Any:
    """`node` with pydantic's `anyOf: [X, {"type": "null"}]` written as OpenAPI 3.0 says it: X with
    `nullable: true`. /docs.json is OpenAPI 3.0.2, which has no "null" type, so its clients (code
    generators, schemathesis) would take a null, which the API accepts, for an error."""
    if isinstance(node, list):
        return [openapi_30_nullable(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: openapi_30_nullable(value) for key, value in node.items()}
    options = node.get("anyOf")
    if not isinstance(options, list) or {"type": "null"} not in options:
        return node
    rest = [option for option in options if option != {"type": "null"}]
    del node["anyOf"]
    if len(rest) > 1:
        node["anyOf"] = rest
    elif "$ref" in rest[0]:  # in 3.0 a $ref's siblings are ignored, so wrap it
        node["allOf"] = rest
    else:
        node = {**rest[0], **node}
    return node | {"nullable": True}


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


class Unsent:
    """Per worker: bytes of responses handed to the edge whose clients have not taken them yet.

    `GazeEdge` counts a large body from when it starts sending it until the socket has taken its last
    chunk (or the client is dropped); `GazeMiddleware` refuses new model requests (503) while the
    count is at `limit` or above.
    """

    def __init__(self, limit: int):
        self.limit = limit
        self.bytes = 0

    @property
    def full(self) -> bool:
        return self.bytes >= self.limit


# Error statuses of /classify and /predict, added to BentoML's OpenAPI document (it lists 400, 404 and 500).
EXTRA_RESPONSES = {
    "408": "The body did not arrive within the body deadline; the connection is closed",
    "413": "Too many texts, a text too long, or more estimated work than GAZE_MAX_REQUEST_COST_MS (maps of many "
    "long texts, attributions of many texts); the message gives the limit",
    "415": "Content-Type is not application/json",
    "429": "Too many requests in flight; retry after Retry-After seconds",
    "503": "The batch queue is full, too many answered bytes wait for slow clients, or the service is not "
    "ready; retry after Retry-After seconds",
    "504": "The request took longer than the service timeout",
}


class GazeMiddleware:
    """Pure ASGI middleware; see the module docstring. One instance per worker."""

    def __init__(
        self,
        app,
        *,
        max_texts: int,
        max_chars: int,
        max_concurrency: int,
        retry_after_s: int,
        body_timeout_s: float = 10.0,
        unsent: Unsent | None = None,
        on_reject=None,
        on_cancel=None,
    ):
        self.app = app
        self.on_reject = on_reject or (lambda reason: None)
        self.on_cancel = on_cancel or (lambda: None)
        self.max_texts = max_texts
        self.max_chars = max_chars
        self.max_concurrency = max_concurrency
        self.retry_after = str(retry_after_s).encode()
        self.body_timeout_s = body_timeout_s
        self.unsent = unsent
        self.max_body = max_body_bytes(max_texts, max_chars)
        self.in_flight = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()

        async def timed_send(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                headers.append((b"x-total-time", b"%.2f" % ((time.perf_counter() - started) * 1000)))
                if message["status"] in (429, 503) and b"retry-after" not in names:
                    headers.append((b"retry-after", self.retry_after))
                message = {**message, "headers": headers}
            await send(message)

        path, method = scope["path"], scope["method"]
        responded = False

        async def tracked_send(message):
            nonlocal responded
            responded = responded or message["type"] == "http.response.start"
            await timed_send(message)

        try:
            if path in PARSERS and method == "POST":
                return await self._classify(scope, receive, tracked_send, PARSERS[path])
            if path == "/docs.json" and method == "GET":
                return await self._docs(scope, receive, tracked_send)
            return await self.app(scope, receive, tracked_send)
        except Exception:
            # Answer at once: raised before a response, BentoML's timeout middleware would hold the
            # connection until the timeout and then send a plain-text 500.
            if responded:
                raise
            logger.exception("unexpected error on %s %.100r", method, path)
            await _respond(timed_send, 500, "internal error while handling this request (logged by the service)")

    async def _classify(self, scope, receive, send, parse):
        """A request to the model (/classify or /predict): admitted, its body read and checked by `parse`."""
        deadline = asyncio.get_running_loop().time() + self.body_timeout_s
        if self.unsent is not None and self.unsent.full:
            self.on_reject("pending_bytes")
            message = (
                f"overloaded: {self.unsent.bytes} bytes of answers wait for their clients to read them "
                f"(limit {self.unsent.limit} per worker); retry shortly"
            )
            return await _respond(send, 503, message)
        if self.in_flight >= self.max_concurrency:  # checked now, so that the answer is immediate
            return await self._too_many(send)
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
        try:
            check_content_type(headers.get("content-type"))
            body = await self._read_body(receive, headers.get("content-length"), deadline)
        except RequestError as error:
            if error.status == 408:
                self.on_reject("body_timeout")
            # 408: the rest of the body may still be coming; close rather than read it.
            return await _respond(send, error.status, error.message, close=error.status == 408)
        if self.in_flight >= self.max_concurrency:  # and again: the slot is taken only with a whole body
            return await self._too_many(send)
        self.in_flight += 1
        holding = True

        def release() -> None:
            nonlocal holding
            if holding:
                holding = False
                self.in_flight -= 1

        async def answer(message):
            if message["type"] == "http.response.start":
                release()  # writing the answer is the client's pace, not work: free the slot
            await send(message)

        try:
            try:
                request, changed = parse(body, self.max_texts, self.max_chars)
            except RequestError as error:
                return await _respond(answer, error.status, error.message)
            if changed:  # BentoML's own JSON parser rejects unpaired surrogates: forward clean text
                body = json.dumps(request).encode("utf-8")
            await self._unless_client_leaves(_with_body(scope, body), _replay(body, receive), answer, receive)
        finally:
            release()

    async def _too_many(self, send):
        self.on_reject("concurrency")
        message = f"too many requests in flight (limit {self.max_concurrency} per worker); retry shortly"
        return await _respond(send, 429, message)

    async def _unless_client_leaves(self, scope, receive, send, client_receive) -> None:
        """Run the app, but cancel it if the client hangs up before the response starts.

        The body has been read, so the only message the client's `receive` can still deliver is
        http.disconnect (uvicorn sends it when the connection closes). Cancelling the app cancels its
        `Batcher.submit`, which takes the job off the queue if no batch has started it.
        """
        started = False

        async def watched_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        app = asyncio.ensure_future(self.app(scope, receive, watched_send))
        gone = asyncio.ensure_future(_disconnected(client_receive))
        try:
            await asyncio.wait((app, gone), return_when=asyncio.FIRST_COMPLETED)
            if app.done() or started or gone.exception() is not None:
                return await app
            app.cancel()
            try:
                await app
            except asyncio.CancelledError:
                if asyncio.current_task().cancelling():  # we were cancelled too, not only the app
                    raise
            self.on_cancel()
            if not started:  # nobody will read it: an answer for BentoML's metrics and access log
                await _respond(send, CLIENT_CLOSED, "the client closed the connection before the answer")
        finally:
            gone.cancel()
            app.cancel()

    async def _read_body(self, receive, content_length: str | None, deadline: float) -> bytes:
        too_large = (
            f"the body is larger than {self.max_body} bytes "
            f"(at most {self.max_texts} texts of {self.max_chars} characters)"
        )
        if content_length is not None and content_length.isdigit() and int(content_length) > self.max_body:
            raise RequestError(413, too_large)
        chunks, size = [], 0
        try:
            async with asyncio.timeout_at(deadline):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise RequestError(400, "the client disconnected before sending the whole body")
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.max_body:
                        raise RequestError(413, too_large)
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        return b"".join(chunks)
        except TimeoutError:
            raise RequestError(
                408, f"the body must arrive within {self.body_timeout_s:g} s of the request; {size} bytes came"
            ) from None

    async def _docs(self, scope, receive, send):
        """Pass /docs.json through, adding the statuses of /classify and /predict that BentoML does not list."""
        start: dict = {}
        chunks: list[bytes] = []

        async def capture(message):
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, capture)
        body = b"".join(chunks)
        if start.get("status") == 200:
            spec = json.loads(body)
            components = spec.get("components", {}).get("schemas", {})
            for path in PARSERS:
                operation = spec.get("paths", {}).get(path, {}).get("post", {})
                if "requestBody" in operation:  # a missing body gets 415 or 400
                    operation["requestBody"]["required"] = True
                    # BentoML's inline copy of the request schema keeps only the first type of a union (so
                    # /predict's "inputs" lost its list form, and optional fields their null): use the full one.
                    content = operation["requestBody"].get("content", {}).get("application/json", {})
                    title = content.get("schema", {}).get("title")
                    if title in components:
                        content["schema"] = components[title]
                error_schema = {"$ref": "#/components/schemas/InvalidArgument"}
                for status, description in EXTRA_RESPONSES.items():
                    operation.get("responses", {}).setdefault(
                        status, {"description": description, "content": {"application/json": {"schema": error_schema}}}
                    )
            body = json.dumps(openapi_30_nullable(spec)).encode("utf-8")
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": start.get("status", 500), "headers": headers})
        await send({"type": "http.response.body", "body": body})


class GazeEdge:
    """Pure ASGI middleware in front of all of BentoML; see the module docstring.

    `routes` are the exact paths BentoML serves (API routes and its own /livez, /metrics, ...);
    `static_files` are the files under `static_prefix` (the /ui/ page), `static_prefix` itself for
    its index. Anything else gets our 404 and never reaches BentoML's metrics or access log.
    """

    def __init__(
        self,
        app,
        *,
        routes: Collection[str],
        static_prefix: str,
        static_files: Collection[str],
        send_timeout_s: float = 30.0,
        unsent: Unsent | None = None,
        on_reject=None,
        protected: Collection[str] = (),
        api_key: str | None = None,
        cors_origins: Collection[str] = (),
    ):
        self.app = app
        self.protected = frozenset(protected) if api_key else frozenset()
        self.api_key = (api_key or "").encode("utf-8")
        self.cors_origins = frozenset(origin.encode("ascii") for origin in cors_origins)
        self.send_timeout_s = send_timeout_s
        self.unsent = unsent or Unsent(limit=sys.maxsize)
        self.trimmer = _Trimmer()
        self.static_prefix = static_prefix.rstrip("/") + "/"
        self.known = {*routes, self.static_prefix, *(self.static_prefix + name for name in static_files)}
        self.redirects = {"/", self.static_prefix.rstrip("/")}
        self.on_reject = on_reject or (lambda reason: None)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        headers = scope["headers"]  # names are lower-case in ASGI
        names = {name for name, _ in headers}
        path, method = scope["path"], scope["method"]
        origin = _header(headers, b"origin")
        if self.cors_origins:  # every answer, errors included, so that an allowed page can read it
            send = _with_headers(send, self._cors_headers(origin))
        if b"transfer-encoding" in names and b"content-length" in names:
            # Two framings, and parsers in front of us may pick the other one (request smuggling).
            self.on_reject("framing")
            message = "a request may not have both Content-Length and Transfer-Encoding"
            return await _respond(send, 400, message, started=started, close=True)
        content_type = _header(headers, b"content-type") or b""
        if not content_type.isascii():
            self.on_reject("content_type")
            message = "Content-Type must be application/json, got a value that is not ASCII"
            return await _respond(send, 415, message, started=started)
        if path in self.known:
            if self.cors_origins and method == "OPTIONS" and b"access-control-request-method" in names:
                return await self._preflight(send, origin, started)
            if path in self.protected and not self._authorized(headers):
                return await self._unauthorized(send, headers, started)
            paced = self._paced(send, path)
            await self.app(scope, receive, paced)
            if paced.large:  # the app has let go of the body now
                self.trimmer.request()
            return
        if path in self.redirects:
            if method not in ("GET", "HEAD"):
                return await _respond(send, 405, f"{path} only redirects GET to {self.static_prefix}", started=started)
            # A relative Location: never a URL built from the client's Host header.
            headers = [(b"location", self.static_prefix.encode()), (b"content-length", b"0")]
            headers.append((b"x-total-time", _elapsed(started)))
            await send({"type": "http.response.start", "status": 307, "headers": headers})
            return await send({"type": "http.response.body", "body": b""})
        self.on_reject("unknown_path")
        routes = ", ".join(sorted(p for p in self.known if not p.startswith(self.static_prefix)))
        message = f"no such path; the service has {routes} and the page at {self.static_prefix}"
        return await _respond(send, 404, message, started=started)

    def _cors_headers(self, origin: bytes | None) -> list[tuple[bytes, bytes]]:
        """Allow-Origin for an allowed origin only; `Vary: Origin` always, since the answer depends on it."""
        headers = [(b"vary", b"origin")]
        if origin in self.cors_origins:
            headers += [(b"access-control-allow-origin", origin), (b"access-control-expose-headers", EXPOSED_HEADERS)]
        return headers

    async def _preflight(self, send, origin: bytes | None, started: float) -> None:
        """A browser asks whether a page of `origin` may send this request: yes (204) only for allowed origins."""
        if origin not in self.cors_origins:
            self.on_reject("cors_origin")
            shown = (origin or b"").decode("latin-1")
            return await _respond(send, 403, f"origin {shown!r:.200} may not call this service", started=started)
        headers = [
            (b"access-control-allow-methods", b"GET, POST"),
            (b"access-control-allow-headers", b"authorization, content-type"),
            (b"access-control-max-age", b"600"),
            (b"content-length", b"0"),
            (b"x-total-time", _elapsed(started)),
        ]
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    def _authorized(self, headers) -> bool:
        scheme, _, token = (_header(headers, b"authorization") or b"").partition(b" ")
        # compare_digest: the time taken does not tell how much of a guessed key was right.
        return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.api_key)

    async def _unauthorized(self, send, headers, started: float) -> None:
        self.on_reject("unauthorized")
        if _header(headers, b"authorization") is None:
            challenge, message = b"Bearer", "this route needs the API key: send 'Authorization: Bearer <key>'"
        else:  # RFC 6750: a key was sent, and it is wrong
            challenge, message = b'Bearer error="invalid_token"', "the API key in the Authorization header is wrong"
        send = _with_headers(send, [(b"www-authenticate", challenge)])
        return await _respond(send, 401, message, started=started)

    def _paced(self, send, path: str):
        """`send`, with large bodies cut into chunks that each wait for the socket to take the last.

        uvicorn's `send` waits (drain) while its write buffer is above 64 kB, so a client that does not
        read holds at most about two chunks there; the whole body, held by the app meanwhile, counts in
        `unsent`. A client that takes nothing for `send_timeout_s` is dropped: its connection is aborted
        (what waits in the socket's buffer is discarded), later sends do nothing, and the app finishes and
        frees the body. `paced.large` says whether a body was cut into chunks.
        """
        dropped = False

        async def within_timeout(message) -> None:
            async with asyncio.timeout(self.send_timeout_s):
                await send(message)

        async def paced(message) -> None:
            nonlocal dropped
            if dropped:
                return
            body = message.get("body", b"") if message["type"] == "http.response.body" else b""
            try:
                if len(body) <= CHUNK_BYTES:
                    return await within_timeout(message)
                paced.large = True
                more_body = message.get("more_body", False)
                view = memoryview(body)
                self.unsent.bytes += len(body)
                try:
                    for start in range(0, len(body), CHUNK_BYTES):
                        end = start + CHUNK_BYTES
                        chunk = {"type": "http.response.body", "body": bytes(view[start:end])}
                        await within_timeout({**chunk, "more_body": more_body or end < len(body)})
                finally:
                    self.unsent.bytes -= len(body)
            except TimeoutError:
                dropped = True
                self.on_reject("send_timeout")
                logger.warning("dropped a client of %s that read nothing for %g s", path, self.send_timeout_s)
                _abort(send)

        paced.large = False
        return paced


def _abort(send) -> None:
    """Close the client's connection at once, discarding what waits to be written.

    ASGI has no way to say this; uvicorn's `send` is a method of its request cycle, which holds the
    connection's transport. Without it (another server), the server closes the connection when the app
    returns, once its write buffer (at most about two chunks) has drained.
    """
    transport = getattr(getattr(inspect.unwrap(send), "__self__", None), "transport", None)
    if callable(getattr(transport, "abort", None)):
        transport.abort()


class _Trimmer:
    """Gives memory freed by large response bodies back to the system: glibc's `malloc_trim(0)`.

    glibc keeps freed blocks of up to its (adaptive) mmap threshold, 32 MB at most, in its heaps, so
    bodies of a few MB, once freed, stay in the worker's RSS. A trim takes milliseconds: it runs at most
    once a second, and always after the last large body. Without glibc it does nothing.
    """

    interval_s = 1.0

    def __init__(self):
        try:
            self._trim = ctypes.CDLL(None).malloc_trim
        except (OSError, AttributeError):
            self._trim = None
        self._last = -self.interval_s
        self._scheduled = False

    def request(self) -> None:
        if self._trim is None or self._scheduled:
            return
        loop = asyncio.get_running_loop()
        wait = self._last + self.interval_s - loop.time()
        if wait <= 0:
            self._run()
        else:
            self._scheduled = True
            loop.call_later(wait, self._run)

    def _run(self) -> None:
        self._scheduled = False
        self._last = asyncio.get_running_loop().time()
        self._trim(0)


def _header(headers, name: bytes) -> bytes | None:
    """The first value of the header `name` (lower-case, as ASGI gives them), or None."""
    return next((value for key, value in headers if key == name), None)


def _with_headers(send, extra: list[tuple[bytes, bytes]]):
    """`send`, adding `extra` to the response's headers. `__wrapped__` leads `_abort` to the server's own send."""

    async def sending(message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *extra]}
        await send(message)

    sending.__wrapped__ = send
    return sending


def _elapsed(started: float) -> bytes:
    return b"%.2f" % ((time.perf_counter() - started) * 1000)


async def _disconnected(receive) -> None:
    """Returns when the client has hung up; for a request whose body has been read."""
    while (await receive())["type"] != "http.disconnect":
        await asyncio.sleep(0.1)  # not uvicorn (it has nothing else to send): poll, never spin


async def _respond(send, status: int, message: str, *, started: float | None = None, close: bool = False) -> None:
    body = error_body(message)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if started is not None:
        headers.append((b"x-total-time", _elapsed(started)))
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _with_body(scope, body: bytes):
    headers = [(k, v) for k, v in scope["headers"] if k.lower() not in (b"content-length", b"transfer-encoding")]
    headers.append((b"content-length", str(len(body)).encode()))
    return {**scope, "headers": headers}


def _replay(body: bytes, receive):
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
