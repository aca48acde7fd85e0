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
- optionally (`precision="bf16"`) the forward pass runs under bf16 autocast; `precision="auto"` times
  fp32 against bf16 on a few batches at load and keeps the faster (`choose_precision`);
- `device` puts the model on a GPU when there is one ("auto"); results come back to the CPU as numbers;
- token attributions (gradients: a second pass outside inference mode) only for the texts that ask,
  batched with the texts of the batch that ask for the same method (`TokenAttributor`).
"""

from __future__ import annotations

import json
import math
import re
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import torch
from captum.attr import LayerGradientXActivation, LayerIntegratedGradients
from huggingface_hub.errors import StrictDataclassError
from safetensors import safe_open
from tokenizers import Encoding, Tokenizer
from transformers import PreTrainedTokenizerFast
from transformers.utils import logging as transformers_logging

from .configuration_gaze import GazeConfig
from .modeling_gaze import GazeForSequenceClassification
from .tokenization import realign

transformers_logging.disable_progress_bar()

# The attention modes of the contract (README "The contract"); the one list every other module imports.
Mode = Literal["none", "cls", "last", "all", "rollout"]
MODES: tuple[str, ...] = get_args(Mode)
MAP_MODES = frozenset(MODES) - {"none"}
# How logits become `scores`, as in HF's TextClassificationPipeline: "none" returns the raw logits.
Function = Literal["softmax", "sigmoid", "none"]
FUNCTIONS: tuple[str, ...] = get_args(Function)
# Token attribution methods (TokenAttributor below): one score per token for one label.
Attribution = Literal["none", "gradient_x_input", "integrated_gradients", "attention_gradient"]
ATTRIBUTIONS: tuple[str, ...] = get_args(Attribution)
IG_STEPS = 20
# Forward and backward passes each method runs per text (`cost_ms` counts them).
ATTRIBUTION_PASSES = {"none": 0, "gradient_x_input": 1, "attention_gradient": 1, "integrated_gradients": IG_STEPS}
# A multi-label model's prediction lists every label whose sigmoid score reaches this (training evaluates so too).
THRESHOLD = 0.5
# bf16: autocast on CPU, ~1.6x faster where the CPU has bf16 instructions (benchmarks/README.md, 1);
# same labels on SST-2 dev, attention values within ~0.01 of fp32 (softmax itself stays fp32).
PRECISIONS = ("fp32", "bf16")
# "auto": measure both at load and keep the faster. bf16 was 2.1x faster on one 2-core Intel Xeon VM, 1.54x on
# an AMD EPYC VM, 0.64x (slower) on another Intel Xeon VM of the same kind: only a measurement can tell.
PRECISION_CHOICES = ("auto", *PRECISIONS)
# bf16 changes values slightly (see above), so it has to be clearly faster to be chosen; a tie keeps fp32.
BF16_MIN_SPEEDUP = 1.1
DEVICES = ("auto", "cpu", "cuda")  # auto: cuda when torch sees a GPU, else cpu
# The probe of choose_precision: a sentence of SST-2's median length (about 26 tokens).
PROBE_SENTENCE = "a gripping , funny and often moving film , with a story that works and actors who make it matter . "
DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "checkpoints" / "gaze-sst2"

# What a text costs a worker (one torch thread: the forward pass, copying its maps out, JSON), in ms:
# PER_TOKEN_MS × tokens + PER_VALUE_MS × attention values, least-squares fit by benchmarks/request_cost.py
# (benchmarks/README.md, 6) on a 2-core Intel Xeon VM, within ~20 % of the measured time above 5 ms.
# The service schedules and caps requests by it.
PER_TOKEN_MS = 0.056
PER_VALUE_MS = 0.00022
# Plus, for a token attribution, PER_GRADIENT_TOKEN_MS × ATTRIBUTION_PASSES × tokens: one forward and backward
# pass of one token, batched, on one thread (benchmarks/README.md, 7: 0.25 ms quiet, up to 0.5 ms under load).
PER_GRADIENT_TOKEN_MS = 0.25

_SURROGATES = re.compile("[\ud800-\udfff]")


class ModelLoadError(RuntimeError):
    """The model folder is missing, incomplete or corrupt. The message says which and why."""


def sanitize(text: str) -> str:
    """Replace unpaired UTF-16 surrogates (valid in JSON escapes, not in Unicode text) with U+FFFD."""
    return _SURROGATES.sub("\ufffd", text)


def check_scores(function_to_apply: str | None, top_k: int | None) -> None:
    """Raise ValueError, saying what is wrong, unless the options of `scores` and `top` are valid."""
    if function_to_apply is not None and function_to_apply not in FUNCTIONS:
        raise ValueError(
            f"unknown function_to_apply {function_to_apply!r:.60}; expected one of {', '.join(FUNCTIONS)} (or null)"
        )
    if top_k is not None and (type(top_k) is not int or top_k < 1):
        raise ValueError(f"top_k must be an integer of at least 1 (or null), got {top_k!r:.60}")


def resolve_device(device: str) -> torch.device:
    """The torch device for `device`: auto is cuda when torch sees a GPU, else cpu. Asking for cuda without
    one is an error that says so, never a silent fall back to the CPU."""
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; expected one of {', '.join(DEVICES)}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device 'cuda' asked for, but torch {torch.__version__} sees no CUDA GPU "
            "(torch.cuda.is_available() is False); use cpu, or auto to take a GPU only when there is one"
        )
    return torch.device(device)


@dataclass(frozen=True)
class PrecisionChoice:
    """What `Predictor.choose_precision` measured: the median seconds of one probe run per precision."""

    precision: str
    seconds: dict[str, float]
    repeats: int

    def __str__(self) -> str:
        fp32, bf16 = self.seconds["fp32"], self.seconds["bf16"]
        return (
            f"{self.precision} (fp32 {fp32 * 1000:.1f} ms, bf16 {bf16 * 1000:.1f} ms per probe, median of "
            f"{self.repeats}: bf16 {fp32 / bf16:.2f}x fp32's speed; bf16 is kept from {BF16_MIN_SPEEDUP}x)"
        )


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
        raise ModelLoadError(f"model folder {path} is corrupt: {one_line(error)}") from error
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
    try:  # GazeConfig refuses sizes a typo or an attack would ask for (configuration_gaze.SIZE_LIMITS)
        config = GazeConfig.from_pretrained(path)
    except Exception as error:
        raise ModelLoadError(f"model folder {path} has an invalid config.json: {one_line(error)}") from error
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


def one_line(error: Exception) -> str:
    """The error's type and message on one line, for a refusal; a GazeConfig validation error (which
    huggingface_hub's strict dataclasses wrap in a multi-line one) is told by its cause."""
    if isinstance(error, StrictDataclassError) and error.__cause__ is not None:
        error = error.__cause__
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:500]}"


