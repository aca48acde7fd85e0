"""The HTTP edge of the service: request validation, admission control and timing headers.

`GazeMiddleware` sits in front of BentoML's router, so every rule of the contract answers with our
own JSON error body ({"error": "what is wrong and the limit"}) before BentoML's generic validation
sees the request:

- 415 for a Content-Type other than application/json, 400 for malformed JSON or a wrong shape,
  413 for more texts or longer texts (or a larger body) than the limits;
- 429 + Retry-After when more /classify requests are in flight than the limit (checked before the
  body is read, so the answer is immediate);
- `x-total-time` (ms) on every response; /classify adds `x-queue-time` and `x-inference-time`;
- /docs.json marks the /classify body required and lists its error statuses next to BentoML's own.

`GazeEdge` sits in front of all of BentoML (service.py wraps the ASGI app BentoML serves), because some
requests must never reach BentoML's own middleware, which labels metrics with the raw path, decodes the
Content-Type for its access log, and redirects to URLs built from the Host header:

- 404 for every path the service does not have (so /metrics only ever names real routes);
- 415 for a Content-Type that is not ASCII; 400 + close for Content-Length together with Transfer-Encoding;
- `/` and `/ui` redirect to `/ui/` with a relative Location (never BentoML's Swagger page).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Collection, Sequence
from typing import Any

from model.predictor import MODES, sanitize

CLASSIFY_PATH = "/classify"
FIELDS = ("texts", "attention")
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

    Returns ({"texts": [...], "attention": mode}, changed), where `changed` says that a text held an
    unpaired surrogate escape (valid JSON, not valid Unicode), now replaced by U+FFFD.
    """
    try:  # strictly UTF-8: json.loads(bytes) would also accept UTF-16/32 and a BOM, which BentoML refuses
        payload = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise RequestError(400, f"malformed JSON: the body is not valid UTF-8 ({error.reason})") from None
    except json.JSONDecodeError as error:
        raise RequestError(400, f"malformed JSON: {error.msg} at line {error.lineno} column {error.colno}") from None
    except ValueError:  # the only other ValueError of json.loads: Python's limit on integer digits
        limit = sys.get_int_max_str_digits()
        raise RequestError(400, f"malformed JSON: a number has more than {limit} digits") from None
    except RecursionError:
        raise RequestError(400, "malformed JSON: nested too deeply") from None
    if not isinstance(payload, dict):
        raise RequestError(
            400, f'the body must be a JSON object like {{"texts": ["..."], "attention": "cls"}}, got {_kind(payload)}'
        )
    unknown = sorted(set(payload) - set(FIELDS))
    if unknown:
        raise RequestError(400, f"unknown field {unknown[0]!r}; the fields are 'texts' and 'attention'")
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
    check_texts(texts, max_chars)
    attention = payload.get("attention", "cls")
    if attention not in MODES or not isinstance(attention, str):
        raise RequestError(400, f"unknown attention mode {attention!r:.60}; expected one of {', '.join(MODES)}")
    clean = [sanitize(text) for text in texts]
    return {"texts": clean, "attention": attention}, clean != texts


def check_texts(texts: Sequence[Any], max_chars: int) -> None:
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise RequestError(400, f"texts[{i}] is not a string (got {_kind(text)})")
        if not text or text.isspace():
            raise RequestError(400, f"texts[{i}] is empty or whitespace-only")
        if len(text) > max_chars:
            raise RequestError(413, f"texts[{i}] has {len(text)} characters; the limit is {max_chars}")


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


# Error statuses of /classify, added to BentoML's OpenAPI document (it lists 400, 404 and 500).
EXTRA_RESPONSES = {
    "413": "Too many texts, a text too long, or an attention payload too large (the message gives the limit)",
    "415": "Content-Type is not application/json",
    "429": "Too many requests in flight; retry after Retry-After seconds",
    "503": "The batch queue is full, or the service is not ready; retry after Retry-After seconds",
    "504": "The request took longer than the service timeout",
}


class GazeMiddleware:
    """Pure ASGI middleware; see the module docstring. One instance per worker."""

    def __init__(
        self, app, *, max_texts: int, max_chars: int, max_concurrency: int, retry_after_s: int, on_reject=None
    ):
        self.app = app
        self.on_reject = on_reject or (lambda reason: None)
        self.max_texts = max_texts
        self.max_chars = max_chars
        self.max_concurrency = max_concurrency
        self.retry_after = str(retry_after_s).encode()
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
            if path == CLASSIFY_PATH and method == "POST":
                return await self._classify(scope, receive, tracked_send)
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

    async def _classify(self, scope, receive, send):
        if self.in_flight >= self.max_concurrency:
            self.on_reject("concurrency")
            return await _respond(
                send, 429, f"too many requests in flight (limit {self.max_concurrency} per worker); retry shortly"
            )
        self.in_flight += 1
        try:
            headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
            try:
                check_content_type(headers.get("content-type"))
                body = await self._read_body(receive, headers.get("content-length"))
                request, changed = parse_request(body, self.max_texts, self.max_chars)
            except RequestError as error:
                return await _respond(send, error.status, error.message)
            if changed:  # BentoML's own JSON parser rejects unpaired surrogates: forward clean text
                body = json.dumps(request).encode("utf-8")
            await self.app(_with_body(scope, body), _replay(body, receive), send)
        finally:
            self.in_flight -= 1

    async def _read_body(self, receive, content_length: str | None) -> bytes:
        too_large = (
            f"the body is larger than {self.max_body} bytes "
            f"(at most {self.max_texts} texts of {self.max_chars} characters)"
        )
        if content_length is not None and content_length.isdigit() and int(content_length) > self.max_body:
            raise RequestError(413, too_large)
        chunks, size = [], 0
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

    async def _docs(self, scope, receive, send):
        """Pass /docs.json through, adding the statuses of /classify that BentoML does not list."""
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
            operation = spec.get("paths", {}).get(CLASSIFY_PATH, {}).get("post", {})
            if "requestBody" in operation:  # a missing body gets 415 or 400
                operation["requestBody"]["required"] = True
            responses = operation.get("responses")
            if responses is not None:
                error_schema = {"$ref": "#/components/schemas/InvalidArgument"}
                for status, description in EXTRA_RESPONSES.items():
                    responses.setdefault(
                        status, {"description": description, "content": {"application/json": {"schema": error_schema}}}
                    )
                body = json.dumps(spec).encode("utf-8")
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
        on_reject=None,
    ):
        self.app = app
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
        if b"transfer-encoding" in names and b"content-length" in names:
            # Two framings, and parsers in front of us may pick the other one (request smuggling).
            self.on_reject("framing")
            message = "a request may not have both Content-Length and Transfer-Encoding"
            return await _respond(send, 400, message, started=started, close=True)
        content_type = next((value for name, value in headers if name == b"content-type"), b"")
        if not content_type.isascii():
            self.on_reject("content_type")
            message = "Content-Type must be application/json, got a value that is not ASCII"
            return await _respond(send, 415, message, started=started)
        if path in self.known:
            return await self.app(scope, receive, send)
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


def _elapsed(started: float) -> bytes:
    return b"%.2f" % ((time.perf_counter() - started) * 1000)


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
