"""The classification metrics that training reports and `training.export` measures again after export.

Evaluation streams: `DecisionCounts` adds a batch's decisions to per-class counts and keeps nothing
else, so a split costs memory per class, not per text × class (100,000 texts × 10,000 labels of
kept logits would be 4 GB).
"""

from __future__ import annotations

import torch


class DecisionCounts:
    """Running per-class counts of a split's decisions: true positives, errors (false positives + false
    negatives), texts, texts with every class right, and classes predicted."""

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.true_pos = torch.zeros(num_classes, dtype=torch.long)
        self.errors = torch.zeros(num_classes, dtype=torch.long)
        self.texts = self.exact = self.predicted = 0

    def add(self, predicted: torch.Tensor, expected: torch.Tensor) -> None:
        """Add a batch: (texts, classes) booleans, or (texts,) class ids of single-label decisions."""
        if predicted.dim() == 1:
            predicted, expected = (self._one_hot(ids) for ids in (predicted, expected))
        self.true_pos += (predicted & expected).sum(0)
        self.errors += (predicted ^ expected).sum(0)
        self.texts += len(predicted)
        self.exact += (predicted == expected).all(-1).sum().item()
        self.predicted += predicted.sum().item()

    def _one_hot(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.one_hot(ids.long(), self.num_classes).bool()

    def f1(self) -> tuple[float, float]:
        """(micro-F1, macro-F1). Micro counts every decision together; macro averages the classes that occur
        in the labels or the predictions (as scikit-learn). No positives at all: 0."""
        denominators = 2 * self.true_pos + self.errors
        micro = 2 * self.true_pos.sum().item() / denominators.sum().item() if denominators.sum() else 0.0
        occurring = denominators > 0
        macro = (2 * self.true_pos[occurring] / denominators[occurring]).mean().item() if occurring.any() else 0.0
        return micro, macro

    def single_label(self) -> dict[str, float]:
        return {"accuracy": self.exact / max(self.texts, 1), "macro_f1": self.f1()[1]}

    def multi_label(self) -> dict[str, float]:
        """micro- and macro-F1, subset accuracy (every label of a text right) and the labels predicted per
        text (0: the model says nothing)."""
        micro, macro = self.f1()
        return {
            "micro_f1": micro,
            "macro_f1": macro,
            "subset_accuracy": self.exact / max(self.texts, 1),
            "predicted_labels_per_text": self.predicted / max(self.texts, 1),
        }


def counted(predicted: torch.Tensor, expected: torch.Tensor, num_classes: int | None = None) -> DecisionCounts:
    """The counts of one whole set of decisions (booleans, or class ids with `num_classes` or the largest)."""
    if num_classes is None:
        num_classes = predicted.shape[-1] if predicted.dim() == 2 else int(torch.cat([predicted, expected]).max()) + 1
    counts = DecisionCounts(num_classes)
    counts.add(predicted, expected)
    return counts


def macro_f1(predictions: torch.Tensor, labels: torch.Tensor) -> float:
    """F1 of class ids, averaged over the classes that occur in the labels or the predictions."""
    return counted(predictions, labels).f1()[1]


def multi_label_metrics(predicted: torch.Tensor, expected: torch.Tensor) -> dict[str, float]:
    """`DecisionCounts.multi_label` of (texts, classes) boolean tensors."""
    return counted(predicted, expected).multi_label()


def multi_label_f1(predicted: torch.Tensor, expected: torch.Tensor) -> tuple[float, float]:
    """(micro-F1, macro-F1) of (texts, classes) boolean tensors."""
    return counted(predicted, expected).f1()
