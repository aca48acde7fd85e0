"""The one place that relies on BentoML's internals; tests/test_internals.py pins what it relies on.

BentoML adds a service's middleware inside its own (metrics, access log, timeout, router), and some
requests must be answered before those see them (service/edge.py). BentoML has no hook for an outer
middleware, so `serve_behind` overrides `Service.to_asgi`, the method each worker calls for the app it
serves. The Service object is an attrs class with slots: the method is overridden by giving the object a
subclass of its own class.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def serve_behind(service: Any, wrap: Callable[[Any, Any], Any]) -> None:
    """From now on `service.to_asgi(...)` returns `wrap(BentoML's app, service)`."""

    class Wrapped(type(service)):
        __slots__ = ()

        def to_asgi(self, is_main: bool = True):
            return wrap(super().to_asgi(is_main), self)

    service.__class__ = Wrapped
