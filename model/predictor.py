"""The prediction core: one saved Gaze folder in, labels, scores and attention maps out.

The service, the CLI (`python -m service.predict`), `training.export` and the tests all go through
`Predictor`; it lives in the model package so that none of them needs the service to predict.

Speed comes from doing only the work a request needs:
- texts are tokenized in one Rust call, sorted by length and cut into buckets, each padded only to
  its own longest text (dynamic padding), so short texts never pay for long ones;
- attention maps are computed only when the mode needs them (mode "none" takes the fused
  scaled-dot-product path), and only the slice the mode returns is copied out of the tensors
  (the [CLS] rows for "cls", one vector for "rollout");
- values are rounded (4 decimals by default) before they become Python floats, which keeps a
  "cls" response for a short sentence at a few kB;
- optionally (`precision="bf16"`) the forward pass runs under bf16 autocast.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import torch
from safetensors import safe_open
from tokenizers import Encoding, Tokenizer
from transformers import PreTrainedTokenizerFast
from transformers.utils import logging as transformers_logging

from .configuration_gaze import GazeConfig
from .modeling_gaze import GazeForSequenceClassification

transformers_logging.disable_progress_bar()

# The attention modes of the contract (README "The contract"); the one list every other module imports.
Mode = Literal["none", "cls", "last", "all", "rollout"]
MODES: tuple[str, ...] = get_args(Mode)
MAP_MODES = frozenset(MODES) - {"none"}
# bf16: autocast on CPU, ~1.6x faster where the CPU has bf16 instructions (benchmarks/README.md, 1);
# same labels on SST-2 dev, attention values within ~0.01 of fp32 (softmax itself stays fp32).
PRECISIONS = ("fp32", "bf16")
DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "checkpoints" / "gaze-sst2"

# Deeper than any encoder worth serving on a CPU (the shipped one has 4 layers, BERT-large 24); a config
# asking for more is a typo or an attack, and building it would take minutes and all the memory.
MAX_LAYERS = 128

_SURROGATES = re.compile("[\ud800-\udfff]")


class ModelLoadError(RuntimeError):
    """The model folder is missing, incomplete or corrupt. The message says which and why."""


def sanitize(text: str) -> str:
    """Replace unpaired UTF-16 surrogates (valid in JSON escapes, not in Unicode text) with U+FFFD."""
    return _SURROGATES.sub("\ufffd", text)


def check_model_folder(path: str | Path) -> Path:
    """Fail early, with one line that names the problem, unless `path` holds a servable Gaze classifier.

    Reads config.json and the safetensors header only (no weights, no model built, no code from the
    folder ever run): the folder must be a Gaze model of a sane size whose file holds every tensor its
    config describes, each of the shape the config implies, and whose labels are 0..N-1.
    `Predictor` then checks the values (no NaN or infinity) when it loads them.
    """
    path = Path(path)
    if not path.is_dir():
        raise ModelLoadError(f"model folder {path} does not exist (train it first, or name another folder)")
    missing = [name for name in ("config.json", "model.safetensors", "tokenizer.json") if not (path / name).is_file()]
    if missing:
        raise ModelLoadError(
            f"model folder {path} is incomplete: missing {', '.join(missing)} (only safetensors weights are loaded)"
        )
    try:
        raw = json.loads((path / "config.json").read_text(encoding="utf-8"))
        with safe_open(path / "model.safetensors", framework="pt") as weights:
            shapes = {name: tuple(weights.get_slice(name).get_shape()) for name in weights.keys()}  # noqa: SIM118
    except Exception as error:  # any parse error means the same thing to the operator
        raise ModelLoadError(f"model folder {path} is corrupt: {_one_line(error)}") from error
    config = _check_config(path, raw)
    _check_tensors(path, config, shapes)
    return path


def _check_config(path: Path, raw) -> GazeConfig:
    if not isinstance(raw, dict):
        raise ModelLoadError(f"model folder {path} is corrupt: config.json is not a JSON object")
    model_type = raw.get("model_type")
    if model_type != GazeConfig.model_type:
        # Never the Auto classes here: an unknown type with an auto_map would ask to run the folder's code.
        raise ModelLoadError(
            f"model folder {path} holds a model of type {model_type!r:.80} (config.json model_type), not a Gaze "
            f"model ({GazeConfig.model_type!r}); only Gaze folders are served, and code in a folder is never run"
        )
    layers = raw.get("num_hidden_layers", GazeConfig.num_hidden_layers)
    if type(layers) is not int or not 1 <= layers <= MAX_LAYERS:
        raise ModelLoadError(
            f"model folder {path} has an unreasonable config.json: num_hidden_layers={layers!r:.40}; "
            f"the limit is 1 to {MAX_LAYERS}"
        )
    try:
        config = GazeConfig.from_pretrained(path)
    except Exception as error:
        raise ModelLoadError(f"model folder {path} has an invalid config.json: {_one_line(error)}") from error
    ids = sorted(config.id2label)
    if ids != list(range(len(ids))) or not ids:
        raise ModelLoadError(
            f"model folder {path} has an invalid config.json: id2label must name every class 0 to {len(ids) - 1} "
            f"exactly once; it has {', '.join(map(str, ids)) or 'none'}"
        )
    names = [config.id2label[i] for i in ids]
    if any(not isinstance(name, str) or not name for name in names) or len(set(names)) != len(names):
        raise ModelLoadError(
            f"model folder {path} has an invalid config.json: id2label must give each class its own "
            f"non-empty name; it has {names!r:.200}"
        )
    return config


def _check_tensors(path: Path, config: GazeConfig, shapes: dict[str, tuple[int, ...]]) -> None:
    """Every tensor the config describes is in the file, with the config's shape (built on the meta
    device: shapes only, nothing allocated)."""
    with torch.device("meta"):
        skeleton = GazeForSequenceClassification(config)
    tied = set(getattr(skeleton, "all_tied_weights_keys", None) or {})
    expected = {name: tuple(t.shape) for name, t in skeleton.state_dict().items()}
    absent = sorted(name for name in expected if name not in shapes and name not in tied)
    if absent:
        raise ModelLoadError(
            f"model folder {path} is incomplete: model.safetensors lacks {len(absent)} of the {len(expected)} "
            f"tensors its config describes: {_names(absent)}"
        )
    wrong = [
        f"{name} {list(shapes[name])} (config: {list(shape)})"
        for name, shape in sorted(expected.items())
        if name in shapes and shapes[name] != shape
    ]
    if wrong:
        raise ModelLoadError(
            f"model folder {path} does not fit its config.json: {len(wrong)} tensors in model.safetensors have "
            f"another shape: {_names(wrong, 3)}"
        )


def _names(names: Sequence[str], limit: int = 5) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _one_line(error: Exception) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:500]}"


@dataclass(frozen=True)
class Item:
    """One text to classify, already tokenized, with the attention mode its caller asked for."""

    encoding: Encoding
    mode: str


class Predictor:
    """A Gaze sequence classifier loaded once from a folder (safetensors weights only)."""

    def __init__(
        self,
        path: str | Path = DEFAULT_MODEL,
        *,
        max_batch_size: int = 32,
        max_batch_tokens: int = 8192,
        decimals: int = 4,
        precision: str = "fp32",
    ):
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
        path = check_model_folder(path)
        try:
            self.tokenizer = PreTrainedTokenizerFast.from_pretrained(path)
            # float32 whatever the stored dtype: CPU kernels are fastest and exact in float32. Our own class,
            # never an Auto class: check_model_folder made sure it is a Gaze folder.
            self.model, info = GazeForSequenceClassification.from_pretrained(
                path, use_safetensors=True, dtype=torch.float32, output_loading_info=True
            )
        except Exception as error:
            raise ModelLoadError(f"could not load the model in {path}: {_one_line(error)}") from error
        if info["missing_keys"] or info["mismatched_keys"]:  # check_model_folder should have said so already
            names = sorted(map(str, {*info["missing_keys"], *info["mismatched_keys"]}))
            raise ModelLoadError(f"model folder {path} does not fit its config.json: {_names(names)}")
        broken = sorted(
            name
            for name, tensor in self.model.state_dict().items()
            if tensor.is_floating_point() and not torch.isfinite(tensor).all()
        )
        if broken:
            raise ModelLoadError(
                f"model folder {path} is corrupt: {len(broken)} tensors hold NaN or infinite values: {_names(broken)}"
            )
        self.model.eval()
        self.path = path
        config = self.model.config
        self.labels = [config.id2label[i] for i in range(config.num_labels)]
        self.num_layers = config.num_hidden_layers
        self.num_heads = config.num_attention_heads
        self.max_length = min(config.max_position_embeddings, self.tokenizer.model_max_length)
        self.pad_id = self.tokenizer.pad_token_id or 0
        # A private copy of the Rust tokenizer: truncation on, padding off (we pad per bucket).
        self._tokenizer = Tokenizer.from_str(self.tokenizer.backend_tokenizer.to_str())
        self._tokenizer.enable_truncation(self.max_length)
        self._tokenizer.no_padding()
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self.decimals = decimals
        self.precision = precision

    # -- public API -------------------------------------------------------------------------

    def encode(self, texts: Sequence[str]) -> list[Encoding]:
        """Tokenize (truncating to the model's max positions); `len(e.overflowing) > 0` marks a cut."""
        return self._tokenizer.encode_batch([sanitize(text) for text in texts])

    def predict(self, texts: Sequence[str], attention: str = "cls") -> list[dict]:
        """Classify `texts`; one JSON-ready dict per text, in input order (see the README's contract)."""
        if attention not in MODES:
            raise ValueError(f"unknown attention mode {attention!r}; expected one of {', '.join(MODES)}")
        return self.run([Item(encoding, attention) for encoding in self.encode(texts)])

    def run(self, items: Sequence[Item]) -> list[dict]:
        """Classify pre-tokenized items (modes may differ); results come back in the items' order."""
        results: list[dict | None] = [None] * len(items)
        for bucket in self._buckets(items):
            for index, result in zip(bucket, self._forward([items[i] for i in bucket]), strict=True):
                results[index] = result
        return results  # type: ignore[return-value]

    def attention_shape(self, num_tokens: int, mode: str) -> list[int] | None:
        """The shape of the attention of a text with `num_tokens` tokens in `mode` (None: no maps)."""
        layers, heads, t = self.num_layers, self.num_heads, num_tokens
        return {
            "none": None,
            "cls": [layers, heads, t],
            "last": [heads, t, t],
            "all": [layers, heads, t, t],
            "rollout": [t],
        }[mode]

    def attention_values(self, num_tokens: int, mode: str) -> int:
        """How many numbers the attention of a text with `num_tokens` tokens holds in `mode`."""
        shape = self.attention_shape(num_tokens, mode)
        return math.prod(shape) if shape else 0

    # -- internals --------------------------------------------------------------------------

    def _order(self, items: Sequence[Item]) -> list[int]:
        """Indices sorted by (needs maps, length): neighbours pad little and share a forward path."""
        return sorted(range(len(items)), key=lambda i: (items[i].mode in MAP_MODES, len(items[i].encoding.ids)))

    def _buckets(self, items: Sequence[Item]) -> list[list[int]]:
        """`_order`'s indices, cut where the batch would grow too large or the forward path changes."""
        buckets: list[list[int]] = []
        current: list[int] = []
        for i in self._order(items):
            if current:
                longest = len(items[i].encoding.ids)  # sorted: the newcomer is the longest
                needs_maps = items[i].mode in MAP_MODES
                full = len(current) >= self.max_batch_size or longest * (len(current) + 1) > self.max_batch_tokens
                if full or needs_maps != (items[current[0]].mode in MAP_MODES):
                    buckets.append(current)
                    current = []
            current.append(i)
        if current:
            buckets.append(current)
        return buckets

    @torch.inference_mode()
    def _forward(self, items: Sequence[Item]) -> list[dict]:
        lengths = [len(item.encoding.ids) for item in items]
        width = max(lengths)
        input_ids = torch.full((len(items), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(items), width), dtype=torch.long)
        for row, item in enumerate(items):
            input_ids[row, : lengths[row]] = torch.tensor(item.encoding.ids, dtype=torch.long)
            attention_mask[row, : lengths[row]] = 1
        needs_maps = any(item.mode in MAP_MODES for item in items)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            output = self.model(input_ids=input_ids, attention_mask=attention_mask, output_attentions=needs_maps)
        probs = output.logits.float().softmax(-1).double().round(decimals=6).tolist()
        maps = _Maps(output.attentions, self.decimals) if needs_maps else None

        results = []
        for row, item in enumerate(items):
            scores = dict(zip(self.labels, probs[row], strict=True))
            best = max(range(len(self.labels)), key=probs[row].__getitem__)
            attention = None
            if item.mode != "none":
                shape = self.attention_shape(lengths[row], item.mode)
                attention = {"mode": item.mode, "shape": shape, "values": maps.values(item.mode, row, lengths[row])}
            results.append(
                {
                    "label": self.labels[best],
                    "score": probs[row][best],
                    "scores": scores,
                    "tokens": item.encoding.tokens,
                    "truncated": len(item.encoding.overflowing) > 0,
                    "attention": attention,
                }
            )
        return results


class _Maps:
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
        return tensor.double().round(decimals=self.decimals)


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
        mixed = mixed + torch.eye(mixed.shape[-1], dtype=mixed.dtype)
        mixed = mixed / mixed.sum(dim=-1, keepdim=True)
        vector = mixed[:, 0, :] if vector is None else torch.bmm(vector.unsqueeze(1), mixed).squeeze(1)
    return vector
