"""Variants of the prediction core used to measure what each speed lever is worth.

They wrap or patch a `Predictor` from the outside (inference/predictor.py and the encoder are not changed):

- `InputOrderPredictor`: no length bucketing; batches of 32 in input order, each still padded only
  to its own longest text (what the HF pipeline does);
- `PadTo`: no dynamic padding; every batch padded to the model's max positions;
- `cls_row_attention`: the encoder computes only the [CLS] query row of each attention map (fused
  attention for the context, one extra row of QKᵀ for the weights) instead of the full T×T maps.
  This is the change proposed to the model owner for the "cls" mode (see benchmarks/README.md);
- `quantize_int8`: dynamic int8 quantization of every Linear;
- bf16 autocast and thread counts are applied around the call by the benchmarks themselves.
"""

from __future__ import annotations

import math
import types
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

from inference.predictor import Predictor


class InputOrderPredictor(Predictor):
    """Buckets in input order (no sorting by length); each is still padded to its own longest text.

    Unsorted, the core's `max_batch_tokens` cut sees only the newcomer's length; at 32 texts of at most
    128 tokens (4,096 < 8,192) it never cuts, so batches are cut at `max_batch_size` alone.
    """

    def _order(self, items):
        return list(range(len(items)))


class PadTo(nn.Module):
    """Pads every batch to `width` tokens before the model (as a fixed-shape server would), and cuts
    the attention maps back to the batch's own width so that the core sees what it expects."""

    def __init__(self, model: nn.Module, width: int, pad_id: int):
        super().__init__()
        self.model = model
        self.width = width
        self.pad_id = pad_id
        self.config = model.config

    def forward(self, input_ids, attention_mask, output_attentions=False):
        extra = self.width - input_ids.shape[1]
        own = input_ids.shape[1]
        if extra > 0:
            input_ids = F.pad(input_ids, (0, extra), value=self.pad_id)
            attention_mask = F.pad(attention_mask, (0, extra), value=0)
        output = self.model(input_ids=input_ids, attention_mask=attention_mask, output_attentions=output_attentions)
        attentions = None
        if output.attentions is not None:
            attentions = tuple(a[..., :own, :own] for a in output.attentions)
        return SimpleNamespace(logits=output.logits, attentions=attentions)


def _cls_row_forward(self, hidden, key_mask, output_attentions=False):
    """GazeSelfAttention.forward computing only the [CLS] row of the weights (inference only)."""
    q = self.split_heads(self.query(hidden))
    k = self.split_heads(self.key(hidden))
    v = self.split_heads(self.value(hidden))
    context = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask)
    weights = None
    if output_attentions:
        scores = (q[:, :, :1] @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)  # (batch, heads, 1, seq)
        scores = scores.masked_fill(~key_mask, torch.finfo(scores.dtype).min)
        weights = scores.softmax(dim=-1)
    batch, _, seq, _ = context.shape
    context = context.transpose(1, 2).reshape(batch, seq, self.num_heads * self.head_dim)
    return self.output(context), weights


def cls_row_attention(model: nn.Module) -> nn.Module:
    """Patch every Gaze attention layer of `model` in place to return (batch, heads, 1, seq) maps.

    Only the "cls" mode of the core reads these correctly (it slices row 0); "last", "all" and
    "rollout" need the full maps. Inference only (no dropout).
    """
    from model.modeling_gaze import GazeSelfAttention

    patched = 0
    for module in model.modules():
        if isinstance(module, GazeSelfAttention):
            module.forward = types.MethodType(_cls_row_forward, module)
            patched += 1
    if not patched:
        raise ValueError("no GazeSelfAttention layer to patch")
    return model


def quantize_int8(model: nn.Module) -> nn.Module:
    import warnings

    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the eager quantization API is deprecated in favour of torchao
        return quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)


class threads:
    """Context manager: torch intra-op threads set to `n`, restored afterwards."""

    def __init__(self, n: int):
        self.n = n

    def __enter__(self):
        self.before = torch.get_num_threads()
        torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        torch.set_num_threads(self.before)
