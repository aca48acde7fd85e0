"""How faithful each token-importance method is on SST-2 dev, and what it costs (issue 14).

Faithfulness is ERASER's (DeYoung et al. 2020), for the label the model predicts, y:
- comprehensiveness: p(y | x) − p(y | x without its top k % tokens): high when the tokens a method ranks
  first are the ones the prediction needs;
- sufficiency: p(y | x) − p(y | only its top k % tokens): low when they are enough on their own;
each averaged over the sentences and over k ∈ {1, 5, 10, 20, 50} % (AOPC). "Removing" a token drops it
([CLS] and [SEP] stay); k % of n tokens is ceil(k·n/100), so every k removes at least one. A method ranks
tokens by its score, highest first (signed attributions: most in favour of y first).

The methods: random (a seeded permutation), attention (the last layer's [CLS] row, heads averaged),
rollout, and the three attributions of `inference/predictor.py` (`TokenAttributor`), unrounded.

Cost: seconds per sentence of `Predictor.run` answering with each method, against a plain "cls"
prediction, in-process, interleaved rounds, at batch size 1 and 32 (the same for both sides).

.venv/bin/python -m benchmarks.faithfulness [--limit N]   # default: all 872 dev sentences
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from inference.attributions import IG_STEPS
from inference.contract import Options
from inference.maps import rollout
from inference.predictor import Item, Predictor

from .common import RESULTS, SHIPPED, base_parser, interleaved, median, report, sst2, table

METHODS = ("random", "attention", "rollout", "gradient_x_input", "integrated_gradients", "attention_gradient")
ATTRIBUTIONS = ("gradient_x_input", "integrated_gradients", "attention_gradient")
PERCENTS = (1, 5, 10, 20, 50)
# What answering with each method costs: the Item that asks for it (random needs only the prediction).
COST_ITEMS = {
    "random": ("none", "none"),
    "attention": ("cls", "none"),
    "rollout": ("rollout", "none"),
    **{method: ("none", method) for method in ATTRIBUTIONS},
}
BATCH = 32
# The page's default shading (service/static/app.js), compared with every other method below.
DEFAULT = "integrated_gradients"
IG_GOAL = 10  # issue 14: integrated gradients for one sentence at most this many times a cls prediction


def padded(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(ids) for ids in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, ids in enumerate(sequences):
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, : len(ids)] = 1
    return input_ids, attention_mask


def by_length(sequences: Sequence[Sequence[int]], size: int) -> Iterator[list[int]]:
    """Indices in batches of `size`, sorted by length (little padding)."""
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    for start in range(0, len(order), size):
        yield order[start : start + size]


@torch.inference_mode()
def probabilities(predictor: Predictor, sequences: list[list[int]], labels: list[int]) -> np.ndarray:
    """p(labels[i] | sequences[i]) for every i."""
    result = np.zeros(len(sequences))
    for batch in by_length(sequences, 4 * BATCH):
        input_ids, attention_mask = padded([sequences[i] for i in batch], predictor.pad_id)
        probs = predictor.model(input_ids=input_ids, attention_mask=attention_mask).logits.float().softmax(-1)
        result[batch] = probs[torch.arange(len(batch)), torch.tensor([labels[i] for i in batch])].numpy()
    return result


def importance(predictor: Predictor, method: str, sequences: list[list[int]], labels: list[int], seed: int):
    """Each sentence's scores (one per token, padding cut off), by `method`."""
    generator = torch.Generator().manual_seed(seed)
    scores: list[list[float]] = [[] for _ in sequences]
    for batch in by_length(sequences, BATCH):
        input_ids, attention_mask = padded([sequences[i] for i in batch], predictor.pad_id)
        if method == "random":
            values = torch.rand(input_ids.shape, generator=generator)
        elif method in ("attention", "rollout"):
            with torch.inference_mode():
                maps = predictor.model(input_ids=input_ids, attention_mask=attention_mask, output_attentions=True)
            values = maps.attentions[-1][:, :, 0, :].mean(1) if method == "attention" else rollout(maps.attentions)
        else:
            targets = [labels[i] for i in batch]
            values = predictor.attributor.scores(method, input_ids, attention_mask, targets)
        for row, i in enumerate(batch):
            scores[i] = values[row, : len(sequences[i])].tolist()
    return scores