@dataclass(frozen=True)
class Item:
    """One text to classify, already tokenized, with the attention mode its caller asked for."""

    encoding: Encoding
    mode: str
    attribution: str = "none"  # one of ATTRIBUTIONS
    target: str | None = None  # the label to attribute; None: the predicted one
    function_to_apply: str | None = None  # one of FUNCTIONS; None: the model's (Predictor.default_function)
    top_k: int | None = None  # also list the top_k labels, best first ("top")


def faster_precision(seconds: dict[str, float]) -> str:
    """bf16 if its median time beats fp32's by BF16_MIN_SPEEDUP, else fp32."""
    return "bf16" if seconds["fp32"] >= BF16_MIN_SPEEDUP * seconds["bf16"] else "fp32"


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
        device: str = "auto",
    ):
        if precision not in PRECISION_CHOICES:
            raise ValueError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISION_CHOICES)}")
        self.device = resolve_device(device)
        path = check_model_folder(path)
        try:
            self.tokenizer = PreTrainedTokenizerFast.from_pretrained(path)
            # float32 whatever the stored dtype: CPU kernels are fastest and exact in float32. Our own class,
            # never an Auto class: check_model_folder made sure it is a Gaze folder.
            self.model, info = GazeForSequenceClassification.from_pretrained(
                path, use_safetensors=True, dtype=torch.float32, output_loading_info=True
            )
        except Exception as error:
            raise ModelLoadError(f"could not load the model in {path}: {one_line(error)}") from error
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
        self.model.eval().to(self.device)
        self.path = path
        config = self.model.config
        self.labels = [config.id2label[i] for i in range(config.num_labels)]
        # A multi-label model (trained on lists of labels) scores each label by its own sigmoid, not a softmax.
        self.multi_label = config.problem_type == "multi_label_classification"
        # HF's default: each label's sigmoid for a multi-label model or a single output, else a softmax.
        self.default_function = "sigmoid" if self.multi_label or config.num_labels == 1 else "softmax"
        self.num_layers = config.num_hidden_layers
        self.num_heads = config.num_attention_heads
        positions = config.max_position_embeddings - config.position_offset  # RoBERTa's start at 2
        self.max_length = min(positions, self.tokenizer.model_max_length)
        self.pad_id = self.tokenizer.pad_token_id or 0
        # A private copy of the Rust tokenizer: truncation on, padding off (we pad per bucket).
        # realign: older folders' "n't" rule gives wrong token offsets (model/tokenization.py); same tokens.
        self._tokenizer = Tokenizer.from_str(realign(self.tokenizer.backend_tokenizer.to_str()))
        self._tokenizer.enable_truncation(self.max_length)
        self._tokenizer.no_padding()
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self.decimals = decimals
        self.precision = precision
        self.attributor = TokenAttributor(self.model, self.tokenizer)
        # Set only by precision="auto": what was measured, for the caller to log.
        self.precision_choice = self.choose_precision() if precision == "auto" else None

    # -- public API -------------------------------------------------------------------------

    def encode(self, texts: Sequence[str]) -> list[Encoding]:
        """Tokenize (truncating to the model's max positions); `len(e.overflowing) > 0` marks a cut."""
        return self._tokenizer.encode_batch([sanitize(text) for text in texts])

    def predict(
        self,
        texts: Sequence[str],
        attention: str = "cls",
        attribution: str = "none",
        target: str | None = None,
        *,
        function_to_apply: str | None = None,
        top_k: int | None = None,
    ) -> list[dict]:
        """Classify `texts`; one JSON-ready dict per text, in input order (see the README's contract)."""
        if attention not in MODES:
            raise ValueError(f"unknown attention mode {attention!r}; expected one of {', '.join(MODES)}")
        self.check_attribution(attribution, target)
        check_scores(function_to_apply, top_k)
        return self.run(
            [
                Item(encoding, attention, attribution, target, function_to_apply, top_k)
                for encoding in self.encode(texts)
            ]
        )

    def check_attribution(self, attribution: str, target: str | None) -> None:
        """Raise ValueError, saying what is wrong, unless `attribution` and `target` can be computed."""
        if attribution not in ATTRIBUTIONS:
            raise ValueError(f"unknown attribution {attribution!r:.60}; expected one of {', '.join(ATTRIBUTIONS)}")
        if target is not None and attribution == "none":
            raise ValueError("'target' names the label to attribute: it needs an 'attribution' other than 'none'")
        if target is not None and target not in self.labels:
            raise ValueError(f"unknown target label {target!r:.60}; the labels are {', '.join(self.labels)}")

    def run(self, items: Sequence[Item]) -> list[dict]:
        """Classify pre-tokenized items (modes may differ); results come back in the items' order."""
        results: list[dict | None] = [None] * len(items)
        for bucket in self._buckets(items):
            batch = [items[i] for i in bucket]
            input_ids, attention_mask = (tensor.to(self.device) for tensor in self._pad(batch))
            predictions = self._forward(batch, input_ids, attention_mask)
            if batch[0].attribution != "none":  # buckets never mix attribution methods
                self._attribute(batch, predictions, input_ids, attention_mask)
            for index, result in zip(bucket, predictions, strict=True):
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

    def cost_ms(self, item: Item) -> float:
        """The estimated milliseconds of one thread's work to answer `item` (see PER_TOKEN_MS)."""
        tokens = len(item.encoding.ids)
        gradient_tokens = ATTRIBUTION_PASSES[item.attribution] * tokens
        return (
            PER_TOKEN_MS * tokens
            + PER_VALUE_MS * self.attention_values(tokens, item.mode)
            + PER_GRADIENT_TOKEN_MS * gradient_tokens
        )

    def choose_precision(self, repeats: int = 5) -> PrecisionChoice:
        """Time fp32 against bf16 autocast on batches like the service's, keep the faster (`faster_precision`).

        The probe: 16 sentence-length texts with [CLS] maps (the service's default mode) and 4 texts of the
        model's full length without maps. One untimed run of each precision first (first runs pick kernels);
        then they take turns, in alternating order so that a change in the machine's speed hits both, and
        the medians of `repeats` runs are compared.
        """
        probe = [Item(encoding, "cls") for encoding in self.encode([PROBE_SENTENCE] * 16)]
        probe += [Item(encoding, "none") for encoding in self.encode([PROBE_SENTENCE * 20] * 4)]
        runs: dict[str, list[float]] = {precision: [] for precision in PRECISIONS}
        for precision in PRECISIONS:
            self.precision = precision
            self.run(probe)
        for turn in range(repeats):
            for precision in PRECISIONS if turn % 2 == 0 else PRECISIONS[::-1]:
                self.precision = precision
                started = time.perf_counter()
                self.run(probe)
                runs[precision].append(time.perf_counter() - started)
        seconds = {precision: statistics.median(times) for precision, times in runs.items()}
        self.precision = faster_precision(seconds)
        return PrecisionChoice(self.precision, seconds, repeats)

    # -- internals --------------------------------------------------------------------------

    @staticmethod
    def _path(item: Item) -> tuple[bool, str]:
        """What a batch must share: the forward path (with maps or fused) and the attribution method."""
        return item.mode in MAP_MODES, item.attribution

    def _order(self, items: Sequence[Item]) -> list[int]:
        """Indices sorted by (path, length): neighbours pad little and share a forward path."""
        return sorted(range(len(items)), key=lambda i: (*self._path(items[i]), len(items[i].encoding.ids)))

    def _buckets(self, items: Sequence[Item]) -> list[list[int]]:
        """`_order`'s indices, cut where the batch would grow too large or the forward path changes."""
        buckets: list[list[int]] = []
        current: list[int] = []
        for i in self._order(items):
            if current:
                longest = len(items[i].encoding.ids)  # sorted: the newcomer is the longest
                full = len(current) >= self.max_batch_size or longest * (len(current) + 1) > self.max_batch_tokens
                if full or self._path(items[i]) != self._path(items[current[0]]):
                    buckets.append(current)
                    current = []
            current.append(i)
        if current:
            buckets.append(current)
        return buckets

    def _pad(self, items: Sequence[Item]) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids, attention_mask) of the items, padded to the longest of them."""
        lengths = [len(item.encoding.ids) for item in items]
        input_ids = torch.full((len(items), max(lengths)), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(items), max(lengths)), dtype=torch.long)
        for row, item in enumerate(items):
            input_ids[row, : lengths[row]] = torch.tensor(item.encoding.ids, dtype=torch.long)
            attention_mask[row, : lengths[row]] = 1
        return input_ids, attention_mask

    @torch.inference_mode()
    def _forward(self, items: Sequence[Item], input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[dict]:
        lengths = [len(item.encoding.ids) for item in items]
        needs_maps = any(item.mode in MAP_MODES for item in items)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            output = self.model(input_ids=input_ids, attention_mask=attention_mask, output_attentions=needs_maps)
        logits = output.logits.float().cpu()
        functions = [item.function_to_apply or self.default_function for item in items]
        # Each function the batch asks for, once (float64: a rounded float32 prints long in JSON).
        scored = {
            function: apply_function(logits, function).double().round(decimals=6).tolist()
            for function in {*functions, self.default_function}
        }
        probs = scored[self.default_function]
        maps = _Maps(output.attentions, self.decimals) if needs_maps else None

        results = []
        for row, item in enumerate(items):
            row_scores = scored[functions[row]][row]
            scores = dict(zip(self.labels, row_scores, strict=True))
            best = max(range(len(self.labels)), key=row_scores.__getitem__)
            attention = None
            if item.mode != "none":
                shape = self.attention_shape(lengths[row], item.mode)
                attention = {"mode": item.mode, "shape": shape, "values": maps.values(item.mode, row, lengths[row])}
            top = None
            if item.top_k is not None:
                ranked = sorted(scores.items(), key=lambda pair: pair[1], reverse=True)[: item.top_k]
                top = [{"label": label, "score": score} for label, score in ranked]
            result = {
                "label": self.labels[best],
                "score": row_scores[best],
                **(
                    {"labels": [name for name, p in zip(self.labels, probs[row], strict=True) if p >= THRESHOLD]}
                    if self.multi_label
                    else {}
                ),
                "scores": scores,
                "top": top,
                "tokens": item.encoding.tokens,
                "offsets": token_offsets(item.encoding),
                "truncated": len(item.encoding.overflowing) > 0,
                "attention": attention,
                "words": None,
                "attribution": None,  # filled in by _attribute for the texts that ask
            }
            if attention is not None:
                result["words"] = words(item.encoding, token_importance(result), self.decimals)
            results.append(result)
        return results

    def _attribute(
        self, items: Sequence[Item], predictions: list[dict], input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> None:
        """Add each item's token attribution (one method for all; targets may differ) to its prediction."""
        method = items[0].attribution
        targets = [item.target or prediction["label"] for item, prediction in zip(items, predictions, strict=True)]
        indices = [self.labels.index(target) for target in targets]
        scores = self.attributor.scores(method, input_ids, attention_mask, indices, self.max_batch_tokens)
        values = scores.double().round(decimals=self.decimals).tolist()  # float64: prints as 0.1234 in JSON
        for row, (item, prediction) in enumerate(zip(items, predictions, strict=True)):
            length = len(item.encoding.ids)
            prediction["attribution"] = {"method": method, "target": targets[row], "values": values[row][:length]}


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


