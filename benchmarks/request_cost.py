"""Benchmark 6: what a request costs a worker, as a function of its texts, tokens and attention values.

The service schedules and caps requests by an estimated cost in milliseconds (`Predictor.cost_ms`):

    cost_ms = PER_TOKEN_MS × tokens + PER_VALUE_MS × attention values   (per text)

This script measures the work the way a worker does it — `Predictor.run` on one torch thread plus the
JSON serialization of each prediction — for every attention mode at several batch sizes and lengths,
fits the two coefficients by least squares (CPU time of the calling thread, so other load on the
machine matters less), and compares the fit with the constants in inference/predictor.py.

    python -m benchmarks.request_cost [--repeats 5] [--quick]
"""

from __future__ import annotations

import json
import statistics
import time

import numpy as np
import torch

from benchmarks.common import base_parser, our_model, report, sst2, table
from inference.contract import MODES, Options
from inference.predictor import PER_TOKEN_MS, PER_VALUE_MS, Item, Predictor

COLUMNS = ["mode", "texts", "tokens", "values", "ms", "estimate_ms", "ratio"]
SHAPES = [(1, 16), (1, 64), (1, 128), (8, 32), (8, 128), (32, 24), (32, 64)]  # (texts, tokens per text)


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per shape (median)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # a worker's setting (GAZE_THREADS = cores / workers)
    model_dir, model_note = our_model(args.model)
    predictor = Predictor(model_dir)
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
    long_text = " ".join(sst2("dev")[0][:40])  # well over 128 tokens, cut to each length below
    shapes = SHAPES[:3] if args.quick else SHAPES
    repeats = 1 if args.quick else args.repeats

    rows, features, measured = [], [], []
    for mode in MODES:
        for texts, length in shapes:
            encodings = predictor.encode([long_text] * texts)
            for encoding in encodings:
                encoding.truncate(length)
            items = [Item(encoding, Options(mode)) for encoding in encodings]
            predictor.run(items)  # warm-up
            times = []
            for _ in range(repeats):
                tic = time.thread_time()
                [dumps(prediction) for prediction in predictor.run(items)]
                times.append((time.thread_time() - tic) * 1000)
            tokens = sum(len(e.ids) for e in encodings)
            values = sum(predictor.attention_values(len(e.ids), mode) for e in encodings)
            ms = statistics.median(times)
            estimate = sum(predictor.cost_ms(item) for item in items)
            features.append([tokens, values])
            measured.append(ms)
            rows.append([mode, texts, length, values, round(ms, 2), round(estimate, 2), round(estimate / ms, 2)])

    fit, *_ = np.linalg.lstsq(np.array(features, dtype=float), np.array(measured), rcond=None)
    per_token, per_value = (float(x) for x in fit)
    markdown = "\n".join(
        [
            f"Model: {model_note}; one torch thread; CPU time of `Predictor.run` + JSON per prediction (ms, "
            f"median of {repeats}).",
            "",
            table(["mode", "texts", "tokens each", "values", "measured ms", "estimated ms", "est./meas."], rows),
            "",
            table(
                ["coefficient", "least-squares fit here", "inference/predictor.py"],
                [
                    ["per token (ms)", f"{per_token:.3g}", f"{PER_TOKEN_MS:.3g}"],
                    ["per attention value (ms)", f"{per_value:.3g}", f"{PER_VALUE_MS:.3g}"],
                ],
            ),
        ]
    )
    data = {
        "model": model_note,
        "repeats": repeats,
        "fit_ms": {"per_token": per_token, "per_value": per_value},
        "constants_ms": {"per_token": PER_TOKEN_MS, "per_value": PER_VALUE_MS},
        "rows": [dict(zip(COLUMNS, row, strict=True)) for row in rows],
    }
    report("request_cost", args, data, markdown)


if __name__ == "__main__":
    main()