def top_positions(scores: list[float], percent: int) -> set[int]:
    """The inner positions (not [CLS], not [SEP]) of the ceil(k %) highest scores; ties: earlier first."""
    inner = range(1, len(scores) - 1)
    count = math.ceil(percent * len(inner) / 100)
    return set(sorted(inner, key=lambda j: -scores[j])[:count])


def erased(ids: list[int], positions: set[int], keep: bool) -> list[int]:
    """[CLS] + the inner tokens at `positions` (keep) or all but those (not keep) + [SEP]."""
    inner = [ids[j] for j in range(1, len(ids) - 1) if (j in positions) == keep]
    return [ids[0], *inner, ids[-1]]


def faithfulness(predictor, sequences, labels, full, method, seed) -> dict:
    """Per-k means and per-sentence AOPC of comprehensiveness and sufficiency for one method."""
    scores = importance(predictor, method, sequences, labels, seed)
    variants, variant_labels = [], []
    for ids, label, sentence_scores in zip(sequences, labels, scores, strict=True):
        for percent in PERCENTS:
            top = top_positions(sentence_scores, percent)
            variants += [erased(ids, top, keep=False), erased(ids, top, keep=True)]
            variant_labels += [label, label]
    probs = probabilities(predictor, variants, variant_labels).reshape(len(sequences), len(PERCENTS), 2)
    drop = full[:, None, None] - probs  # (sentences, k, [without top, only top])
    comprehensiveness, sufficiency = drop[:, :, 0], drop[:, :, 1]
    return {
        "comprehensiveness_by_k": comprehensiveness.mean(0).round(4).tolist(),
        "sufficiency_by_k": sufficiency.mean(0).round(4).tolist(),
        "comprehensiveness": round(float(comprehensiveness.mean()), 4),
        "sufficiency": round(float(sufficiency.mean()), 4),
        "_per_sentence": (comprehensiveness.mean(1), sufficiency.mean(1)),
    }


def paired_interval(a: np.ndarray, b: np.ndarray, seed: int, draws: int = 2000) -> list[float]:
    """95 % bootstrap interval of mean(a − b) over sentences (a paired comparison)."""
    rng = np.random.default_rng(seed)
    diff = a - b
    means = diff[rng.integers(0, len(diff), size=(draws, len(diff)))].mean(1)
    return [round(float(np.percentile(means, 2.5)), 4), round(float(np.percentile(means, 97.5)), 4)]


def costs(predictor: Predictor, texts: list[str], rounds: int) -> dict[str, dict[str, float]]:
    """Seconds per sentence for each method and plain "cls", at batch 1 and BATCH; interleaved rounds."""
    encodings = predictor.encode(texts[:BATCH])
    contenders = {}
    for name, (mode, attribution) in {"cls": ("cls", "none"), **COST_ITEMS}.items():
        items = [Item(encoding, Options(mode, attribution)) for encoding in encodings]
        contenders[f"{name}@1"] = lambda items=items: [predictor.run([item]) for item in items]
        contenders[f"{name}@{BATCH}"] = lambda items=items: predictor.run(items)
    times = interleaved(contenders, rounds)
    per_sentence = {name: median(values) / len(encodings) for name, values in times.items()}
    result = {}
    for name in ("cls", *METHODS):
        result[name] = {f"seconds_batch_{size}": round(per_sentence[f"{name}@{size}"], 6) for size in (1, BATCH)} | {
            f"vs_cls_batch_{size}": round(per_sentence[f"{name}@{size}"] / per_sentence[f"cls@{size}"], 2)
            for size in (1, BATCH)
        }
    return result


