"""Attention maps out of the model's tensors: the slice each mode returns, rollout, and per-word weights."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tokenizers import Encoding

from .contract import Prediction, Word


class Maps:
    """A batch's attention tensors (one (batch, heads, seq, seq) tensor per layer) → per-text slices."""

    def __init__(self, attentions: Sequence[torch.Tensor], decimals: int):
        self.layers = attentions
        self.decimals = decimals
        self._cls: torch.Tensor | None = None
        self._rollout: torch.Tensor | None = None

    def values(self, mode: str, row: int, length: int) -> list:
        if mode == "cls":
            if self._cls is None:  # (batch, layers, heads, seq): the [CLS] query row of every map
                self._cls = self._round(torch.stack([layer[:, :, 0, :] for layer in self.layers], dim=1))
            return self._cls[row, :, :, :length].tolist()
        if mode == "last":
            return self._round(self.layers[-1][row, :, :length, :length]).tolist()
        if mode == "all":
            return self._round(torch.stack([layer[row, :, :length, :length] for layer in self.layers])).tolist()
        if mode == "rollout":
            if self._rollout is None:
                self._rollout = self._round(rollout(self.layers))
            return self._rollout[row, :length].tolist()
        raise ValueError(f"unknown attention mode {mode!r}")

    def _round(self, tensor: torch.Tensor) -> torch.Tensor:
        # float64 first: a rounded float32 prints as 0.12340000271797180 in JSON, a float64 as 0.1234.
        return tensor.cpu().double().round(decimals=self.decimals)


def rollout(attentions: Sequence[torch.Tensor]) -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema 2020) read from the [CLS] row: (batch, seq), rows sum to 1.

    Per layer: average the heads, add the identity (the residual path), renormalize the rows; then
    multiply the layers from the last down to the first. Only the [CLS] row of the product is
    needed, so it is carried as a vector: v = e_cls·Â_L·…·Â_1. Padded keys have weight 0 in every
    map, so the real tokens' values are exact whatever the padding.
    """
    vector = None
    for layer in reversed(attentions):
        mixed = layer.float().mean(dim=1)  # (batch, seq, seq)
        mixed = mixed + torch.eye(mixed.shape[-1], dtype=mixed.dtype, device=mixed.device)
        mixed = mixed / mixed.sum(dim=-1, keepdim=True)
        vector = mixed[:, 0, :] if vector is None else torch.bmm(vector.unsqueeze(1), mixed).squeeze(1)
    return vector


def token_offsets(encoding: Encoding) -> list[list[int] | None]:
    """Each token's [start, end) in the text as sent (code points); None for [CLS] and [SEP].

    `tokenizers` tracks every normalization step (lower-casing, accents, "<br />", "n't"), and `sanitize`
    replaces characters one for one, so the spans index the caller's own string.
    """
    return [
        None if special else [start, end]
        for (start, end), special in zip(encoding.offsets, encoding.special_tokens_mask, strict=True)
    ]


def token_importance(prediction: Prediction) -> list[float] | None:
    """One weight per token: the rollout itself, or the [CLS] row averaged over heads (and layers)."""
    attention = prediction["attention"]
    if attention is None:
        return None
    values, mode = attention["values"], attention["mode"]
    if mode == "rollout":
        return values
    if mode == "cls":  # [L, H, T]
        rows = [row for layer in values for row in layer]
    elif mode == "last":  # [H, T, T]
        rows = [head[0] for head in values]
    else:  # all: [L, H, T, T]
        rows = [head[0] for layer in values for head in layer]
    return [sum(column) / len(rows) for column in zip(*rows, strict=True)]


def words(
    encoding: Encoding,
    weights: Sequence[float] | None,
    attribution: Sequence[float] | None = None,
    decimals: int = 4,
) -> list[Word]:
    """The words of a text (the pre-tokenizer's: a word's WordPiece pieces together, each punctuation mark
    alone), each with its [start, end) span, its token indices and the sums of its tokens' attention `weights`
    and `attribution` (None where not asked for)."""

    def summed(values: Sequence[float] | None, tokens: list[int]) -> float | None:
        return None if values is None else round(sum(values[i] for i in tokens), decimals)

    pieces: dict[tuple[int, int], list[int]] = {}
    for index, (side, word) in enumerate(zip(encoding.sequence_ids, encoding.word_ids, strict=True)):
        if word is not None:  # [CLS] and [SEP] belong to no word; a pair's texts number their words each from 0
            pieces.setdefault((side, word), []).append(index)
    offsets = encoding.offsets
    return [
        {
            "start": offsets[tokens[0]][0],
            "end": offsets[tokens[-1]][1],
            "tokens": tokens,
            "weight": summed(weights, tokens),
            "attribution": summed(attribution, tokens),
        }
        for tokens in pieces.values()
    ]
