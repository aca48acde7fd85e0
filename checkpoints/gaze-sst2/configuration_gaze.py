"""Configuration of the Gaze encoder.

Attribute names follow BERT's so that tools written for BERT-like configs
(`hidden_size`, `num_attention_heads`, ...) read a Gaze config unchanged. Four switches let the
same modules hold BERT, DistilBERT and RoBERTa weights exactly (`training.import_hf`); their
defaults are Gaze's own architecture, which every folder saved before them has.
"""

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

# Largest sizes a config may ask for: far beyond any model worth training or serving here (the shipped ones
# have 4 layers, BERT-large 24), small enough that a typo or a hostile config.json cannot make a process
# allocate memory for minutes until it is killed.
SIZE_LIMITS = {"num_hidden_layers": 64, "hidden_size": 4096, "intermediate_size": 16384, "vocab_size": 1_000_000}
# Labels a classifier may have. Every answer carries a score per label (a 10^6-label model answered 15 MB per
# text) and training evaluates them all; 10,000 is far beyond the tasks Gaze is for.
MAX_LABELS = 10_000

CHOICES = {"norm_placement": ("pre", "post"), "classifier_activation": ("tanh", "relu")}


@strict
class GazeConfig(PreTrainedConfig):
    model_type = "gaze"

    vocab_size: int = 8192
    hidden_size: int = 256
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    intermediate_size: int = 1024
    max_position_embeddings: int = 512
    hidden_dropout_prob: float | int = 0.1
    attention_probs_dropout_prob: float | int = 0.1
    classifier_dropout: float | int | None = None
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    unk_token_id: int = 1
    cls_token_id: int = 2
    sep_token_id: int = 3
    mask_token_id: int = 4
    tie_word_embeddings: bool = True
    # "pre": x + f(LN(x)) with a final LayerNorm (Gaze's own); "post": LN(x + f(x)) (the BERT family)
    norm_placement: str = "pre"
    type_vocab_size: int = 0  # token-type embeddings (BERT: 2: a pair's second text is type 1); default type 0
    position_offset: int = 0  # the first token's position id (RoBERTa: padding_idx + 1 = 2)
    classifier_activation: str = "tanh"  # after pre_classifier: tanh (BERT's pooler, RoBERTa) or relu (DistilBERT)

    @classmethod
    def get_config_dict(cls, pretrained_model_name_or_path, **kwargs) -> tuple[dict, dict]:
        """Refuse folders without a config.json or with another model's config.

        transformers reads a missing config.json as an empty dict (a default GazeConfig follows)
        and a BERT config into a Gaze model with only a warning; both would silently give a model
        with default labels or random weights.
        """
        config_dict, kwargs = super().get_config_dict(pretrained_model_name_or_path, **kwargs)
        model_type = config_dict.get("model_type")
        if not config_dict:
            raise OSError(f"{pretrained_model_name_or_path}: no config.json found; it is not a saved model folder")
        if model_type != cls.model_type:
            raise ValueError(
                f"{pretrained_model_name_or_path}: its config.json is for model type {model_type!r}, "
                f"not {cls.model_type!r}; load it with the matching class or an Auto class"
            )
        return config_dict, kwargs

    def validate_architecture(self) -> None:
        super().validate_architecture()
        for name, limit in SIZE_LIMITS.items():
            if not 1 <= getattr(self, name) <= limit:
                raise ValueError(f"{name}={getattr(self, name)} is out of range (1 to {limit:,})")
        if self.num_labels > MAX_LABELS:
            raise ValueError(f"num_labels={self.num_labels:,} is out of range (1 to {MAX_LABELS:,})")
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r}; expected one of {', '.join(allowed)}")
        if not 0 <= self.type_vocab_size <= 16 or not 0 <= self.position_offset < self.max_position_embeddings:
            raise ValueError(
                f"type_vocab_size={self.type_vocab_size} (0 to 16) or position_offset={self.position_offset} "
                f"(0 to max_position_embeddings - 1) is out of range"
            )
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be a multiple of "
                f"num_attention_heads ({self.num_attention_heads})"
            )

    # Stock configs refuse `output_attentions=True` unless attention is "eager", because fused
    # kernels cannot return weights. Gaze computes the weights explicitly whenever they are asked
    # for, under every attention implementation, so the flag is always allowed.
    @property
    def output_attentions(self) -> bool:
        return self._output_attentions

    @output_attentions.setter
    def output_attentions(self, value: bool) -> None:
        self._output_attentions = value

    def validate_output_attentions(self) -> None:
        pass
