"""A closed-loop HTTP load generator (asyncio + aiohttp) and the /classify contract check.

N clients each send one request, wait for its answer, and send the next, for a fixed time. Used by
the serving benchmark (benchmarks/http_serving.py) and the load and fault tests.

    result = load(url + "/classify", payloads, clients=32, duration=30, warmup=3)
    result.rps, result.p99_ms, result.error_rate
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp


@dataclass
class LoadResult:
    clients: int
    duration_s: float  # the measured window (after warm-up)
    requests: int  # completed in the window
    statuses: Counter = field(default_factory=Counter)  # status → count; 0 = connection error/timeout
    latencies_ms: list[float] = field(default_factory=list)  # of successful (200) requests in the window
    invalid: int = 0  # 200 responses that broke the contract (when a validator was given)
    problems: list[str] = field(default_factory=list)  # the first few errors and contract violations

    @property
    def rps(self) -> float:
        return self.statuses[200] / self.duration_s if self.duration_s else 0.0

    @property
    def error_rate(self) -> float:
        return (self.requests - self.statuses[200]) / self.requests if self.requests else 0.0

    def percentile(self, p: float) -> float:
        if not self.latencies_ms:
            return math.nan
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]

    @property
    def p50_ms(self) -> float:
        return self.percentile(50)

    @property
    def p95_ms(self) -> float:
        return self.percentile(95)

    @property
    def p99_ms(self) -> float:
        return self.percentile(99)

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)

    def summary(self) -> dict[str, Any]:
        return {
            "clients": self.clients,
            "duration_s": round(self.duration_s, 2),
            "requests": self.requests,
            "rps": round(self.rps, 2),
            "p50_ms": round(self.p50_ms, 2),
            "p95_ms": round(self.p95_ms, 2),
            "p99_ms": round(self.p99_ms, 2),
            "error_rate": round(self.error_rate, 5),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "invalid": self.invalid,
            "problems": self.problems[:10],
        }


Validator = Callable[[dict, dict], list[str]]  # (request payload, response JSON) → problems


async def load_async(
    url: str,
    payloads: Sequence[dict],
    clients: int,
    duration: float,
    warmup: float,
    validate: Validator | None,
    timeout: float,
    stop: asyncio.Event | None,
) -> LoadResult:
    bodies = [json.dumps(p).encode() for p in payloads]
    counter = itertools.count()
    result = LoadResult(clients=clients, duration_s=0.0, requests=0)
    headers = {"content-type": "application/json"}
    start = time.perf_counter()
    measure_from = start + warmup
    end = measure_from + duration

    async def client(session: aiohttp.ClientSession) -> None:
        while (now := time.perf_counter()) < end and not (stop and stop.is_set()):
            i = next(counter) % len(bodies)
            status, text = 0, ""
            try:
                async with session.post(url, data=bodies[i], headers=headers) as response:
                    status = response.status
                    text = await response.text()
            except (TimeoutError, aiohttp.ClientError, OSError) as error:
                text = f"{type(error).__name__}: {error}"
            done = time.perf_counter()
            if now < measure_from or done > end:
                continue  # started in the warm-up, or finished after the window
            result.requests += 1
            result.statuses[status] += 1
            if status == 200:
                result.latencies_ms.append((done - now) * 1000)
                if validate is not None:
                    try:
                        problems = validate(payloads[i], json.loads(text))
                    except ValueError as error:
                        problems = [f"invalid JSON: {error}"]
                    if problems:
                        result.invalid += 1
                        if len(result.problems) < 20:
                            result.problems.append(f"{payloads[i]!r:.80}: {problems[:3]}")
            elif len(result.problems) < 20:
                result.problems.append(f"status {status}: {text[:200]}")
            if status == 0:
                await asyncio.sleep(0.05)  # a refused connection returns at once: do not spin

    connector = aiohttp.TCPConnector(limit=clients)
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    async with aiohttp.ClientSession(connector=connector, timeout=client_timeout) as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))
    result.duration_s = min(time.perf_counter(), end) - measure_from
    return result


def load(
    url: str,
    payloads: Sequence[dict],
    *,
    clients: int,
    duration: float,
    warmup: float = 0.0,
    validate: Validator | None = None,
    timeout: float = 60.0,
) -> LoadResult:
    """Run `clients` closed-loop clients posting `payloads` (round-robin) to `url` for `warmup` +
    `duration` seconds; only requests started after the warm-up and finished in the window count."""
    return asyncio.run(load_async(url, payloads, clients, duration, warmup, validate, timeout, None))


# -------------------------------------------------------------------------------------------------
# /metrics
# -------------------------------------------------------------------------------------------------


def histogram(metrics_text: str, name: str) -> tuple[float, float]:
    """(sum, count) of a Prometheus histogram in a /metrics page, summed over its label sets."""
    total = count = 0.0
    for line in metrics_text.splitlines():
        match = re.match(rf"^{re.escape(name)}_(sum|count)(\{{[^}}]*\}})? ([0-9.eE+-]+)$", line)
        if match:
            if match.group(1) == "sum":
                total += float(match.group(3))
            else:
                count += float(match.group(3))
    return total, count


# -------------------------------------------------------------------------------------------------
# The response contract of POST /classify (inference/contract.py)
# -------------------------------------------------------------------------------------------------


# The fields of a prediction of a single-label model (a multi-label model's adds "labels").
PREDICTION_FIELDS = {
    *("label", "score", "scores", "top", "tokens", "offsets"),
    *("truncated", "attention", "words", "attribution"),
}


def contract_problems(request: dict, response: dict, labels: Sequence[str] | None = None) -> list[str]:
    """Everything wrong with a 200 response to `request` ({"texts": [...], "attention": mode})."""
    problems: list[str] = []
    mode = request.get("attention", "cls")
    predictions = response.get("predictions") if isinstance(response, dict) else None
    if not isinstance(predictions, list) or len(predictions) != len(request["texts"]):
        return [f"'predictions' is not a list of {len(request['texts'])}: {str(response)[:200]}"]
    for i, p in enumerate(predictions):
        where = f"predictions[{i}]"
        if not isinstance(p, dict) or set(p) != PREDICTION_FIELDS:
            problems.append(f"{where}: wrong fields {sorted(p) if isinstance(p, dict) else p!r:.100}")
            continue
        scores = p["scores"]
        if not isinstance(scores, dict) or not scores or (labels is not None and sorted(scores) != sorted(labels)):
            problems.append(f"{where}: scores {scores!r:.100}")
            continue
        if abs(sum(scores.values()) - 1) > 1e-4 or any(not 0 <= v <= 1 for v in scores.values()):
            problems.append(f"{where}: scores do not form a distribution: {scores}")
        if p["label"] not in scores or p["score"] != scores[p["label"]] or p["score"] != max(scores.values()):
            problems.append(f"{where}: label {p['label']!r}/score {p['score']} do not match the best of {scores}")
        tokens = p["tokens"]
        if not isinstance(tokens, list) or len(tokens) < 2 or not all(isinstance(t, str) for t in tokens):
            problems.append(f"{where}: tokens {tokens!r:.100}")
            continue
        if not isinstance(p["truncated"], bool):
            problems.append(f"{where}: truncated is {p['truncated']!r}")
        if not isinstance(p["offsets"], list) or len(p["offsets"]) != len(tokens):
            problems.append(f"{where}: offsets {p['offsets']!r:.100} are not one per token")
        problems += _attention_problems(where, p["attention"], mode, len(tokens))
    return problems


def _attention_problems(where: str, attention: Any, mode: str, t: int) -> list[str]:
    if mode == "none":
        return [] if attention is None else [f"{where}: attention should be null for mode none"]
    if not isinstance(attention, dict) or attention.get("mode") != mode:
        return [f"{where}: attention {str(attention)[:100]} is not mode {mode}"]
    shape, values = attention.get("shape"), attention.get("values")
    layers_heads = shape[:-1] if mode == "cls" else shape[:-2]
    expected_tail = {"cls": [t], "last": [t, t], "all": [t, t], "rollout": [t]}[mode]
    if not isinstance(shape, list) or shape[len(layers_heads) :] != expected_tail:
        return [f"{where}: attention shape {shape} does not end in {expected_tail} (T = {t} tokens)"]
    if _shape(values) != shape:
        return [f"{where}: attention values have shape {_shape(values)}, not the declared {shape}"]
    for row in last_axis_rows(values):
        # Values are rounded to 4 decimals: a row's sum may be off by half a unit per value.
        if abs(sum(row) - 1) > 5e-5 * len(row) + 1e-6 or any(not 0 <= v <= 1 for v in row):
            return [f"{where}: an attention row does not sum to 1: {row[:8]}"]
    return []


def _shape(values: Any) -> list[int]:
    shape = []
    while isinstance(values, list):
        shape.append(len(values))
        values = values[0] if values else None
    return shape


def last_axis_rows(values: list):
    """Every last-axis row of nested lists (each row of an attention map sums to 1)."""
    if values and isinstance(values[0], list):
        for value in values:
            yield from last_axis_rows(value)
    else:
        yield values