def apply_function(logits: torch.Tensor, function: str) -> torch.Tensor:
    """(batch, labels) logits → scores: softmax (sum to 1), sigmoid (each label alone) or none (the logits)."""
    if function == "softmax":
        return logits.softmax(-1)
    if function == "sigmoid":
        return logits.sigmoid()
    if function == "none":
        return logits
    raise ValueError(f"unknown function_to_apply {function!r}; expected one of {', '.join(FUNCTIONS)}")


def token_offsets(encoding: Encoding) -> list[list[int] | None]:
    """Each token's [start, end) in the text as sent (code points); None for [CLS] and [SEP].

    `tokenizers` tracks every normalization step (lower-casing, accents, "<br />", "n't"), and `sanitize`
    replaces characters one for one, so the spans index the caller's own string.
    """
    return [
        None if special else [start, end]
        for (start, end), special in zip(encoding.offsets, encoding.special_tokens_mask, strict=True)
    ]


def token_importance(prediction: dict) -> list[float] | None:
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


def words(encoding: Encoding, weights: Sequence[float], decimals: int = 4) -> list[dict]:
    """The words of a text (the pre-tokenizer's: a word's WordPiece pieces together, each punctuation mark
    alone), each with its [start, end) span, its token indices and the sum of its tokens' `weights`."""
    pieces: dict[int, list[int]] = {}
    for index, word in enumerate(encoding.word_ids):
        if word is not None:  # [CLS] and [SEP] belong to no word
            pieces.setdefault(word, []).append(index)
    offsets = encoding.offsets
    return [
        {
            "start": offsets[tokens[0]][0],
            "end": offsets[tokens[-1]][1],
            "tokens": tokens,
            "weight": round(sum(weights[i] for i in tokens), decimals),
        }
        for tokens in pieces.values()
    ]


