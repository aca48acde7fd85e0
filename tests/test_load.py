"""Sustained load against a real `bentoml serve`: 32 closed-loop clients, no 5xx, every response valid
against the contract, and the server's memory (RSS of `bentoml serve` and its workers) growing by at most
10 % from after the warm-up to the end.

`make test` runs the 15-second version; `make test-long` the 60-second one (marked `long`). Nothing here
is timed: throughput and latency are recorded as test properties, not asserted.
"""

import contextlib
import random
import threading

import psutil
import pytest

from benchmarks.loadgen import contract_problems, load
from tests.conftest import SHARED_DATA

LABELS = ["negative", "positive"]
CLIENTS = 32
WARMUP_S = 5
VOCABULARY = (
    "a gripping funny moving film dull lifeless mess that does n't work the ending is terrible "
    "and wonderful acting story one of best movies year ca be missed tedious boring two hours"
)
WORDS = VOCABULARY.split()


def payloads(n: int = 400) -> list[dict]:
    """Requests of varied shape: 1–4 texts of 1–80 words (SST-2 dev sentences when available), mostly
    "cls" maps, some "none", "rollout" and "last", so batches of many lengths and modes form."""
    rng = random.Random(0)
    dev = SHARED_DATA / "sst2" / "dev.tsv"
    sentences = (
        [line.split("\t")[0] for line in dev.read_text(encoding="utf-8").splitlines()[1:]] if dev.exists() else []
    )
    out = []
    for _ in range(n):
        texts = [
            rng.choice(sentences)
            if sentences and rng.random() < 0.7
            else " ".join(rng.choices(WORDS, k=rng.randint(1, 80)))
            for _ in range(rng.choice([1, 1, 1, 2, 4]))
        ]
        mode = rng.choices(["cls", "none", "rollout", "last"], weights=[7, 1, 1, 1])[0]
        out.append({"texts": texts, "attention": mode})
    return out


def server_rss(pid: int) -> int:
    """Bytes resident in `bentoml serve` and every process under it."""
    root = psutil.Process(pid)
    total = 0
    for proc in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += proc.memory_info().rss
    return total


def serve_pid(url: str) -> int:
    """The `bentoml serve` process listening behind `url` (the parent of the worker holding the port)."""
    port = int(url.rsplit(":", 1)[1])
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port and conn.pid:
            proc = psutil.Process(conn.pid)
            while proc.parent() is not None and "bentoml" in " ".join(proc.parent().cmdline()):
                proc = proc.parent()
            return proc.pid
    raise RuntimeError(f"no process listens on port {port}")


@pytest.mark.parametrize("duration", [pytest.param(15, id="15s"), pytest.param(60, id="60s", marks=pytest.mark.long)])
def test_sustained_load_is_correct_and_memory_stays_flat(server, duration, record_property):
    requests = payloads()
    pid = serve_pid(server)

    def validate(request, response):
        return contract_problems(request, response, LABELS)

    warm = load(f"{server}/classify", requests, clients=CLIENTS, duration=WARMUP_S, validate=validate)
    assert warm.statuses[200] > 0, warm.summary()
    before = server_rss(pid)

    samples: list[int] = []
    done = threading.Event()

    def sample():
        while not done.wait(1.0):
            samples.append(server_rss(pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        result = load(f"{server}/classify", requests, clients=CLIENTS, duration=duration, validate=validate)
    finally:
        done.set()
        sampler.join()
    after = server_rss(pid)

    summary = result.summary() | {"rss_mb_before": before / 2**20, "rss_mb_after": after / 2**20}
    summary["rss_mb_max"] = max(samples, default=after) / 2**20
    record_property("load", summary)
    print(summary)

    assert result.requests > 0
    assert result.server_errors == 0, summary
    assert result.invalid == 0, summary
    assert set(result.statuses) == {200}, summary  # nothing refused, nothing dropped, at the default limits
    assert after <= before * 1.10, f"RSS grew {after / before - 1:.1%} (limit 10 %): {summary}"
