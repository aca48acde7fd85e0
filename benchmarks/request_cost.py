"""Benchmark 6: what a request costs a worker, measured, against the cost model the service schedules and caps by.

The service schedules and caps requests by an estimated cost in milliseconds (`Predictor.cost_ms`):

    cost_ms = (PER_TOKEN_MS + PER_MULTIPLY_ADD_MS × weights of the blocks) × tokens
              + PER_VALUE_MS × attention values + PER_LABEL_MS × labels              (per text)
              + PER_CHAR_MS × characters tokenized                                 (per request)

This script measures the work the way a worker does it — `Predictor.run` on one torch thread plus the
JSON serialization of each prediction — for every attention mode at several batch sizes and lengths, and
without maps for copies of the model with 2 and 12 blocks; fits the first three coefficients by least
squares (CPU time of the calling thread, so other load on the machine matters less) and compares the fit
with the constants in inference/predictor.py. Then the same for models of 2 to 10,000 labels (the
per-label slope) and for tokenizing English and CJK text of 100 to 10,000 characters (per character of the
head `Predictor.encode` tokenizes, CPU time of all threads: the Rust tokenizer runs its own; CJK, a token
per character, is the dearer and sets PER_CHAR_MS).

    python -m benchmarks.request_cost [--repeats 5] [--quick]
"""

from __future__ import annotations

import copy
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import base_parser, our_model, report, sst2, table
from inference.contract import MODES, Options
from inference.predictor import (
    PER_CHAR_MS,
    PER_LABEL_MS,
    PER_MULTIPLY_ADD_MS,
    PER_TOKEN_MS,
    PER_VALUE_MS,
    Item,
    Predictor,
)
from model import GazeForSequenceClassification

COLUMNS = ["layers", "mode", "texts", "tokens", "values", "ms", "estimate_ms", "ratio"]
SHAPES = [(1, 16), (1, 64), (1, 128), (8, 32), (8, 128), (32, 24), (32, 64)]  # (texts, tokens per text)
LABEL_COUNTS = [2, 1_000, 10_000]
DEPTHS = [2, 12]  # blocks of the shipped model's shape, beside its own
TEXT_CHARS = [100, 1_000, 10_000]


def cpu_ms(work, repeats: int, clock=time.thread_time) -> float:
    """The median CPU time (of the calling thread; `time.process_time`: of all threads) over `repeats` runs of
    `work()`, after one untimed run."""
    work()
    times = []
    for _ in range(repeats):
        tic = clock()
        work()
        times.append((clock() - tic) * 1000)
    return statistics.median(times)


def variant(model_dir: Path, into: Path, *, labels: int | None = None, layers: int | None = None) -> Path:
    """A copy of the model with a fresh classifier of `labels` labels, or `layers` blocks (repeating its own):
    only the work is measured, not what the copy predicts."""
    model = GazeForSequenceClassification.from_pretrained(model_dir)
    if labels is not None:
        model.config.id2label = {i: f"label-{i}" for i in range(labels)}
        model.config.label2id = {name: i for i, name in model.config.id2label.items()}
        model.classifier = torch.nn.Linear(model.config.hidden_size, labels)
    if layers is not None:
        blocks = model.gaze.layers
        model.gaze.layers = torch.nn.ModuleList(copy.deepcopy(blocks[i % len(blocks)]) for i in range(layers))
        model.config.num_hidden_layers = layers
    model.save_pretrained(into)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (model_dir / name).exists():
            (into / name).write_bytes((model_dir / name).read_bytes())
    return into


def label_rows(model_dir: Path, repeats: int, dumps) -> tuple[list[list], float]:
    """Rows (labels, measured ms, estimated ms) for 16 short texts without maps, and the per-label slope."""
    rows, points = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for count in LABEL_COUNTS:
            predictor = Predictor(variant(model_dir, Path(tmp) / str(count), labels=count))
            items = [Item(e, Options("none")) for e in predictor.encode(["a gripping , funny film"] * 16)]
            ms = cpu_ms(lambda: [dumps(p) for p in predictor.run(items)], repeats)  # noqa: B023
            estimate = sum(predictor.cost_ms(item) for item in items)
            rows.append([count, round(ms, 2), round(estimate, 2), round(estimate / ms, 2)])
            points.append((count * len(items), ms))
    slope = (points[-1][1] - points[0][1]) / (points[-1][0] - points[0][0])
    return rows, slope


