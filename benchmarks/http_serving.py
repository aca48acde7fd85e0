"""Benchmark 3: HTTP serving under closed-loop load, ours vs ours without batching vs a naive server.

Five servers run side by side on loopback: our BentoML service as shipped (`bentoml serve`, its
default settings: a worker per core, one torch thread each), the same with batching disabled
(GAZE_MAX_BATCH_TEXTS=1: every batch holds one request's text), one worker with a thread per core
(GAZE_WORKERS=1, the setting before 2026-12-02), one worker with one thread (GAZE_WORKERS=1
GAZE_THREADS=1), and a minimal Starlette app that runs the HF pipeline per request on a
`BertForSequenceClassification` of the same size (benchmarks/naive_server.py). Each request is one
SST-2 dev sentence with `"attention": "cls"`. At 1, 8 and 32 clients, each server gets `--duration`
seconds (after a warm-up), the servers interleaved in rotated order in every round. The mean batch
size comes from our service's `/metrics` (gaze_batch_size histogram over all workers, difference
over the window).

The load generator (benchmarks/loadgen.py) runs in this process, on the same 2 cores as the server.

    python -m benchmarks.http_serving [--duration 30] [--rounds 1] [--quick] [--baseline DIR]

`--baseline DIR` (a checkout of an earlier commit, e.g. `git worktree add DIR <commit>`) adds that
checkout's service with the shipped settings as a sixth server, interleaved with the others: a change
measured against the code before it, in the same run.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks.common import (
    RESULTS,
    base_parser,
    bert_peer_dir,
    goal,
    goals_table,
    median,
    our_model,
    report,
    sst2,
    table,
)
from benchmarks.harness import ROOT, free_port, running, served, server_env
from benchmarks.loadgen import histogram, load

CLIENTS = (1, 8, 32)
SHIPPED = "ours as shipped (a worker per core, 1 thread each)"
ONE_WORKER = "ours, 1 worker × a thread per core"
NAIVE = "naive Starlette + HF pipeline"


@contextlib.contextmanager
def naive_server(model_dir: Path, log_path: Path):
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "benchmarks.naive_server:app", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--log-level", "warning"]
    env = {**os.environ, "NAIVE_MODEL": str(model_dir), "TOKENIZERS_PARALLELISM": "false"}
    with running(command, port, env=env, startup_timeout=180, log_path=log_path) as url:
        yield url


def batch_stats(url: str) -> tuple[float, float]:
    try:
        return histogram(httpx.get(f"{url}/metrics", timeout=10).text, "gaze_batch_size")
    except httpx.HTTPError:
        return (0.0, 0.0)


def in_process_rate(folder: Path, texts: list[str], rounds: int, precision: str) -> float:
    """Sentences/s of `Predictor.predict(texts, "cls")` in this process: the same model as the servers, in the
    precision the shipped server runs (its `x-precision`: GAZE_PRECISION=auto picks it by measurement)."""
    from inference.predictor import Predictor

    predictor = Predictor(folder, max_batch_size=32, precision=precision)
    predictor.predict(texts, "cls")
    times = []
    for _ in range(rounds):
        tic = time.perf_counter()
        predictor.predict(texts, "cls")
        times.append(time.perf_counter() - tic)
    return len(texts) / median(times)


def baseline_name(checkout: Path) -> str:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=checkout, capture_output=True, text=True)
    return f"ours as shipped, at {commit.stdout.strip() or checkout.name} (--baseline)"


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=30.0, help="seconds measured per server and client count")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--baseline", type=Path, help="a checkout of an earlier commit, served beside ours")
    args = parser.parse_args()
    if args.baseline and not (args.baseline / "service" / "service.py").is_file():
        parser.error(f"--baseline {args.baseline}: not a checkout of this project (no service/service.py)")
    duration, clients_list = args.duration, CLIENTS
    if args.quick:
        duration, clients_list, args.warmup = 3.0, (1, 8), 1.0
    texts, _ = sst2("dev")
    folder, model_note = our_model(args.model)
    peer_dir = bert_peer_dir(folder)
    payloads = [{"texts": [t], "attention": "cls"} for t in texts]

    e2e_file = RESULTS / "classify_e2e.json"
    bench1 = None
    if e2e_file.exists():
        bench1 = json.loads(e2e_file.read_text())["sentences_per_s"].get("ours, cls maps (as shipped)")

    with tempfile.TemporaryDirectory(prefix="gaze-bench-") as tmp, contextlib.ExitStack() as stack:
        tmp = Path(tmp)

        def ours(name: str, cwd: Path = ROOT, **settings) -> str:
            env = server_env(tmp / name, GAZE_MODEL=folder, **settings)
            return stack.enter_context(served(env=env, log_path=tmp / f"{name}.log", cwd=cwd))

        servers = {
            SHIPPED: ours("shipped"),
            "ours, batching off": ours("unbatched", GAZE_MAX_BATCH_TEXTS=1),
            ONE_WORKER: ours("one-worker", GAZE_WORKERS=1),
            "ours, 1 worker × 1 thread": ours("one-thread", GAZE_WORKERS=1, GAZE_THREADS=1),
            NAIVE: stack.enter_context(naive_server(peer_dir, tmp / "naive.log")),
        }
        if args.baseline:
            servers[baseline_name(args.baseline)] = ours("baseline", cwd=args.baseline)
        names = list(servers)
        precision = httpx.post(f"{servers[SHIPPED]}/classify", json=payloads[0], timeout=60).headers["x-precision"]
        in_process = in_process_rate(folder, texts, 1 if args.quick else 3, precision)
        runs: dict[str, dict[int, list[dict]]] = {name: {c: [] for c in clients_list} for name in names}
        for clients in clients_list:
            for r in range(args.rounds):
                order = names[r % len(names) :] + names[: r % len(names)]
                for name in order:
                    url = servers[name]
                    before = batch_stats(url)
                    result = load(f"{url}/classify", payloads, clients=clients, duration=duration, warmup=args.warmup)
                    after = batch_stats(url)
                    summary = result.summary()
                    batches = after[1] - before[1]
                    summary["mean_batch_size"] = (after[0] - before[0]) / batches if batches else None
                    runs[name][clients].append(summary)
                    print(
                        f"  {name}, {clients} clients: {summary['rps']:.1f} req/s, p99 {summary['p99_ms']:.0f} ms",
                        file=sys.stderr,
                        flush=True,
                    )

    def med(name: str, clients: int, key: str) -> float:
        values = [run[key] for run in runs[name][clients] if run[key] is not None]
        return median(values) if values else float("nan")

    rows = []
    for clients in clients_list:
        for name in names:
            batch = med(name, clients, "mean_batch_size") if name.startswith("ours") else None
            rows.append(
                [
                    clients,
                    name,
                    f"{med(name, clients, 'rps'):.1f}",
                    f"{med(name, clients, 'p50_ms'):.1f}",
                    f"{med(name, clients, 'p95_ms'):.1f}",
                    f"{med(name, clients, 'p99_ms'):.1f}",
                    f"{med(name, clients, 'error_rate') * 100:.2f} %",
                    "n/a" if batch is None else f"{batch:.1f}",
                ]
            )
    top = max(clients_list)
    naive_rps, naive_p99 = med(NAIVE, top, "rps"), med(NAIVE, top, "p99_ms")
    goals = []
    for name, label in ((SHIPPED, "ours"), (ONE_WORKER, "ours with 1 worker (GAZE_WORKERS=1)")):
        rps, p99 = med(name, top, "rps"), med(name, top, "p99_ms")
        goals += [
            goal(f"{label} vs naive, requests/s at {top} clients", rps / naive_rps, 3.0),
            {
                "goal": f"{label}: p99 below naive p99 at {top} clients",
                "value": round(naive_p99 / p99, 3),
                "target": 1.0,
                "met": p99 < naive_p99,
                "text": f"{p99:.0f} ms vs {naive_p99:.0f} ms",
            },
            goal(f"{label}: HTTP sentences/s at {top} clients vs in-process (same run)", rps / in_process, 0.70, ""),
        ]
    low = min(clients_list)
    goals.insert(
        0, goal(f"ours vs naive, requests/s at {low} client(s)", med(SHIPPED, low, "rps") / med(NAIVE, low, "rps"), 1.2)
    )
    if args.baseline:
        base = baseline_name(args.baseline)
        for clients in clients_list:
            ratio = med(SHIPPED, clients, "rps") / med(base, clients, "rps")
            goals.append(goal(f"ours vs the --baseline checkout, requests/s at {clients} clients", ratio, 1.0))
    ours_rps = med(SHIPPED, top, "rps")
    if bench1:
        goals.append(goal(f"HTTP sentences/s at {top} clients vs benchmark 1 in-process", ours_rps / bench1, 0.70, ""))
    headers = ["clients", "server", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors", "mean batch"]
    markdown = "\n\n".join(
        [
            f'### HTTP serving, one SST-2 dev sentence per request, attention "cls", {duration:.0f} s per cell '
            f"after {args.warmup:.0f} s warm-up, median of {args.rounds} round(s)",
            f"Model: {model_note}; the naive peer runs a same-size BERT. In-process batched throughput of the "
            f"same model in this run, in {precision} as the shipped server runs it: {in_process:,.0f} sentences/s"
            + (f" (benchmark 1's JSON: {bench1:,.0f})" if bench1 else "")
            + ".",
            table(headers, rows),
            goals_table(goals),
        ]
    )
    report(
        "http_serving",
        args,
        {
            "model": model_note,
            "duration_s": duration,
            "warmup_s": args.warmup,
            "rounds": args.rounds,
            "in_process_sentences_per_s": in_process,
            "precision": precision,
            "benchmark1_sentences_per_s": bench1,
            "runs": {name: {str(c): v for c, v in per.items()} for name, per in runs.items()},
            "goals": goals,
        },
        markdown,
    )


if __name__ == "__main__":
    main()
