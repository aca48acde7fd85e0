"""The classification metrics that training reports and `training.export` measures again after export."""

from __future__ import annotations

import torch


def macro_f1(predictions: torch.Tensor, labels: torch.Tensor) -> float:
    """F1 averaged over the classes that occur in the labels or the predictions (as scikit-learn)."""
    scores = []
    for c in torch.cat([predictions, labels]).unique():
        tp = ((predictions == c) & (labels == c)).sum().item()
        fp = ((predictions == c) & (labels != c)).sum().item()
        fn = ((predictions != c) & (labels == c)).sum().item()
        scores.append(2 * tp / (2 * tp + fp + fn))
    return sum(scores) / len(scores)


def multi_label_metrics(predicted: torch.Tensor, expected: torch.Tensor) -> dict[str, float]:
    """micro- and macro-F1, subset accuracy (every label of a text right) and the labels predicted per text
    (0: the model says nothing) of (texts, classes) boolean tensors: what training and `training.export`
    report for multi-label data."""
    micro, macro = multi_label_f1(predicted, expected)
    subset_accuracy = (predicted == expected).all(-1).float().mean().item()
    per_text = predicted.sum(-1).float().mean().item()
    return {
        "micro_f1": micro,
        "macro_f1": macro,
        "subset_accuracy": subset_accuracy,
        "predicted_labels_per_text": per_text,
    }


def multi_label_f1(predicted: torch.Tensor, expected: torch.Tensor) -> tuple[float, float]:
    """(micro-F1, macro-F1) of (texts, classes) boolean tensors. Micro counts every decision together; macro
    averages the classes that occur in the labels or the predictions (as `macro_f1`). No positives at all: 0."""
    true_pos = (predicted & expected).sum(0)
    errors = (predicted ^ expected).sum(0)  # false positives + false negatives, per class
    denominators = 2 * true_pos + errors
    micro = 2 * true_pos.sum().item() / denominators.sum().item() if denominators.sum() else 0.0
    occurring = denominators > 0
    macro = (2 * true_pos[occurring] / denominators[occurring]).mean().item() if occurring.any() else 0.0
    return micro, macro