def tokenizing_rows(predictor: Predictor, repeats: int) -> tuple[list[list], dict[str, float]]:
    """Rows (script, characters, measured ms, ms per character tokenized) for 16 texts, and each script's rate."""
    rng = random.Random(0)
    scripts = {
        "English": " ".join(sst2("dev")[0] * 2),
        "CJK": "".join(chr(rng.randint(0x4E00, 0x9FFF)) for _ in range(max(TEXT_CHARS))),
    }
    rows, rates = [], {}
    for script, text in scripts.items():
        for chars in TEXT_CHARS:
            texts = [text[:chars]] * 16
            ms = cpu_ms(lambda: predictor.encode(texts), repeats, time.process_time)  # noqa: B023 (Rust threads)
            tokenized = sum(min(len(t), predictor.head_chars) for t in texts)
            rows.append(
                [script, chars, round(ms, 2), f"{ms / tokenized:.2g}", round(predictor.encode_cost_ms(texts), 2)]
            )
            rates[script] = max(rates.get(script, 0.0), ms / tokenized)
    return rows, rates


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

    def measure(predictor: Predictor, mode: str, texts: int, length: int) -> None:
        encodings = predictor.encode([long_text] * texts)
        for encoding in encodings:
            encoding.truncate(length)
        items = [Item(encoding, Options(mode)) for encoding in encodings]
        ms = cpu_ms(lambda: [dumps(prediction) for prediction in predictor.run(items)], repeats)
        tokens = sum(len(e.ids) for e in encodings)
        values = sum(predictor.attention_values(len(e.ids), mode) for e in encodings)
        estimate = sum(predictor.cost_ms(item) for item in items)
        features.append([tokens, tokens * predictor.multiply_adds_per_token, values])
        measured.append(ms)
        layers = predictor.num_layers
        rows.append([layers, mode, texts, length, values, round(ms, 2), round(estimate, 2), round(estimate / ms, 2)])

    for mode in MODES:
        for texts, length in shapes:
            measure(predictor, mode, texts, length)
    with tempfile.TemporaryDirectory() as tmp:  # the work per token grows with the model's weights
        for layers in DEPTHS:
            deeper = Predictor(variant(model_dir, Path(tmp) / str(layers), layers=layers))
            for texts, length in shapes:
                measure(deeper, "none", texts, length)

    fit, *_ = np.linalg.lstsq(np.array(features, dtype=float), np.array(measured), rcond=None)
    per_token, per_multiply_add, per_value = (float(x) for x in fit)
    labels, per_label = label_rows(model_dir, repeats, dumps)
    tokenizing, per_char = tokenizing_rows(predictor, repeats)
    markdown = "\n".join(
        [
            f"Model: {model_note}; one torch thread; CPU time of `Predictor.run` + JSON per prediction (ms, "
            f"median of {repeats}).",
            "",
            table(
                ["layers", "mode", "texts", "tokens each", "values", "measured ms", "estimated ms", "est./meas."], rows
            ),
            "",
            table(
                ["coefficient", "least-squares fit here", "inference/predictor.py"],
                [
                    ["per token (ms)", f"{per_token:.3g}", f"{PER_TOKEN_MS:.3g}"],
                    [
                        "per token and weight of the blocks (ms)",
                        f"{per_multiply_add:.3g}",
                        f"{PER_MULTIPLY_ADD_MS:.3g}",
                    ],
                    ["per attention value (ms)", f"{per_value:.3g}", f"{PER_VALUE_MS:.3g}"],
                    ["per label (ms)", f"{per_label:.3g}", f"{PER_LABEL_MS:.3g}"],
                    *(
                        [f"per character tokenized, {script} (ms)", f"{rate:.3g}", f"{PER_CHAR_MS:.3g}"]
                        for script, rate in per_char.items()
                    ),
                ],
            ),
            "",
            "16 texts of 6 tokens, no maps, by the model's number of labels:",
            "",
            table(["labels", "measured ms", "estimated ms", "est./meas."], labels),
            "",
            f"Tokenizing 16 texts (`Predictor.encode`: the head of up to {predictor.head_chars:,} characters):",
            "",
            table(
                ["script", "characters each", "measured ms", "ms per character tokenized", "estimated ms"], tokenizing
            ),
        ]
    )
    data = {
        "model": model_note,
        "repeats": repeats,
        "fit_ms": {
            "per_token": per_token,
            "per_multiply_add": per_multiply_add,
            "per_value": per_value,
            "per_label": per_label,
        }
        | {f"per_char_{script}": rate for script, rate in per_char.items()},
        "constants_ms": {
            "per_token": PER_TOKEN_MS,
            "per_multiply_add": PER_MULTIPLY_ADD_MS,
            "per_value": PER_VALUE_MS,
            "per_label": PER_LABEL_MS,
            "per_char": PER_CHAR_MS,
        },
        "rows": [dict(zip(COLUMNS, row, strict=True)) for row in rows],
        "labels": [dict(zip(["labels", "ms", "estimate_ms", "ratio"], row, strict=True)) for row in labels],
        "tokenizing": [
            dict(zip(["script", "chars", "ms", "ms_per_char", "estimate_ms"], row, strict=True)) for row in tokenizing
        ],
    }
    report("request_cost", args, data, markdown)


if __name__ == "__main__":
    main()
