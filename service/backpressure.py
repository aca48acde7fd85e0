"""Back-pressure: a worker holds only so many answered bytes for clients that do not read them.

Large response bodies go out in chunks, each once the socket has taken the last, so a client that does
not read holds at most about two chunks in the socket's buffer; the whole body counts in `Unsent` meanwhile,
and admission (service/admission.py) refuses new model requests while that count is over its limit. A
client that takes nothing for the send timeout is dropped. Memory freed by large bodies is given back to
the system (`Trimmer`).
"""

from __future__ import annotations

import asyncio
import ctypes
import inspect
import logging
from collections.abc import Callable

CHUNK_BYTES = 64 * 1024  # asyncio's default write-buffer high-water mark, above which uvicorn's send waits
logger = logging.getLogger("gaze.http")


class Unsent:
    """Per worker: bytes of responses handed to the edge whose clients have not taken them yet.

    The edge (`paced`) counts a large body from when it starts sending it until the socket has taken its last
    chunk (or the client is dropped); admission refuses new model requests (503) while the
    count is at `limit` or above.
    """

    def __init__(self, limit: int):
        self.limit = limit
        self.bytes = 0

    @property
    def full(self) -> bool:
        return self.bytes >= self.limit


def paced(send, path: str, unsent: Unsent, send_timeout_s: float, on_reject: Callable[[str], None]):
    """`send`, with large bodies cut into chunks that each wait for the socket to take the last.

    uvicorn's `send` waits (drain) while its write buffer is above 64 kB, so a client that does not
    read holds at most about two chunks there; the whole body, held by the app meanwhile, counts in
    `unsent`. A client that takes nothing for `send_timeout_s` is dropped: its connection is aborted
    (what waits in the socket's buffer is discarded), later sends do nothing, and the app finishes and
    frees the body. `.large` says whether a body was cut into chunks.
    """
    dropped = False

    async def within_timeout(message) -> None:
        async with asyncio.timeout(send_timeout_s):
            await send(message)

    async def sending(message) -> None:
        nonlocal dropped
        if dropped:
            return
        body = message.get("body", b"") if message["type"] == "http.response.body" else b""
        try:
            if len(body) <= CHUNK_BYTES:
                return await within_timeout(message)
            sending.large = True
            more_body = message.get("more_body", False)
            view = memoryview(body)
            unsent.bytes += len(body)
            try:
                for start in range(0, len(body), CHUNK_BYTES):
                    end = start + CHUNK_BYTES
                    chunk = {"type": "http.response.body", "body": bytes(view[start:end])}
                    await within_timeout({**chunk, "more_body": more_body or end < len(body)})
            finally:
                unsent.bytes -= len(body)
        except TimeoutError:
            dropped = True
            on_reject("send_timeout")
            logger.warning("dropped a client of %s that read nothing for %g s", path, send_timeout_s)
            abort(send)

    sending.large = False
    return sending


def abort(send) -> None:
    """Close the client's connection at once, discarding what waits to be written.

    ASGI has no way to say this; uvicorn's `send` is a method of its request cycle, which holds the
    connection's transport. Without it (another server), the server closes the connection when the app
    returns, once its write buffer (at most about two chunks) has drained.
    """
    transport = getattr(getattr(inspect.unwrap(send), "__self__", None), "transport", None)
    if callable(getattr(transport, "abort", None)):
        transport.abort()


class Trimmer:
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
