"""Token attributions: one score per token for one label, from gradients (a second pass, outside inference mode)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from captum.attr import LayerGradientXActivation, LayerIntegratedGradients
from transformers import PreTrainedTokenizerFast

from model import GazeForSequenceClassification

from .contract import ATTRIBUTIONS

IG_STEPS = 20
# Forward and backward passes each method runs per text (`cost_ms` counts them).
ATTRIBUTION_PASSES = {"none": 0, "gradient_x_input": 1, "attention_gradient": 1, "integrated_gradients": IG_STEPS}


class TokenAttributor:
    """One score per token: how much it moves the target label's log-odds, log p(target) − log p(not target).

    - gradient_x_input: the gradient times the token embedding, summed over the hidden axis (captum's
      LayerGradientXActivation on the word embeddings): one forward and backward pass;
    - integrated_gradients: the same, integrated along the straight line from a baseline whose tokens are
      all [PAD] ([CLS] and [SEP] kept, positions as in the text) to the text, in `IG_STEPS` steps (captum's
      LayerIntegratedGradients, Gauss-Legendre); the values sum to about the log-odds of the text minus
      those of the baseline (completeness; captum reports the gap as the convergence delta);
    - attention_gradient: Chefer et al. 2021 ("Generic attention-model explainability"): per layer
      Ā = mean over heads of (∇A ⊙ A)⁺, R ← R + Ā·R from R = I, the [CLS] row of R less the identity.

    Log-odds, not the probability or its log: their gradients vanish on a confident prediction (the
    shipped model's p ≈ 0.99 left gradient × input at 1e-4, zero once rounded), the log-odds' do not. They run
    in float32, with gradients enabled, whatever the predictor's precision; the caller cuts off padding.
    A model needs two labels or more (one label has no odds).
    """

    def __init__(self, model: GazeForSequenceClassification, tokenizer: PreTrainedTokenizerFast):
        self.model = model
        self.pad_id = tokenizer.pad_token_id or 0
        self.kept_ids = torch.tensor([tokenizer.cls_token_id, tokenizer.sep_token_id])  # kept in the IG baseline
        embeddings = model.get_input_embeddings()
        self._gradient_x_input = LayerGradientXActivation(self.log_odds, embeddings)
        self._integrated_gradients = LayerIntegratedGradients(self.log_odds, embeddings)

    def log_odds(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(batch, labels): each label's log-odds, z_j − logsumexp of the other logits."""
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        logits = logits.logits.float()
        return log_odds(logits)

    def baseline(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Integrated gradients' starting point: every token [PAD] except [CLS] and [SEP]."""
        return torch.where(torch.isin(input_ids, self.kept_ids.to(input_ids.device)), input_ids, self.pad_id)

    def scores(
        self,
        method: str,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        targets: Sequence[int],
        max_batch_tokens: int = 8192,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(batch, seq) float32 scores, unrounded; `token_type_ids` (a pair's segments) may be None (all 0);
        `max_batch_tokens` bounds one pass of integrated gradients."""
        target = torch.tensor(targets, dtype=torch.long, device=input_ids.device)
        with torch.enable_grad(), torch.autocast(input_ids.device.type, enabled=False):
            if method == "gradient_x_input":
                per_dim = self._gradient_x_input.attribute(
                    input_ids, target=target, additional_forward_args=(attention_mask, token_type_ids)
                )
            elif method == "integrated_gradients":
                rows_per_pass = max(2 * len(targets), max_batch_tokens // input_ids.shape[1])
                per_dim = self._integrated_gradients.attribute(
                    input_ids,
                    baselines=self.baseline(input_ids),
                    target=target,
                    additional_forward_args=(attention_mask, token_type_ids),
                    n_steps=IG_STEPS,
                    internal_batch_size=rows_per_pass,
                )
            elif method == "attention_gradient":
                return self._attention_gradient(input_ids, attention_mask, token_type_ids, target)
            else:
                raise ValueError(f"unknown attribution {method!r}; expected one of {', '.join(ATTRIBUTIONS[1:])}")
        return per_dim.detach().float().sum(dim=-1)

    def _attention_gradient(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None,
        target: torch.Tensor,
    ) -> torch.Tensor:
        output = self.model(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, output_attentions=True
        )
        # Rows are independent, so the gradient of the sum gives every row its own target's gradient.
        chosen = log_odds(output.logits.float()).gather(1, target[:, None]).sum()
        gradients = torch.autograd.grad(chosen, output.attentions)
        identity = torch.eye(input_ids.shape[1], device=input_ids.device)
        relevance = identity.expand(len(target), *identity.shape)
        for weights, gradient in zip(output.attentions, gradients, strict=True):
            mixed = (gradient * weights).clamp(min=0).mean(dim=1)  # (batch, seq, seq)
            relevance = relevance + torch.bmm(mixed, relevance)
        return (relevance[:, 0, :] - identity[0]).detach()


def log_odds(logits: torch.Tensor) -> torch.Tensor:
    """(batch, labels) logits → each label's log-odds: z_j − logsumexp of the other labels' logits."""
    others = torch.eye(logits.shape[-1], dtype=torch.bool, device=logits.device)
    return logits - logits.unsqueeze(1).masked_fill(others, -torch.inf).logsumexp(dim=-1)