def plot(results: dict[str, dict], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    panels = [
        (left, "comprehensiveness", "higher", "removed", "p(y|x) − p(y|x without them)"),
        (right, "sufficiency", "lower", "kept alone", "p(y|x) − p(y|only them)"),
    ]
    for axis, measure, better, what, ylabel in panels:
        for method in METHODS:
            axis.plot(PERCENTS, results[method][f"{measure}_by_k"], marker="o", label=method)
        title, xlabel = f"{measure.capitalize()} ({better} is better)", f"top k % of tokens {what}"
        axis.set(title=title, xlabel=xlabel, ylabel=ylabel, xscale="log", xticks=PERCENTS, xticklabels=PERCENTS)
    left.legend(fontsize=8)
    figure.suptitle("Gaze on SST-2 dev: removing the tokens each method ranks first")
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> None:
    parser = base_parser(__doc__.split("\n")[0])
    parser.add_argument("--limit", type=int, help="the first N dev sentences (default: all 872)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: a service worker's)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds of the cost measurement")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    predictor = Predictor(args.model or SHIPPED)
    texts, _ = sst2("dev")
    texts = texts[: 20 if args.quick else args.limit]

    sequences = [encoding.ids for encoding in predictor.encode(texts)]
    predictions = predictor.predict(texts, "none")
    labels = [predictor.labels.index(p["label"]) for p in predictions]
    full = probabilities(predictor, sequences, labels)
    results = {}
    for method in METHODS:
        print(f"  faithfulness: {method}", flush=True)
        results[method] = faithfulness(predictor, sequences, labels, full, method, args.seed)
    comparisons = {}
    for other in METHODS:
        for metric, index in (("comprehensiveness", 0), ("sufficiency", 1)):
            if other != DEFAULT:
                ours, theirs = results[DEFAULT]["_per_sentence"][index], results[other]["_per_sentence"][index]
                comparisons[f"{DEFAULT} − {other}, {metric}"] = paired_interval(ours, theirs, args.seed)
    for method in METHODS:
        del results[method]["_per_sentence"]
    print("  cost", flush=True)
    cost = costs(predictor, texts, 1 if args.quick else args.rounds)

    rows = [
        [
            method,
            results[method]["comprehensiveness"],
            results[method]["sufficiency"],
            cost[method][f"vs_cls_batch_{BATCH}"],
            cost[method]["vs_cls_batch_1"],
            f"{1000 * cost[method]['seconds_batch_1']:.1f}",
        ]
        for method in METHODS
    ]
    headers = [
        "method",
        "comprehensiveness ↑",
        "sufficiency ↓",
        f"cost vs cls, batch {BATCH}",
        "cost vs cls, batch 1",
        "ms per sentence, batch 1",
    ]
    ig_ratio = cost["integrated_gradients"]["vs_cls_batch_1"]
    markdown = table(headers, rows) + (
        f"\n\nAOPC over k ∈ {{{', '.join(map(str, PERCENTS))}}} %, {len(texts)} SST-2 dev sentences, the predicted "
        f"label; integrated gradients: {IG_STEPS} steps. A plain cls prediction: "
        f"{1000 * cost['cls']['seconds_batch_1']:.1f} ms per sentence at batch 1, "
        f"{1000 * cost['cls'][f'seconds_batch_{BATCH}']:.2f} at batch {BATCH}. Goal: integrated gradients for one "
        f"sentence ≤ {IG_GOAL}× a cls prediction (batch 1): {ig_ratio:.1f}×, "
        f"{'met' if ig_ratio <= IG_GOAL else '**not met**'}.\n\n"
        + table(
            ["paired difference (95 % bootstrap interval)", "interval"],
            [[name, f"[{low}, {high}]"] for name, (low, high) in comparisons.items()],
        )
    )
    if not (args.quick or args.no_write):
        plot(results, RESULTS / "faithfulness.png")
    settings = {
        "sentences": len(texts),
        "percents": PERCENTS,
        "ig_steps": IG_STEPS,
        "seed": args.seed,
        "batch": BATCH,
        "rounds": args.rounds,
        "model": str(args.model or SHIPPED),
    }
    report(
        "faithfulness",
        args,
        {"settings": settings, "faithfulness": results, "cost": cost, "default_vs_others": comparisons},
        markdown,
    )


if __name__ == "__main__":
    main()