# -- token attributions -----------------------------------------------------------------------


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

    def log_odds(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(batch, labels): each label's log-odds, z_j − logsumexp of the other logits."""
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits.float()
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
    ) -> torch.Tensor:
        """(batch, seq) float32 scores, unrounded; `max_batch_tokens` bounds one pass of integrated gradients."""
        target = torch.tensor(targets, dtype=torch.long, device=input_ids.device)
        with torch.enable_grad(), torch.autocast(input_ids.device.type, enabled=False):
            if method == "gradient_x_input":
                per_dim = self._gradient_x_input.attribute(
                    input_ids, target=target, additional_forward_args=(attention_mask,)
                )
            elif method == "integrated_gradients":
                rows_per_pass = max(2 * len(targets), max_batch_tokens // input_ids.shape[1])
                per_dim = self._integrated_gradients.attribute(
                    input_ids,
                    baselines=self.baseline(input_ids),
                    target=target,
                    additional_forward_args=(attention_mask,),
                    n_steps=IG_STEPS,
                    internal_batch_size=rows_per_pass,
                )
            elif method == "attention_gradient":
                return self._attention_gradient(input_ids, attention_mask, target)
            else:
                raise ValueError(f"unknown attribution {method!r}; expected one of {', '.join(ATTRIBUTIONS[1:])}")
        return per_dim.detach().float().sum(dim=-1)

    def _attention_gradient(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, target: torch.Tensor
    ) -> torch.Tensor:
        output = self.model(input_ids=input_ids, attention_mask=attention_mask, output_attentions=True)
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
