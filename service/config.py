"""Service settings, read once from the environment (see the README's Serving section)."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from inference.precision import DEVICES, PRECISION_CHOICES, resolve_device
from inference.predictor import DEFAULT_MODEL, Predictor
from model.folder import ModelLoadError

SOURCE_ROOT = Path(__file__).resolve().parents[1]  # the project root, or a Bento's src/
BENTO_MODEL_NAME = "gaze-sst2"
_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*(:[A-Za-z0-9_.\-]+)?$")
_ORIGIN = re.compile(r"^[a-z][a-z0-9+.\-]*://[^/?#\s]+$")  # scheme://host[:port], as a browser's Origin header


def _int(name: str, default: int, minimum: int = 1) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise ValueError(f"{name}={value} must be at least {minimum}")
    return value


def _float(name: str, default: float, positive: bool = False) -> float:
    raw = os.environ.get(name, "").strip()
    try:
        value = float(raw) if raw else default
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number") from None
    if positive and not value > 0:  # also refuses nan
        raise ValueError(f"{name}={raw} must be above 0")
    return value


def _choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = os.environ.get(name, "").strip()
    if raw and raw not in choices:
        raise ValueError(f"{name}={raw!r} is not one of {', '.join(choices)}")
    return raw or default


def _device(name: str) -> str:
    device = _choice(name, "auto", DEVICES)
    try:
        return resolve_device(device).type
    except ValueError as error:
        raise ValueError(f"{name}={device}: {error}") from None


def _origins(name: str) -> tuple[str, ...]:
    origins = tuple(origin.strip().lower() for origin in os.environ.get(name, "").split(",") if origin.strip())
    for origin in origins:
        if not _ORIGIN.match(origin):
            raise ValueError(
                f"{name}: {origin!r} is not an origin; write scheme://host[:port] (no path, no trailing slash), "
                "comma-separated"
            )
    return origins


def cpu_count() -> int:
    """CPUs this process may use: the affinity mask, capped by a cgroup v2 quota if there is one."""
    count = len(os.sched_getaffinity(0))
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            count = min(count, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return count


@dataclass(frozen=True)
class Settings:
    model: str  # the GAZE_MODEL value: a folder, or a BentoML model tag
    max_texts: int  # texts per request
    max_chars: int  # characters per text
    max_request_cost_ms: float  # a request's estimated work (Predictor.cost_ms: tokens, maps); more gets 413
    batch_cost_ms: float  # estimated work per batch: larger requests are split, small ones slip in between
    max_concurrency: int  # /classify requests in flight per worker; more get 429
    max_queue_texts: int  # texts waiting for a batch per worker; more get 503
    max_batch_texts: int  # texts per batch (the predictor splits it further by length)
    batch_wait_ms: float  # extra wait for a burst to gather; 0 = continuous batching
    workers: int
    threads: int  # torch intra-op threads per worker
    precision: str  # "fp32", "bf16" autocast, or "auto" (measured at startup, service.py)
    timeout_s: int  # BentoML's request timeout (504 past it)
    retry_after_s: int
    header_timeout_s: float  # a request's headers must arrive within this many seconds; then closed (408)
    body_timeout_s: float  # a /classify body must arrive within this many seconds; 408 past it
    send_timeout_s: float  # a client that takes none of its response for this long is dropped
    max_pending_bytes: int  # response bytes per worker waiting for their clients to read them; more: 503
    max_receiving_bytes: int  # bytes of request bodies per worker still arriving; more: 503
    device: str  # "cpu" or "cuda" (GAZE_DEVICE=auto resolved here, so that a missing GPU stops the start)
    api_key: str | None = field(repr=False)  # if set, model routes need "Authorization: Bearer <key>"
    cors_origins: tuple[str, ...]  # browser origins allowed to call the service; empty: no CORS headers

    @property
    def is_tag(self) -> bool:
        return is_model_tag(self.model)

    @classmethod
    def from_env(cls) -> Settings:
        workers = _int("GAZE_WORKERS", cpu_count())  # one per core, one thread each: benchmarks/README.md, 3
        return cls(
            model=default_model(),
            max_texts=_int("GAZE_MAX_TEXTS", 64),
            max_chars=_int("GAZE_MAX_CHARS", 10_000),
            max_request_cost_ms=_float("GAZE_MAX_REQUEST_COST_MS", 2000.0, positive=True),
            batch_cost_ms=_float("GAZE_BATCH_COST_MS", 50.0, positive=True),
            max_concurrency=_int("GAZE_MAX_CONCURRENCY", 128),
            max_queue_texts=_int("GAZE_MAX_QUEUE_TEXTS", 1024),
            max_batch_texts=_int("GAZE_MAX_BATCH_TEXTS", 64),
            batch_wait_ms=_float("GAZE_BATCH_WAIT_MS", 0.0),
            workers=workers,
            threads=_int("GAZE_THREADS", max(1, cpu_count() // workers)),
            precision=_choice("GAZE_PRECISION", "auto", PRECISION_CHOICES),
            timeout_s=_int("GAZE_TIMEOUT", 60),
            retry_after_s=_int("GAZE_RETRY_AFTER", 1),
            header_timeout_s=_float("GAZE_HEADER_TIMEOUT_S", 10.0, positive=True),
            body_timeout_s=_float("GAZE_BODY_TIMEOUT_S", 10.0, positive=True),
            send_timeout_s=_float("GAZE_SEND_TIMEOUT_S", 30.0, positive=True),
            max_pending_bytes=_int("GAZE_MAX_PENDING_BYTES", 256_000_000),
            max_receiving_bytes=_int("GAZE_MAX_RECEIVING_BYTES", 64_000_000),
            device=_device("GAZE_DEVICE"),
            api_key=os.environ.get("GAZE_API_KEY", "").strip() or None,
            cors_origins=_origins("GAZE_CORS_ORIGINS"),
        )


def is_model_tag(spec: str) -> bool:
    """A BentoML tag ("gaze-sst2", "gaze-sst2:abc123") rather than a path (which has a slash or exists)."""
    return "/" not in spec and os.sep not in spec and not Path(spec).exists() and bool(_TAG.match(spec))


def default_model() -> str:
    """GAZE_MODEL if set; inside a built Bento, the model the Bento carries; else checkpoints/gaze-sst2."""
    if spec := os.environ.get("GAZE_MODEL", "").strip():
        return spec
    bento_yaml = SOURCE_ROOT.parent / "bento.yaml"
    if bento_yaml.is_file():
        import yaml

        info = yaml.safe_load(bento_yaml.read_text(encoding="utf-8")) or {}
        entries = [*(info.get("models") or [])]
        for service in info.get("services") or []:
            entries += service.get("models") or []
        for entry in entries:
            tag = str(entry.get("tag") if isinstance(entry, dict) else entry)
            if tag.startswith(BENTO_MODEL_NAME + ":"):
                return tag
    return str(DEFAULT_MODEL)


def check_source(spec: str, **predictor_options) -> Predictor:
    """The `Predictor` of the model `spec` names (a folder or a BentoML model tag), run once; or a
    ModelLoadError that says what is wrong. Loading and running it catches what a file check cannot, e.g.
    weights that do not fit the config."""
    tag = is_model_tag(spec)
    if tag:
        import bentoml
        from bentoml.exceptions import NotFound

        try:
            path = bentoml.models.get(spec).path
        except NotFound:
            raise ModelLoadError(
                f"GAZE_MODEL={spec} is neither a folder nor a model in the BentoML model store "
                f"({os.environ.get('BENTOML_HOME', '~/bentoml')}); `make bento` imports one"
            ) from None
    else:
        path = spec
    try:
        predictor = Predictor(path, **predictor_options)
    except ModelLoadError as error:
        hint = "" if tag else "; set GAZE_MODEL to a saved Gaze folder or a BentoML model tag"
        raise ModelLoadError(f"{error}{hint}") from None
    (check,) = predictor.predict(["a check"], "cls")
    if not all(math.isfinite(score) for score in check["scores"].values()):  # finite weights can still overflow
        raise ModelLoadError(
            f"the model {spec} gives non-finite scores ({check['scores']!r:.200}): its weights or config.json "
            "overflow in the forward pass; it would answer every request with an error"
        )
    return predictor
