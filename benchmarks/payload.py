"""Benchmark 4: bytes per prediction and serialization time, per attention mode, at SST-2 and IMDB lengths.

For each mode, the predictions of `Predictor.predict` are serialized exactly as the service does
(`json.dumps(p, ensure_ascii=False, separators=(",", ":"))`, UTF-8). Reported per prediction: JSON
bytes, the attention values alone as JSON and as base64 fp16 (an alternative encoding), the time of
`json.dumps`, and the time of the whole prediction (tokenize, forward, slice, round, to lists).

SST-2: the 872 dev sentences (model with 128 positions, as shipped). IMDB: the first `--imdb` reviews
of train.jsonl, with a same-size model of 512 positions (so reviews are seen at full length up to 512
tokens) and, for comparison, cut to 128 tokens as the shipped model sees them. Modes are interleaved.

    python -m benchmarks.payload [--quick]
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import time

from benchmarks.common import base_parser, imdb, median, our_model, report, sst2, table
from inference.contract import MODES
from inference.predictor import Predictor


def dumps(prediction: dict) -> bytes:
    return json.dumps(prediction, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def count_values(values) -> int:
    if isinstance(values, list):
        return sum(count_values(v) for v in values) if values and isinstance(values[0], list) else len(values)
    return 0


def measure(predictor: Predictor, texts: list[str], rounds: int) -> dict[str, dict]:
    results = {mode: {"predict_s": [], "dumps_s": []} for mode in MODES}
    modes = list(MODES)
    for r in range(rounds + 1):  # round 0 warms up
        for mode in modes[r % len(modes) :] + modes[: r % len(modes)]:
            tic = time.perf_counter()
            predictions = predictor.predict(texts, mode)
            predicted = time.perf_counter() - tic
            tic = time.perf_counter()
            bodies = [dumps(p) for p in predictions]
            dumped = time.perf_counter() - tic
            if r == 0:
                attention = [
                    len(json.dumps(p["attention"]["values"], separators=(",", ":"))) if p["attention"] else 0
                    for p in predictions
                ]
                values = [count_values(p["attention"]["values"]) if p["attention"] else 0 for p in predictions]
                results[mode] |= {
                    "bytes": [len(b) for b in bodies],
                    "attention_json_bytes": attention,
                    "attention_base64_fp16_bytes": [4 * math.ceil(2 * n / 3) for n in values],
                    "values": values,
                    "tokens": [len(p["tokens"]) for p in predictions],
                }
                continue
            results[mode]["predict_s"].append(predicted)
            results[mode]["dumps_s"].append(dumped)
    return results


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--imdb", type=int, default=12, help="IMDB reviews measured")
    args = parser.parse_args()
    rounds, n_imdb = (1, 3) if args.quick else (args.rounds, args.imdb)
    sentences, _ = sst2("dev")
    if args.quick:
        sentences = sentences[:64]
    reviews = imdb(n_imdb)

    folder128, note128 = our_model(args.model)
    folder512, note512 = our_model(None, max_positions=512)
    sets = {
        f"SST-2 dev ({len(sentences)})": (Predictor(folder128), sentences),
        f"IMDB ({len(reviews)}), up to 512 tokens": (Predictor(folder512), reviews),
        f"IMDB ({len(reviews)}), cut to 128 tokens": (Predictor(folder128), reviews),
    }
    data, rows = {}, []
    for name, (predictor, texts) in sets.items():
        print(f"  {name}", flush=True, file=sys.stderr)
        measured = measure(predictor, texts, rounds)
        data[name] = measured
        for mode in MODES:
            m = measured[mode]
            n = len(texts)
            rows.append(
                [
                    name,
                    mode,
                    f"{statistics.mean(m['tokens']):.0f}",
                    f"{statistics.mean(m['values']):,.0f}",
                    f"{statistics.mean(m['bytes']):,.0f}",
                    f"{max(m['bytes']):,}",
                    f"{statistics.mean(m['attention_json_bytes']):,.0f}",
                    f"{statistics.mean(m['attention_base64_fp16_bytes']):,.0f}",
                    f"{median(m['dumps_s']) / n * 1000:.3f}",
                    f"{median(m['predict_s']) / n * 1000:.2f}",
                ]
            )
    headers = [
        "texts",
        "mode",
        "tokens (mean)",
        "attention values",
        "JSON bytes (mean)",
        "JSON bytes (max)",
        "maps as JSON",
        "maps as base64 fp16",
        "json.dumps ms",
        "whole prediction ms",
    ]
    markdown = "\n\n".join(
        [
            f"### Payload per prediction, by attention mode (median of {rounds} interleaved rounds; per text)",
            f"Models: {note128} (SST-2, IMDB cut to 128); {note512} (IMDB up to 512). Values rounded to 4 "
            'decimals, as served. "whole prediction" is `Predictor.predict` per text in a batch (tokenize, '
            "forward, slice, round, to lists); json.dumps is on top of it.",
            table(headers, rows),
        ]
    )
    summary = {
        name: {
            mode: {
                "tokens_mean": statistics.mean(m["tokens"]),
                "bytes_mean": statistics.mean(m["bytes"]),
                "bytes_max": max(m["bytes"]),
                "attention_json_bytes_mean": statistics.mean(m["attention_json_bytes"]),
                "attention_base64_fp16_bytes_mean": statistics.mean(m["attention_base64_fp16_bytes"]),
                "dumps_ms_per_text": median(m["dumps_s"]) / len(m["bytes"]) * 1000,
                "predict_ms_per_text": median(m["predict_s"]) / len(m["bytes"]) * 1000,
                "dumps_s": m["dumps_s"],
                "predict_s": m["predict_s"],
            }
            for mode, m in measured.items()
        }
        for name, measured in data.items()
    }
    report("payload", args, {"models": [note128, note512], "rounds": rounds, "sets": summary}, markdown)


if __name__ == "__main__":
    main()
