"""Benchmark 8: a small request's latency while other clients loop the largest request the service allows.

The attack of issue 13, item 2: 4 clients each send, again and again, the largest `"attention": "all"`
request the server accepts (as many 10,000-character texts as it takes; each is cut to the model's 128
positions, and its maps are layers × heads × 128 × 128 numbers), while one client sends one SST-2 dev
sentence with `"attention": "cls"` at a time. The small client's p50/p99 is measured alone (idle) and beside
the large clients (loaded); the ratio is what a user of small requests feels. A third phase (hostile review
2): the 4 clients loop a request the cost limit refuses (64 texts of 10,000 CJK characters, `all`), and the
workers' resident memory is sampled through every phase. Each server is a real `bentoml serve` of the
shipped model with its default settings (a worker per core), in fp32.

`--before REV` serves the code of another commit too (a `git worktree` of REV, same Python and
packages), interleaved with this checkout in every round, so both are measured on the same machine
in the same minutes.

    python -m benchmarks.fairness [--before REV] [--duration 20] [--rounds 3] [--quick]
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import multiprocessing
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import aiohttp
import httpx
import psutil

from benchmarks.common import ROOT, base_parser, median, our_model, report, sst2, table
from benchmarks.harness import served, server_env
from benchmarks.loadgen import load_async

LARGE_CLIENTS = 4
LONG_TEXT_CHARS = 10_000
RSS_PHASES = (("idle_rss_mb",), ("large", "rss_mb"), ("refused", "rss_mb"))  # where each phase's peak is kept
# Refused by the cost limit (hostile review 2, item 2): the most texts, of the dearest characters to tokenize.
REFUSED = {"texts": ["日本語のテキスト" * (LONG_TEXT_CHARS // 8)] * 64, "attention": "all"}


@contextlib.contextmanager
def worktree(rev: str):
    """A checkout of `rev` in a temporary folder (removed afterwards)."""
    with tempfile.TemporaryDirectory(prefix="gaze-before-") as tmp:
        path = Path(tmp) / "tree"
        add = ["git", "worktree", "add", "--detach", str(path), rev]
        subprocess.run(add, cwd=ROOT, check=True, capture_output=True)
        try:
            yield path
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=ROOT, capture_output=True)


def largest_allowed(url: str, text: str) -> dict:
    """The `all` request with the most copies of `text` that the server does not refuse (413 is cheap)."""
    for count in range(64, 0, -1):
        payload = {"texts": [text] * count, "attention": "all"}
        response = httpx.post(f"{url}/classify", json=payload, timeout=120)
        if response.status_code != 413:
            response.raise_for_status()
            return payload
    raise RuntimeError("the server refuses even one long text in 'all' mode")


async def _large_client(url: str, body: bytes, duration: float, warmup: float) -> dict:
    """One client that posts `body` again and again, reading each answer fast and throwing it away (as an
    attacker would; decoding 30 MB of JSON in Python would make the client, not the server, the bottleneck).
    Counts the answers that finished in the measured window."""
    start = time.perf_counter()
    measure_from, end = start + warmup, start + warmup + duration
    done: dict[str, int] = {}
    headers = {"content-type": "application/json"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        while time.perf_counter() < end:
            async with session.post(f"{url}/classify", data=body, headers=headers) as response:
                async for _ in response.content.iter_chunked(1 << 20):
                    pass
            if measure_from <= time.perf_counter() <= end:
                done[str(response.status)] = done.get(str(response.status), 0) + 1
    return done


def large_client(url: str, body: bytes, duration: float, warmup: float) -> dict:
    return asyncio.run(_large_client(url, body, duration, warmup))


def workers_rss_mb() -> float:
    """The resident memory of the server's workers (BentoML's worker processes below this one), in MB."""
    total = 0
    for process in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if "_bentoml_impl.worker" in " ".join(process.cmdline()):
                total += process.memory_info().rss
    return total / 2**20


@contextlib.contextmanager
def peak_rss(every: float = 0.25):
    """Samples `workers_rss_mb` until the block ends; yields a dict that then holds the peak, "rss_mb"."""
    peak = {"rss_mb": workers_rss_mb()}
    done = threading.Event()

    def sample() -> None:
        while not done.wait(every):
            peak["rss_mb"] = max(peak["rss_mb"], workers_rss_mb())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield peak
    finally:
        done.set()
        sampler.join()


def small_beside_large(url: str, small: list[dict], large: dict | None, duration: float, warmup: float):
    """The small client's run alone (`large` None), or beside LARGE_CLIENTS large ones over the same window,
    each in a process of its own (so that their reading does not delay the small client's clock). Returns the
    small client's summary and the large clients' answers, with the workers' peak memory."""
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(LARGE_CLIENTS, mp_context=context) as pool, peak_rss() as memory:
        body = json.dumps(large).encode()
        clients = (
            [pool.submit(large_client, url, body, duration, warmup) for _ in range(LARGE_CLIENTS)] if large else []
        )
        result = asyncio.run(load_async(f"{url}/classify", small, 1, duration, warmup, None, 120.0, None))
        answers: dict[str, int] = {}
        for client in clients:
            for status, count in client.result().items():
                answers[status] = answers.get(status, 0) + count
    return result.summary(), {"answers": answers, "per_s": sum(answers.values()) / duration, **memory}


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--before", help="also serve the code of this git commit, for a before/after comparison")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds measured per phase")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds before measuring (the large clients start)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.quick:
        args.duration, args.warmup, args.rounds = 3.0, 1.0, 1
    folder, model_note = our_model(args.model)
    sentences = sst2("dev")[0]
    small = [{"texts": [sentence], "attention": "cls"} for sentence in sentences]
    long_text = " ".join(sentences)[:LONG_TEXT_CHARS]

    with contextlib.ExitStack() as stack:
        trees = {"this checkout": ROOT}
        if args.before:
            trees[f"before ({args.before})"] = stack.enter_context(worktree(args.before))
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gaze-fairness-")))
        names = list(trees)
        runs: dict[str, list[dict]] = {name: [] for name in names}
        for r in range(args.rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                # fp32 on both: the default became GAZE_PRECISION=auto (bf16 where faster) after the "before" commit
                env = server_env(tmp / f"home-{r}-{len(runs[name])}", GAZE_MODEL=folder, GAZE_PRECISION="fp32")
                with served(env=env, cwd=trees[name], log_path=tmp / f"{name[:6]}.log") as url:
                    large = largest_allowed(url, long_text)
                    idle, alone = small_beside_large(url, small, None, args.duration, args.warmup)
                    # refused before large: the large answers' memory, which stays a while, would count for both
                    hostile, refused = small_beside_large(url, small, REFUSED, args.duration, args.warmup)
                    loaded, big = small_beside_large(url, small, large, args.duration, args.warmup)
                runs[name].append(
                    {"large_texts": len(large["texts"]), "idle": idle, "loaded": loaded, "large": big}
                    | {"idle_rss_mb": alone["rss_mb"], "beside_refused": hostile, "refused": refused}
                )
                print(
                    f"  round {r + 1} {name}: small p99 idle {idle['p99_ms']:.0f} ms, beside large "
                    f"{loaded['p99_ms']:.0f} ms ({len(large['texts'])} texts per large request, {big['per_s']:.2f}/s), "
                    f"beside refused {hostile['p99_ms']:.0f} ms (statuses {refused['answers']}); workers' peak RSS "
                    f"idle {alone['rss_mb']:.0f} MB, large {big['rss_mb']:.0f} MB, refused {refused['rss_mb']:.0f} MB",
                    file=sys.stderr,
                    flush=True,
                )

    def med(name: str, *keys: str) -> float:
        values = []
        for run in runs[name]:
            value = run
            for key in keys:
                value = value[key]
            values.append(value)
        return median(values)

    rows = [
        [
            name,
            f"{med(name, 'idle', 'p50_ms'):.0f} / {med(name, 'idle', 'p99_ms'):.0f}",
            f"{med(name, 'loaded', 'p50_ms'):.0f} / {med(name, 'loaded', 'p99_ms'):.0f}",
            f"{med(name, 'loaded', 'p99_ms') / med(name, 'idle', 'p99_ms'):.1f}×",
            f"{med(name, 'large_texts'):.0f}",
            f"{med(name, 'large', 'per_s') * med(name, 'large_texts'):.1f}",
            ", ".join(sorted({status for run in runs[name] for status in run["large"]["answers"]})),
            f"{med(name, 'beside_refused', 'p50_ms'):.0f} / {med(name, 'beside_refused', 'p99_ms'):.0f}",
            f"{med(name, 'beside_refused', 'p99_ms') / med(name, 'idle', 'p99_ms'):.1f}×",
            ", ".join(sorted({status for run in runs[name] for status in run["refused"]["answers"]})),
            " / ".join(f"{med(name, *keys):.0f}" for keys in RSS_PHASES),
        ]
        for name in names
    ]
    headers = [
        "server",
        "small p50 / p99 ms, alone",
        f"small p50 / p99 ms, beside {LARGE_CLIENTS} large clients",
        "p99 loaded / alone",
        "texts per large request",
        "large: texts/s",
        "large: statuses",
        f"small p50 / p99 ms, beside {LARGE_CLIENTS} refused clients",
        "p99 refused / alone",
        "refused: statuses",
        "workers' peak RSS MB: alone / large / refused",
    ]
    markdown = "\n\n".join(
        [
            f"### A small request beside {LARGE_CLIENTS} clients looping the largest allowed `all` request, or "
            f"one the cost limit refuses, {args.duration:.0f} s per phase after {args.warmup:.0f} s warm-up, "
            f"median of {args.rounds} round(s)",
            f"Model: {model_note}; servers at their default settings but GAZE_PRECISION=fp32; load generator "
            "in this process (each large client in a process of its own).",
            table(headers, rows),
        ]
    )
    data = {"model": model_note, "duration_s": args.duration, "rounds": args.rounds, "before": args.before}
    data["runs"] = runs
    report("fairness", args, data, markdown)


if __name__ == "__main__":
    main()
