"""The edge: in front of all of BentoML (service/internals.py wraps the ASGI app BentoML serves).

Some requests must never reach BentoML's own middleware, which labels metrics with the raw path,
decodes the Content-Type for its access log, and redirects to URLs built from the Host header:

- 404 for every path the service does not have (so /metrics only ever names real routes);
- 505 + close for a request line of another HTTP version than 1.0 or 1.1; 431 + close for headers over
  MAX_HEADER_BYTES together (the HTTP parser in front has no limit of its own);
- 415 for a Content-Type that is not ASCII, 400 for more than one; 400 + close for Content-Length together
  with Transfer-Encoding; 403 for every WebSocket handshake (the service has no WebSocket route);
- `/` and `/ui` redirect to `/ui/` with a relative Location (never BentoML's Swagger page);
- with an API key (GAZE_API_KEY), 401 + `WWW-Authenticate: Bearer` on the model's routes without
  `Authorization: Bearer <key>`: refused before any of BentoML's work;
- with allowed origins (GAZE_CORS_ORIGINS), preflights answered (204, or 403 for another origin) and
  `Access-Control-Allow-Origin` on every answer to an allowed origin;
- the page served with a Content-Security-Policy (its own scripts and styles only, never in a frame);
- response bodies paced (service/backpressure.py).
"""

from __future__ import annotations

import hmac
import sys
import time
from collections.abc import Collection

from .backpressure import Trimmer, Unsent, paced
from .errors import elapsed_ms, respond

# Request headers, names and values together: 16 KiB is twice what nginx takes in one buffer
# (large_client_header_buffers 4 8k allows 8 KiB per line), far above any real client's.
MAX_HEADER_BYTES = 16 * 1024
HTTP_VERSIONS = ("1.0", "1.1")
# The page loads nothing but its own files; it may not be framed (clickjacking) nor its files sniffed.
PAGE_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    ),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
]

# The response headers a browser script of an allowed origin may read (CORS hides all others but a few).
EXPOSED_HEADERS = b"x-total-time, x-queue-time, x-inference-time, x-batch-size, x-precision, retry-after"


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
        self.trimmer = Trimmer()
        self.static_prefix = static_prefix.rstrip("/") + "/"
        self.known = {*routes, self.static_prefix, *(self.static_prefix + name for name in static_files)}
        self.redirects = {"/", self.static_prefix.rstrip("/")}
        self.on_reject = on_reject or (lambda reason: None)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket":  # the service has none: refused before BentoML sees the path (403)
            self.on_reject("websocket")
            await receive()  # websocket.connect
            return await send({"type": "websocket.close", "code": 1008})
        if scope["type"] != "http":  # lifespan
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        headers = scope["headers"]  # names are lower-case in ASGI
        names = {name for name, _ in headers}
        path, method = scope["path"], scope["method"]
        origin = header(headers, b"origin")
        if self.cors_origins:  # every answer, errors included, so that an allowed page can read it
            send = with_headers(send, self._cors_headers(origin))
        if scope.get("http_version") not in HTTP_VERSIONS:
            self.on_reject("http_version")
            message = f"HTTP/{scope.get('http_version')!s:.10} is not supported; send HTTP/1.1"
            return await respond(send, "http_version", message, started=started, close=True)
        if sum(len(name) + len(value) for name, value in headers) > MAX_HEADER_BYTES:
            self.on_reject("headers_too_large")
            message = f"the request's headers are over {MAX_HEADER_BYTES:,} bytes together"
            return await respond(send, "headers_too_large", message, started=started, close=True)
        if b"transfer-encoding" in names and b"content-length" in names:
            # Two framings, and parsers in front of us may pick the other one (request smuggling).
            self.on_reject("framing")
            message = "a request may not have both Content-Length and Transfer-Encoding"
            return await respond(send, "invalid", message, started=started, close=True)
        if sum(name == b"content-type" for name, _ in headers) > 1:  # layers would read different ones
            self.on_reject("content_type")
            message = "a request may have one Content-Type header, not several"
            return await respond(send, "invalid", message, started=started)
        content_type = header(headers, b"content-type") or b""
        if not content_type.isascii():
            self.on_reject("content_type")
            message = "Content-Type must be application/json, got a value that is not ASCII"
            return await respond(send, "unsupported_media_type", message, started=started)
        if path in self.known:
            if self.cors_origins and method == "OPTIONS" and b"access-control-request-method" in names:
                return await self._preflight(send, origin, started)
            if path in self.protected and not self._authorized(headers):
                return await self._unauthorized(send, headers, started)
            if path.startswith(self.static_prefix):
                send = with_headers(send, PAGE_HEADERS)
            sending = paced(send, path, self.unsent, self.send_timeout_s, self.on_reject)
            await self.app(scope, receive, sending)
            if sending.large:  # the app has let go of the body now
                self.trimmer.request()
            return
        if path in self.redirects:
            if method not in ("GET", "HEAD"):
                message = f"{path} only redirects GET to {self.static_prefix}"
                return await respond(send, "method_not_allowed", message, started=started)
            # A relative Location: never a URL built from the client's Host header.
            headers = [(b"location", self.static_prefix.encode()), (b"content-length", b"0")]
            headers.append((b"x-total-time", elapsed_ms(started)))
            await send({"type": "http.response.start", "status": 307, "headers": headers})
            return await send({"type": "http.response.body", "body": b""})
        self.on_reject("unknown_path")
        routes = ", ".join(sorted(p for p in self.known if not p.startswith(self.static_prefix)))
        message = f"no such path; the service has {routes} and the page at {self.static_prefix}"
        return await respond(send, "not_found", message, started=started)

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
            message = f"origin {shown!r:.200} may not call this service"
            return await respond(send, "forbidden", message, started=started)
        headers = [
            (b"access-control-allow-methods", b"GET, POST"),
            (b"access-control-allow-headers", b"authorization, content-type"),
            (b"access-control-max-age", b"600"),
            (b"content-length", b"0"),
            (b"x-total-time", elapsed_ms(started)),
        ]
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    def _authorized(self, headers) -> bool:
        scheme, _, token = (header(headers, b"authorization") or b"").partition(b" ")
        # compare_digest: the time taken does not tell how much of a guessed key was right.
        return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.api_key)

    async def _unauthorized(self, send, headers, started: float) -> None:
        self.on_reject("unauthorized")
        if header(headers, b"authorization") is None:
            challenge, message = b"Bearer", "this route needs the API key: send 'Authorization: Bearer <key>'"
        else:  # RFC 6750: a key was sent, and it is wrong
            challenge, message = b'Bearer error="invalid_token"', "the API key in the Authorization header is wrong"
        headers = [(b"www-authenticate", challenge)]
        return await respond(send, "unauthorized", message, started=started, headers=headers)


def header(headers, name: bytes) -> bytes | None:
    """The first value of the header `name` (lower-case, as ASGI gives them), or None."""
    return next((value for key, value in headers if key == name), None)


def with_headers(send, extra: list[tuple[bytes, bytes]]):
    """`send`, adding `extra` to the response's headers; `__wrapped__` leads `abort` to the server's own send."""

    async def sending(message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *extra]}
        await send(message)

    sending.__wrapped__ = send
    return sending
