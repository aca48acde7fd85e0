"""Benchmark 1: end-to-end in-process classification of the SST-2 dev set (872 sentences).

Ours: `Predictor.predict(texts, "cls")` (tokenize, bucket by length, forward with maps, slice the
[CLS] rows, round, to Python lists) vs the HF `pipeline("text-classification")` on a
`BertForSequenceClassification` of the same size and tokenizer (which returns no maps), batch 32
for both. The levers are measured as variants of ours in the same interleaved rounds.

    python -m benchmarks.classify_e2e            # full run, writes results/classify_e2e.json
    python -m benchmarks.classify_e2e --quick    # 96 sentences, 2 rounds: checks the script
"""

from __future__ import annotations

import contextlib

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline
from transformers.utils import logging as hf_logging

from benchmarks.common import (
    base_parser,
    bert_peer_dir,
    goal,
    goals_table,
    interleaved,
    median,
    our_model,
    report,
    sst2,
    table,
)
from benchmarks.levers import InputOrderPredictor, PadTo, cls_row_attention, quantize_int8, threads
from inference.predictor import Predictor

BATCH = 32


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    hf_logging.set_verbosity_error()
    texts, gold = sst2("dev")
    rounds = args.rounds
    if args.quick:
        texts, gold, rounds = texts[:96], gold[:96], 2
    folder, model_note = our_model(args.model)

    def predictor(cls=Predictor, precision="fp32"):
        return cls(folder, max_batch_size=BATCH, precision=precision)

    ours = predictor()
    ours_bf16 = predictor(precision="bf16")
    no_bucketing = predictor(InputOrderPredictor)
    padded = predictor()
    padded.model = PadTo(padded.model, padded.max_length, padded.pad_id)
    cls_row = predictor()
    cls_row_attention(cls_row.model)
    cls_row_bf16 = predictor(precision="bf16")  # the Predictor sets autocast itself: an outer one is overridden
    cls_row_attention(cls_row_bf16.model)
    int8 = predictor()
    int8.model = quantize_int8(int8.model)

    peer_dir = bert_peer_dir(folder)
    peer_model = AutoModelForSequenceClassification.from_pretrained(peer_dir).eval()
    peer = pipeline(
        "text-classification", model=peer_model, tokenizer=AutoTokenizer.from_pretrained(peer_dir), device="cpu"
    )

    def run(p, mode="cls", context=contextlib.nullcontext):
        def call():
            with context():
                return p.predict(texts, mode)

        return call

    contenders = {
        "HF pipeline, BERT same size (no maps)": lambda: peer(texts, batch_size=BATCH, truncation=True),
        "ours, cls maps (as shipped)": run(ours),
        "ours, no maps (mode none: fused attention)": run(ours, "none"),
        "ours, cls, no length bucketing": run(no_bucketing),
        "ours, cls, no dynamic padding (pad to max)": run(padded),
        "ours, cls, only the [CLS] rows computed (proposed)": run(cls_row),
        "ours, cls, bf16 (GAZE_PRECISION=bf16)": run(ours_bf16),
        "ours, cls, int8 dynamic quantization": run(int8),
        "ours, cls, 1 torch thread": run(ours, context=lambda: threads(1)),
        "ours, cls, [CLS] rows only + bf16": run(cls_row_bf16),
    }
    times = interleaved(contenders, rounds=rounds, warmup=1)

    # Agreement of each variant with fp32 (labels on the dev set; largest difference in a map value).
    reference = ours.predict(texts, "cls")
    outputs = {"bf16": ours_bf16.predict(texts, "cls"), "cls-row + bf16": cls_row_bf16.predict(texts, "cls")}
    outputs |= {"int8": int8.predict(texts, "cls"), "cls-row": cls_row.predict(texts, "cls")}
    outputs |= {"no bucketing": no_bucketing.predict(texts, "cls"), "pad to max": padded.predict(texts, "cls")}
    agreement = {name: compare(reference, out) for name, out in outputs.items()}
    accuracy = {
        "fp32": acc(reference, gold, ours.labels),
        **{name: acc(out, gold, ours.labels) for name, out in outputs.items()},
    }

    peer_s = median(times["HF pipeline, BERT same size (no maps)"])
    ours_s = median(times["ours, cls maps (as shipped)"])
    rows = []
    for name, values in times.items():
        s = median(values)
        rows.append([name, f"{s * 1000:.0f}", f"{len(texts) / s:,.0f}", f"{peer_s / s:.2f}×", f"{ours_s / s:.2f}×"])
    headers = ["contender", "ms per pass (median)", "sentences/s", "vs HF pipeline", "vs ours as shipped"]
    agree_rows = [
        [name, f"{a['label_agreement'] * 100:.2f} %", a["max_abs_map_diff"], f"{accuracy[name] * 100:.1f} %"]
        for name, a in agreement.items()
    ]
    bf16_s = median(times["ours, cls, bf16 (GAZE_PRECISION=bf16)"])
    goals = [
        goal("ours (cls maps) vs HF pipeline, end to end", peer_s / ours_s, 2.0),
        goal("the same with GAZE_PRECISION=bf16", peer_s / bf16_s, 2.0),
    ]
    markdown = "\n\n".join(
        [
            f"### End-to-end classification, SST-2 dev ({len(texts)} sentences, batch {BATCH}, "
            f"median of {rounds} interleaved rounds)",
            f"Model: {model_note}.",
            table(headers, rows),
            f"Agreement with fp32 ours (accuracy fp32: {accuracy['fp32'] * 100:.1f} %):",
            table(["variant", "same label as fp32", "max |Δ| in a map value", "accuracy"], agree_rows),
            goals_table(goals),
        ]
    )
    report(
        "classify_e2e",
        args,
        {
            "model": model_note,
            "sentences": len(texts),
            "batch_size": BATCH,
            "rounds": rounds,
            "seconds": times,
            "median_s": {name: median(v) for name, v in times.items()},
            "sentences_per_s": {name: len(texts) / median(v) for name, v in times.items()},
            "agreement_with_fp32": agreement,
            "accuracy": accuracy,
            "goals": goals,
        },
        markdown,
    )


def compare(reference: list[dict], other: list[dict]) -> dict:
    same = sum(r["label"] == o["label"] for r, o in zip(reference, other, strict=True)) / len(reference)
    diff = 0.0
    for r, o in zip(reference, other, strict=True):
        a, b = torch.tensor(r["attention"]["values"]), torch.tensor(o["attention"]["values"])
        diff = max(diff, (a - b).abs().max().item())
    return {"label_agreement": same, "max_abs_map_diff": round(diff, 4)}


def acc(predictions: list[dict], gold: list[int], labels: list[str]) -> float:
    return sum(labels.index(p["label"]) == g for p, g in zip(predictions, gold, strict=True)) / len(gold)


if __name__ == "__main__":
    main()
