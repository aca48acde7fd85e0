"""Admission of the model's requests (/classify, /predict): checked here, then answered by the service's
`answer` method directly, so that BentoML's router does not parse and validate the body a second time
(BentoML's own outer middleware, metrics, tracing, access log and timeout, still see every request).

- 415 for a Content-Type other than application/json, 400 for malformed JSON or a wrong shape,
  413 for more texts or longer texts (or a larger body) than the limits (the parsers: service/requests.py);
- 408 + close when the body has not all arrived within the body deadline. A request takes one of the
  in-flight slots only once its body is complete, and gives it back when its response starts: a client
  that sends or reads slowly holds no slot;
- 429 + Retry-After when more model requests are in flight than the limit (checked at once, and again when
  the body is complete); 503 + Retry-After while the worker holds more response bytes for clients that
  have not read them than its limit (service/backpressure.py), and 503 + close for a body that would take the
  bytes of bodies still arriving past theirs (GAZE_MAX_RECEIVING_BYTES);
- a request whose client hangs up before its answer is cancelled (its job leaves the batch queue unrun)
  and logged as 499;
- GET routes the service answers from what it has loaded (`reads`: TEI's /info and /health), 405 for
  another method;
- `x-total-time` (ms) on every response; /docs.json completed (service/openapi.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

from starlette.responses import Response

from .backpressure import Unsent
from .errors import RequestError, respond
from .openapi import serve_docs
from .requests import PARSERS, Classify, TeiPredict, check_content_type, max_body_bytes

logger = logging.getLogger("gaze.http")


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
        max_receiving_bytes: int = 64_000_000,
        unsent: Unsent | None = None,
        answer: Callable[[Classify | TeiPredict], Awaitable[Response]],
        reads: Mapping[str, Callable[[], Response]] = {},
        on_reject=None,
        on_cancel=None,
        api_key_required: bool = False,
    ):
        self.app = app
        self.api_key_required = api_key_required  # /docs.json says so
        self.answer = answer
        self.reads = reads
        self.on_reject = on_reject or (lambda reason: None)
        self.on_cancel = on_cancel or (lambda: None)
        self.max_texts = max_texts
        self.max_chars = max_chars
        self.max_concurrency = max_concurrency
        self.retry_after = str(retry_after_s).encode()
        self.body_timeout_s = body_timeout_s
        self.unsent = unsent
        self.max_body = max_body_bytes(max_texts, max_chars)
        self.max_receiving = max(max_receiving_bytes, self.max_body)  # a whole largest body always fits
        self.receiving = 0  # bytes of bodies still arriving: held before any in-flight slot is taken
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
            if path in PARSERS:
                if method != "POST":
                    message = f"{path} takes POST with a JSON body, not {method[:20]}"
                    headers = [(b"allow", b"POST")]
                    return await respond(tracked_send, "method_not_allowed", message, headers=headers)
                return await self._classify(scope, receive, tracked_send, PARSERS[path])
            if path in self.reads:
                if method != "GET":
                    message = f"{path} takes GET, not {method[:20]}"
                    return await respond(tracked_send, "method_not_allowed", message, headers=[(b"allow", b"GET")])
                return await self.reads[path]()(scope, receive, tracked_send)
            if path == "/docs.json" and method == "GET":
                return await serve_docs(self.app, scope, receive, tracked_send, bearer=self.api_key_required)
            return await self.app(scope, receive, tracked_send)
        except Exception:
            # Answer at once: raised before a response, BentoML's timeout middleware would hold the
            # connection until the timeout and then send a plain-text 500.
            if responded:
                raise
            logger.exception("unexpected error on %s %.100r", method, path)
            await respond(timed_send, "internal", "internal error while handling this request (logged by the service)")

    async def _classify(self, scope, receive, send, parse):
        """A request to the model (/classify or /predict): admitted, its body read and checked by `parse`."""
        deadline = asyncio.get_running_loop().time() + self.body_timeout_s
        if self.unsent is not None and self.unsent.full:
            self.on_reject("pending_bytes")
            message = (
                f"overloaded: {self.unsent.bytes} bytes of answers wait for their clients to read them "
                f"(limit {self.unsent.limit} per worker); retry shortly"
            )
            return await respond(send, "overloaded", message)
        if self.in_flight >= self.max_concurrency:  # checked now, so that the answer is immediate
            return await self._too_many(send)
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
        try:
            check_content_type(headers.get("content-type"))
            body = await self._read_body(receive, headers.get("content-length"), deadline)
        except RequestError as error:
            if error.kind in ("body_timeout", "overloaded"):
                self.on_reject("body_timeout" if error.kind == "body_timeout" else "receiving_bytes")
            # The rest of the body may still be coming: close rather than read it.
            close = error.kind in ("body_timeout", "overloaded")
            return await respond(send, error.kind, error.message, close=close)
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
                request = parse(body, self.max_texts, self.max_chars)
            except RequestError as error:
                return await respond(answer, error.kind, error.message)
            await self._unless_client_leaves(scope, request, receive, answer)
        finally:
            release()

    async def _too_many(self, send):
        self.on_reject("concurrency")
        message = f"too many requests in flight (limit {self.max_concurrency} per worker); retry shortly"
        return await respond(send, "too_many_requests", message)

    async def _unless_client_leaves(self, scope, request, receive, send) -> None:
        """Answer `request`, but cancel the answer if the client hangs up before the response starts.

        The body has been read, so the only message the client's `receive` can still deliver is
        http.disconnect (uvicorn sends it when the connection closes). Cancelling the answer cancels its
        `Batcher.submit`, which takes the job off the queue if no batch has started it.
        """
        started = False

        async def watched_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        async def answer() -> None:
            response = await self.answer(request)
            await response(scope, receive, watched_send)

        app = asyncio.ensure_future(answer())
        gone = asyncio.ensure_future(_disconnected(receive))
        try:
            await asyncio.wait((app, gone), return_when=asyncio.FIRST_COMPLETED)
            if app.done() or started or gone.exception() is not None:
                return await app
            app.cancel()
            try:
                await app
            except asyncio.CancelledError:
                if asyncio.current_task().cancelling():  # we were cancelled too, not only the answer
                    raise
            self.on_cancel()
            if not started:  # nobody will read it: an answer for BentoML's metrics and access log
                await respond(send, "client_closed", "the client closed the connection before the answer")
        finally:
            gone.cancel()
            app.cancel()

    async def _read_body(self, receive, content_length: str | None, deadline: float) -> bytes:
        too_large = (
            f"the body is larger than {self.max_body} bytes "
            f"(at most {self.max_texts} texts of {self.max_chars} characters)"
        )
        if content_length is not None and content_length.isdigit() and int(content_length) > self.max_body:
            raise RequestError("too_large", too_large)
        chunks, size = [], 0
        try:
            async with asyncio.timeout_at(deadline):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise RequestError("invalid", "the client disconnected before sending the whole body")
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    self.receiving += len(chunk)
                    if size > self.max_body:
                        raise RequestError("too_large", too_large)
                    if self.receiving > self.max_receiving:  # bodies uploading at once, all clients together
                        refusal = (
                            f"overloaded: {self.receiving} bytes of request bodies are arriving at once (limit "
                            f"{self.max_receiving} per worker); retry shortly"
                        )
                        raise RequestError("overloaded", refusal)
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        return b"".join(chunks)
        except TimeoutError:
            message = f"the body must arrive within {self.body_timeout_s:g} s of the request; {size} bytes came"
            raise RequestError("body_timeout", message) from None
        finally:
            self.receiving -= size


async def _disconnected(receive) -> None:
    """Returns when the client has hung up; for a request whose body has been read."""
    while (await receive())["type"] != "http.disconnect":
        await asyncio.sleep(0.1)  # not uvicorn (it has nothing else to send): poll, never spin
