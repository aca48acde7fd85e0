"""Every refusal of the service: one kind → status table, and one JSON body, {"error": "what is wrong"}.

The contract's errors (inference.contract.ContractError) carry a kind of their own ("invalid",
"too_large"); the edge and admission add the rest. Only this table chooses a status.
"""

from __future__ import annotations

import json
import time
from typing import Literal

Kind = Literal[
    "invalid",  # malformed JSON, a wrong shape, an unknown field or value
    "unauthorized",  # no or a wrong API key
    "forbidden",  # a CORS preflight from an origin not allowed
    "not_found",  # a path the service does not have
    "method_not_allowed",
    "body_timeout",  # the body did not arrive within the body deadline
    "too_large",  # more texts, longer texts, a larger body or more estimated work than the limits
    "unsupported_media_type",  # Content-Type other than application/json
    "too_many_requests",  # more requests in flight than the limit
    "headers_too_large",  # request headers over MAX_HEADER_BYTES together
    "client_closed",  # the client hung up before the answer (logged, never read)
    "internal",
    "overloaded",  # the batch queue is full, or too many answered bytes wait for slow clients
    "timeout",  # past GAZE_TIMEOUT: answered by BentoML's timeout middleware, listed here for /docs.json
    "http_version",  # a request line of an HTTP version other than 1.0 or 1.1
]
STATUS: dict[str, int] = {
    "invalid": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "body_timeout": 408,
    "too_large": 413,
    "unsupported_media_type": 415,
    "too_many_requests": 429,
    "headers_too_large": 431,
    "client_closed": 499,  # nginx's status for "the client closed the connection before the answer"
    "internal": 500,
    "overloaded": 503,
    "timeout": 504,
    "http_version": 505,
}


class RequestError(Exception):
    """A refusal of one request: its kind (hence its status) and the message the client reads."""

    def __init__(self, kind: Kind, message: str):
        super().__init__(message)
        self.kind = kind
        self.message = message

    @property
    def status(self) -> int:
        return STATUS[self.kind]


def error_body(message: str) -> bytes:
    return json.dumps({"error": message}, ensure_ascii=False).encode("utf-8")


def elapsed_ms(started: float) -> bytes:
    """The `x-total-time` header's value: milliseconds since `started` (a perf_counter reading)."""
    return b"%.2f" % ((time.perf_counter() - started) * 1000)


async def respond(
    send, kind: Kind, message: str, *, started: float | None = None, close: bool = False, headers=()
) -> None:
    """Answer with the status of `kind` and the JSON error body; `close` asks the server to close the connection."""
    body = error_body(message)
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]
    if started is not None:
        head.append((b"x-total-time", elapsed_ms(started)))
    if close:
        head.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": STATUS[kind], "headers": head})
    await send({"type": "http.response.body", "body": body})
