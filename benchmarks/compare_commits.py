"""Benchmark 1's core measure at two commits, interleaved: in-process classification of SST-2 dev with
[CLS] maps, ours against the HF pipeline of the same size, in a checkout of each commit by turns.

    git worktree add ../baseline <commit>
    python -m benchmarks.compare_commits ../baseline [--rounds 3]

Each round runs one fresh process per checkout (their order alternates), which times `Predictor.predict`
(fp32, batch 32, "cls") and the pipeline, median of 3 passes each after a warm-up pass. A restructure that
moves the Predictor (model/predictor.py became inference/predictor.py) is measured this way: the two versions
cannot share one process. Reports each checkout's sentences/s and its ratio to the pipeline, median over rounds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from benchmarks.common import ROOT, machine

# Run inside each checkout: it finds that checkout's Predictor wherever it lives.
PROBE = """
import json, statistics, time
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline
from transformers.utils import logging
from benchmarks.common import bert_peer_dir, our_model, sst2
try:
    from inference.predictor import Predictor
except ImportError:
    from model.predictor import Predictor
logging.set_verbosity_error()
texts, _ = sst2("dev")
folder, _ = our_model(None)
ours = Predictor(folder, max_batch_size=32, precision="fp32")
peer_dir = bert_peer_dir(folder)
peer = pipeline("text-classification", model=AutoModelForSequenceClassification.from_pretrained(peer_dir).eval(),
                tokenizer=AutoTokenizer.from_pretrained(peer_dir), device="cpu")
def timed(call):
    call()
    runs = []
    for _ in range(3):
        started = time.perf_counter(); call(); runs.append(time.perf_counter() - started)
    return statistics.median(runs)
ours_s = timed(lambda: ours.predict(texts, "cls"))
peer_s = timed(lambda: peer(texts, batch_size=32, truncation=True))
print(json.dumps({"ours_sentences_per_s": len(texts) / ours_s, "pipeline_sentences_per_s": len(texts) / peer_s}))
"""


def measure(checkout: Path) -> dict[str, float]:
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=checkout, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"error: the probe failed in {checkout}:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def commit(checkout: Path) -> str:
    return subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=checkout, capture_output=True, text=True
    ).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("baseline", type=Path, help="a checkout of the earlier commit")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    checkouts = {f"baseline {commit(args.baseline)}": args.baseline, f"this checkout {commit(ROOT)}": ROOT}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in checkouts}
    for r in range(args.rounds):
        for name in list(checkouts)[:: 1 if r % 2 == 0 else -1]:
            runs[name].append(measure(checkouts[name]))
            print(f"round {r + 1}, {name}: {runs[name][-1]}", file=sys.stderr, flush=True)
    print(f"CPU: {machine()['cpu']}; {args.rounds} rounds, median")
    print("| checkout | ours, cls maps: sentences/s | HF pipeline: sentences/s | ours vs pipeline |")
    print("|---|---|---|---|")
    for name, values in runs.items():
        ours = statistics.median(v["ours_sentences_per_s"] for v in values)
        peer = statistics.median(v["pipeline_sentences_per_s"] for v in values)
        ratio = statistics.median(v["ours_sentences_per_s"] / v["pipeline_sentences_per_s"] for v in values)
        print(f"| {name} | {ours:.0f} | {peer:.0f} | {ratio:.2f}× |")


if __name__ == "__main__":
    main()
