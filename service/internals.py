"""The one place that relies on BentoML's and uvicorn's internals; tests/test_internals.py pins what it relies on.

BentoML adds a service's middleware inside its own (metrics, access log, timeout, router), and some
requests must be answered before those see them (service/edge.py). BentoML has no hook for an outer
middleware, so `serve_behind` overrides `Service.to_asgi`, the method each worker calls for the app it
serves. The Service object is an attrs class with slots: the method is overridden by giving the object a
subclass of its own class.

uvicorn, which serves each worker, has no deadline for a request's headers: `time_out_headers` gives it one
through uvicorn's table of protocol classes (BentoML's worker asks for the "auto" one).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import h11
import uvicorn.config
from uvicorn.protocols.http.h11_impl import H11Protocol


def serve_behind(service: Any, wrap: Callable[[Any, Any], Any]) -> None:
    """From now on `service.to_asgi(...)` returns `wrap(BentoML's app, service)`."""

    class Wrapped(type(service)):
        __slots__ = ()

        def to_asgi(self, is_main: bool = True):
            return wrap(super().to_asgi(is_main), self)

    service.__class__ = Wrapped


class HeaderTimeoutProtocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, with a deadline for each request's headers.

    uvicorn closes a connection idle for `--timeout-keep-alive` after an answer, but sets no timer for one that
    has sent nothing yet, or part of its headers: it is no request yet, so nothing above the protocol sees it
    (3,000 such connections were held open, hostile review 2). Here the headers must be complete within
    `timeout_s` of the connection opening, or of the previous answer; past it the connection is closed, after
    a 408 if any of the request had arrived. `on_timeout` is told each time (the service counts them).
    """

    timeout_s: float = 10.0
    on_timeout: Callable[[], None] = staticmethod(lambda: None)
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._wait_for_headers()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # the headers are in (h11 has read the request line and them)
            self._stop_waiting()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._wait_for_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        super().connection_lost(exc)

    def _wait_for_headers(self) -> None:
        self._stop_waiting()
        self._header_timer = self.loop.call_later(self.timeout_s, self._headers_timed_out)

    def _stop_waiting(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_timed_out(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        type(self).on_timeout()
        if self.conn.trailing_data[0]:  # part of a request arrived: say why it is closed
            body = json.dumps({"error": f"the request's headers did not arrive within {self.timeout_s:g} s"})
            self.transport.write(
                b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
                + f"content-length: {len(body)}\r\n\r\n{body}".encode()
            )
        self.transport.close()


def time_out_headers(timeout_s: float, on_timeout: Callable[[], None]) -> None:
    """From now on, uvicorn servers started in this process (BentoML's workers: their config asks for the "auto"
    protocol) serve HTTP/1.1 with `HeaderTimeoutProtocol`."""
    HeaderTimeoutProtocol.timeout_s = timeout_s
    HeaderTimeoutProtocol.on_timeout = staticmethod(on_timeout)
    uvicorn.config.HTTP_PROTOCOLS["auto"] = f"{__name__}:HeaderTimeoutProtocol"
