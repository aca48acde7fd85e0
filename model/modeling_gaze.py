"""The Gaze encoder: a small BERT-like transformer that can always show its attention.

Read top-down: embeddings → self-attention → feed-forward → block → encoder → task heads.

Attention has two paths. The explicit one computes softmax(QKᵀ/√d) itself and returns those
weights; the fused one calls `torch.nn.functional.scaled_dot_product_attention`, which is faster
but cannot return weights. The explicit path runs whenever weights are requested (or the model was
loaded with `attn_implementation="eager"`), so `output_attentions=True` returns real maps under
every attention implementation. Both paths give the same outputs.

Gaze's own blocks are pre-LayerNorm (x + f(LN(x))), with a final LayerNorm: it trains stably at the
high learning rates that short, from-scratch pretraining budgets need (Geiping & Goldstein 2022).
`norm_placement="post"` gives BERT's LN(x + f(x)) instead, so that published BERT-family weights
(`training.import_hf`) run here unchanged, with the same outputs and the same attention maps.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn import BCEWithLogitsLoss, CrossEntropyLoss, MSELoss
from transformers import PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput, MaskedLMOutput, SequenceClassifierOutput
from transformers.utils.generic import can_return_tuple

from .configuration_gaze import GazeConfig


class GazeEmbeddings(nn.Module):
    """Token embedding + learned position embedding (+ token type embedding, if the config has types: BERT's
    segment A = 0 and B = 1 of a text pair), then LayerNorm and dropout."""

    def __init__(self, config: GazeConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        if config.type_vocab_size:
            self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.position_offset = config.position_offset
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        seq_len = input_ids.shape[1]
        usable = self.position_embeddings.num_embeddings - self.position_offset
        if seq_len > usable:
            raise ValueError(f"sequence length {seq_len} exceeds the model's {usable} positions; truncate the input")
        # Right-padded batches: every real token's position is its index (RoBERTa: plus padding_idx + 1).
        positions = torch.arange(self.position_offset, self.position_offset + seq_len, device=input_ids.device)
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions)
        if hasattr(self, "token_type_embeddings"):
            if token_type_ids is None:  # one text, one segment: type 0 everywhere
                x = x + self.token_type_embeddings.weight[0]
            else:
                x = x + self.token_type_embeddings(token_type_ids)
        elif token_type_ids is not None and token_type_ids.any():
            raise ValueError("token_type_ids given, but this model has no token types (type_vocab_size 0)")
        return self.dropout(self.LayerNorm(x))


class GazeSelfAttention(nn.Module):
    """Multi-head scaled dot-product self-attention with separate Q, K, V projections."""

    def __init__(self, config: GazeConfig):
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.output = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout_p = config.attention_probs_dropout_prob

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, seq, hidden) → (batch, heads, seq, head_dim)."""
        batch, seq, _ = x.shape
        return x.view(batch, seq, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(
        self, hidden: torch.Tensor, key_mask: torch.Tensor, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`key_mask` is (batch, 1, 1, seq), True where a key is a real token."""
        q = self.split_heads(self.query(hidden))
        k = self.split_heads(self.key(hidden))
        v = self.split_heads(self.value(hidden))
        dropout_p = self.dropout_p if self.training else 0.0

        if output_attentions or self.config._attn_implementation == "eager":
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)
            # The most negative finite value, not -inf: exp() of it is exactly 0 for padded keys.
            scores = scores.masked_fill(~key_mask, torch.finfo(scores.dtype).min)
            weights = scores.float().softmax(dim=-1)  # float32 under bf16 autocast too: rows sum to 1
            context = F.dropout(weights, p=dropout_p, training=self.training).to(v.dtype) @ v
        else:
            weights = None
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, dropout_p=dropout_p)

        batch, _, seq, _ = context.shape
        context = context.transpose(1, 2).reshape(batch, seq, self.num_heads * self.head_dim)
        return self.output(context), (weights if output_attentions else None)


class GazeFeedForward(nn.Module):
    """Position-wise two-layer MLP with GELU."""

    def __init__(self, config: GazeConfig):
        super().__init__()
        self.up = nn.Linear(config.hidden_size, config.intermediate_size)
        self.down = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.up(x)))


class GazeBlock(nn.Module):
    """x + Attention(LN(x)), then x + FFN(LN(x)), each with dropout on the residual branch; post-norm
    (BERT): LN(x + Attention(x)), then LN(x + FFN(x))."""

    def __init__(self, config: GazeConfig):
        super().__init__()
        self.pre_norm = config.norm_placement == "pre"
        self.attention_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = GazeSelfAttention(config)
        self.ffn_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.ffn = GazeFeedForward(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(
        self, x: torch.Tensor, key_mask: torch.Tensor, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.pre_norm:
            attended, weights = self.attention(self.attention_norm(x), key_mask, output_attentions)
            x = x + self.dropout(attended)
            x = x + self.dropout(self.ffn(self.ffn_norm(x)))
        else:
            attended, weights = self.attention(x, key_mask, output_attentions)
            x = self.attention_norm(x + self.dropout(attended))
            x = self.ffn_norm(x + self.dropout(self.ffn(x)))
        return x, weights


class GazePreTrainedModel(PreTrainedModel):
    config_class = GazeConfig
    config: GazeConfig
    base_model_prefix = "gaze"
    _supports_sdpa = True
    _no_split_modules = ["GazeBlock"]

    def save_pretrained(self, save_directory, **kwargs) -> None:
        """Like `PreTrainedModel.save_pretrained`, with an `auto_map` entry for every Auto class."""
        self.config.auto_map = {
            "AutoConfig": "configuration_gaze.GazeConfig",
            "AutoModel": "modeling_gaze.GazeModel",
            "AutoModelForSequenceClassification": "modeling_gaze.GazeForSequenceClassification",
            "AutoModelForMaskedLM": "modeling_gaze.GazeForMaskedLM",
        }
        super().save_pretrained(save_directory, **kwargs)


class GazeModel(GazePreTrainedModel):
    """The bare encoder: returns the final hidden states (and, on request, every layer's attention)."""

    def __init__(self, config: GazeConfig):
        super().__init__(config)
        self.embeddings = GazeEmbeddings(config)
        self.layers = nn.ModuleList(GazeBlock(config) for _ in range(config.num_hidden_layers))
        # Post-norm blocks end in a LayerNorm already.
        pre_norm = config.norm_placement == "pre"
        self.final_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if pre_norm else nn.Identity()
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings.word_embeddings = value

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> BaseModelOutput:
        """`attentions[i]` is layer i's softmax weights, (batch, heads, seq, seq); padded keys get 0.
        `token_type_ids` (BERT's segments of a text pair; default: all 0) only for a model with token types."""
        output_attentions = self.config.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = (
            self.config.output_hidden_states if output_hidden_states is None else output_hidden_states
        )
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        key_mask = attention_mask.bool()[:, None, None, :]

        x = self.embeddings(input_ids, token_type_ids)
        hidden_states, attentions = [x], []
        for layer in self.layers:
            x, weights = layer(x, key_mask, output_attentions)
            hidden_states.append(x)
            attentions.append(weights)
        x = self.final_norm(x)
        hidden_states[-1] = x

        return BaseModelOutput(
            last_hidden_state=x,
            hidden_states=tuple(hidden_states) if output_hidden_states else None,
            attentions=tuple(attentions) if output_attentions else None,
        )


ACTIVATIONS = {"tanh": torch.tanh, "relu": F.relu}


class GazeForSequenceClassification(GazePreTrainedModel):
    """Encoder + a classifier on the first ([CLS]) token: pre_classifier, its activation (BERT's pooler
    and RoBERTa's head: tanh; DistilBERT's: ReLU), dropout, classifier. Loss follows HF heads:
    regression, single-label or multi-label, chosen by `config.problem_type` or inferred from the labels."""

    def __init__(self, config: GazeConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.gaze = GazeModel(config)
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.pre_classifier = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.activation = ACTIVATIONS[config.classifier_activation]
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> SequenceClassifierOutput:
        encoded = self.gaze(input_ids, attention_mask, output_attentions, output_hidden_states, token_type_ids)
        pooled = self.activation(self.pre_classifier(encoded.last_hidden_state[:, 0]))
        logits = self.classifier(self.dropout(pooled))
        loss = self.loss(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(
            loss=loss, logits=logits, hidden_states=encoded.hidden_states, attentions=encoded.attentions
        )

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.config.problem_type is None:
            if self.num_labels == 1:
                self.config.problem_type = "regression"
            elif labels.dtype in (torch.long, torch.int):
                self.config.problem_type = "single_label_classification"
            else:
                self.config.problem_type = "multi_label_classification"
        if self.config.problem_type == "regression":
            return MSELoss()(logits.squeeze(-1), labels.squeeze(-1).to(logits.dtype))
        if self.config.problem_type == "single_label_classification":
            return CrossEntropyLoss()(logits.view(-1, self.num_labels), labels.view(-1))
        return BCEWithLogitsLoss()(logits, labels.to(logits.dtype))


class GazeLMHead(nn.Module):
    """Dense + GELU + LayerNorm, then a vocabulary projection tied to the input embeddings."""

    def __init__(self, config: GazeConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.norm(F.gelu(self.dense(hidden))))


class GazeForMaskedLM(GazePreTrainedModel):
    """Encoder + masked-language-model head; the output projection shares the input embeddings.

    With `labels`, the vocabulary projection (the costliest layer of a small model) runs only on
    the labeled positions (labels != -100), so `logits` is (n_labeled, vocab) in that case and
    (batch, seq, vocab) otherwise.
    """

    _tied_weights_keys = {"lm_head.decoder.weight": "gaze.embeddings.word_embeddings.weight"}

    def __init__(self, config: GazeConfig):
        super().__init__(config)
        self.gaze = GazeModel(config)
        self.lm_head = GazeLMHead(config)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head.decoder

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.lm_head.decoder = new_embeddings

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> MaskedLMOutput:
        encoded = self.gaze(input_ids, attention_mask, output_attentions, output_hidden_states, token_type_ids)
        hidden = encoded.last_hidden_state
        loss = None
        if labels is None:
            logits = self.lm_head(hidden)
        else:
            labeled = labels != -100
            logits = self.lm_head(hidden[labeled])
            loss = CrossEntropyLoss()(logits.float(), labels[labeled])
        return MaskedLMOutput(
            loss=loss, logits=logits, hidden_states=encoded.hidden_states, attentions=encoded.attentions
        )


# Saved folders carry this file and an `auto_map` for every Auto class, so they load with
# `trust_remote_code=True` in a Python that cannot import this project.
GazeConfig.register_for_auto_class()
GazeModel.register_for_auto_class("AutoModel")
GazeForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")
GazeForMaskedLM.register_for_auto_class("AutoModelForMaskedLM")
