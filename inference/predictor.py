"""The prediction core: one saved Gaze folder in, labels, scores and attention maps out.

The service, the CLI (`python -m inference.predict`), `training.export` and the tests all go through
`Predictor`; nothing here knows of HTTP, BentoML or accelerate. What a caller may ask is the contract
(inference/contract.py); the maps (maps.py), the attributions (attributions.py) and the device and
precision (precision.py) are modules of their own.

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

import math
import re
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Encoding, Tokenizer
from transformers import PreTrainedTokenizerFast
from transformers.utils import logging as transformers_logging

from model import GazeForSequenceClassification
from model.folder import ModelLoadError, check_model_folder, names, one_line
from model.tokenization import realign

from .attributions import ATTRIBUTION_PASSES, TokenAttributor
from .contract import (
    FUNCTIONS,
    MAP_MODES,
    THRESHOLD,
    ContractError,
    Options,
    OverCostError,
    Prediction,
    Text,
    TooLongError,
    characters,
    sanitize,
)
from .maps import Maps, token_importance, token_offsets, words
from .precision import (
    PRECISION_CHOICES,
    PRECISIONS,
    PROBE_SENTENCE,
    PrecisionChoice,
    faster_precision,
    resolve_device,
)

transformers_logging.disable_progress_bar()

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "checkpoints" / "gaze-sst2"

# What a text costs a worker (one torch thread: the forward pass, copying its maps out, JSON), in ms:
# (PER_TOKEN_MS + PER_MULTIPLY_ADD_MS × the blocks' weights) × tokens + PER_VALUE_MS × attention values
# + PER_LABEL_MS × labels (each a score in the answer); and per request PER_CHAR_MS × characters tokenized
# (CJK text, the dearer; done before the batch, so in a request's cost and not a batch's). A least-squares fit
# by benchmarks/request_cost.py (benchmarks/README.md, 6) on a 2-core Intel Xeon VM, over models of 2, 6 and
# 12 blocks. The service schedules and caps requests by it. A token attribution adds ATTRIBUTION_PASSES
# forward and backward passes, each GRADIENT_PASS_FORWARDS forwards (benchmarks/README.md, 7: a profile of
# 20 sentences, forward 38 ms, forward and backward 114 ms).
PER_TOKEN_MS = 0.015
PER_MULTIPLY_ADD_MS = 1.6e-8
PER_VALUE_MS = 0.00025
PER_LABEL_MS = 0.0015
PER_CHAR_MS = 0.0012
GRADIENT_PASS_FORWARDS = 3

# Tokenizing reads all of a text though only `max_length` tokens are kept (64 texts of 10,000 CJK characters
# took 2.6 s before their 413, hostile review 2). So a long text is tokenized from its head, cut at a word
# boundary: the head's tokens are then the whole text's first tokens, and when they overflow max_length the
# truncated encoding is exactly the whole text's. Heads grow: first HEAD_CHARS_PER_TOKEN[0] × max_length
# characters (enough for CJK text, a token per character), then [1] × max_length (ordinary text, ~4.5
# characters per token, overflows it by far), then the whole text (mostly spaces, or words too long for the
# vocabulary). A pair is always tokenized in full: how truncation shares max_length
# between its texts depends on which is longer (and counted so: `encode_cost_ms`).
HEAD_CHARS_PER_TOKEN = (2, 8)
WORD_BOUNDARY = "[ \t\n\r]"  # whitespace every tokenizer splits at (not \x1c-\x1f: BERT drops those as control)
# BERT's "Chinese characters" (tokenize_chinese_chars): each is a word of its own, so a boundary on both sides.
CJK_CHARACTER = (
    "[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002a6df\U0002a700-\U0002ceaf\U0002f800-\U0002fa1f]"
)


@dataclass(frozen=True, slots=True)
class Item:
    """One text to classify, already tokenized, with the options its request asked for."""

    encoding: Encoding
    options: Options


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
            missing = sorted(map(str, {*info["missing_keys"], *info["mismatched_keys"]}))
            raise ModelLoadError(f"model folder {path} does not fit its config.json: {names(missing)}")
        broken = sorted(
            name
            for name, tensor in self.model.state_dict().items()
            if tensor.is_floating_point() and not torch.isfinite(tensor).all()
        )
        if broken:
            raise ModelLoadError(
                f"model folder {path} is corrupt: {len(broken)} tensors hold NaN or infinite values: {names(broken)}"
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
        # Each weight of the blocks is a multiply-add per token: the bulk of a forward pass (see cost_ms).
        self.multiply_adds_per_token = sum(p.numel() for p in self.model.gaze.layers.parameters())
        positions = config.max_position_embeddings - config.position_offset  # RoBERTa's start at 2
        self.max_length = min(positions, self.tokenizer.model_max_length)
        self.pad_id = self.tokenizer.pad_token_id or 0
        # A private copy of the Rust tokenizer: truncation on, padding off (we pad per bucket).
        # realign: older folders' "n't" rule gives wrong token offsets (model/tokenization.py); same tokens.
        self._tokenizer = Tokenizer.from_str(realign(self.tokenizer.backend_tokenizer.to_str()))
        self._tokenizer.enable_truncation(self.max_length)
        self._tokenizer.no_padding()
        self.head_sizes = [per_token * self.max_length for per_token in HEAD_CHARS_PER_TOKEN]
        self.head_chars = self.head_sizes[-1]  # the most of a text that is tokenized unless its head fails
        splits_cjk = '"handle_chinese_chars":true' in self._tokenizer.to_str().replace(" ", "")
        boundary = f"{WORD_BOUNDARY}|{CJK_CHARACTER}" if splits_cjk else WORD_BOUNDARY
        self._last_boundary = re.compile(f".*(?:{boundary})", re.DOTALL)  # greedy: the last one in the range
        # Token types go to the model only for pairs, and only if it has them (BERT's; Gaze's own have none).
        self.token_types = config.type_vocab_size > 0
        self.pair_error = self._pair_error(config.type_vocab_size)
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self.decimals = decimals
        self.precision = precision
        self.attributor = TokenAttributor(self.model, self.tokenizer)
        # Set only by precision="auto": what was measured, for the caller to log.
        self.precision_choice = self.choose_precision() if precision == "auto" else None

    # -- public API -------------------------------------------------------------------------

    def encode(self, texts: Sequence[Text], field: str = "texts", first: int = 0) -> list[Encoding]:
        """Tokenize (truncating to the model's max positions); `len(e.overflowing) > 0` marks a cut. Long texts
        are tokenized from their head (HEAD_CHARS_PER_TOKEN), with the same result; pairs in full. A text (or
        either text of a pair) of nothing but what the tokenizer drops (control and format characters, U+FFFD)
        is a ContractError naming `field`[i] (i counted from `first`): the model would answer from [CLS] and
        [SEP] alone. So is a pair, for a model whose tokenizer cannot join two texts."""
        texts = [sanitize(text) if isinstance(text, str) else (sanitize(text[0]), sanitize(text[1])) for text in texts]
        if self.pair_error and any(not isinstance(text, str) for text in texts):
            raise ContractError(self.pair_error)
        encodings: list[Encoding] = [None] * len(texts)  # type: ignore[list-item]
        todo = range(len(texts))
        for chars in (*self.head_sizes, None):  # growing heads, then the whole text (see HEAD_CHARS_PER_TOKEN)
            heads = [self.head(texts[i], chars) if isinstance(texts[i], str) and chars else texts[i] for i in todo]
            for i, encoding in zip(todo, self._tokenizer.encode_batch(heads), strict=True):
                encodings[i] = encoding
            todo = [
                i
                for i, head in zip(todo, heads, strict=True)
                if len(head) < len(texts[i]) and not encodings[i].overflowing
            ]
            if not todo:
                break
        for i, (text, encoding) in enumerate(zip(texts, encodings, strict=True)):
            side = empty_side(text, encoding)
            if side is not None:
                name = f"{field}[{first + i}]" + ("" if isinstance(text, str) else f"[{side}]")
                shown = (text if isinstance(text, str) else text[side])[:20].encode("unicode_escape").decode("ascii")
                raise ContractError(f"{name} ('{shown}') has no tokens: it holds only characters the tokenizer drops")
        return encodings

    def items(
        self,
        texts: Sequence[Text],
        options: Options,
        field: str = "texts",
        max_cost_ms: float = math.inf,
        kind: type[Item] = Item,
        truncate: bool = True,
    ) -> list[Item]:
        """`texts` tokenized (`encode`) into items of `kind` with `options`. Past `max_cost_ms` of estimated work
        (`encode_cost_ms` and `cost_ms`) an OverCostError: the texts are tokenized in growing chunks (1, 2, 4, ...
        of them) and the first chunk that passes the limit ends it, so a request the limit refuses costs about the
        limit's worth of tokenizing, not all of its texts' (64 texts of 10,000 CJK characters in `all`: 60 ms for
        all, ~10 ms for the 7 that pass the default limit; hostile review 2). A chunk whose tokenizing alone would
        pass the limit is refused before it is tokenized. With `truncate=False` the first text longer than the
        model's max positions is a TooLongError, raised with its chunk (TEI's /predict default)."""
        items: list[Item] = []
        cost = 0.0
        while len(items) < len(texts):
            chunk = texts[len(items) : 2 * len(items) + 1]
            cost += self.encode_cost_ms(chunk)
            if cost > max_cost_ms:
                raise OverCostError(
                    f"this request would take more than {cost:.0f} ms of a worker to tokenize (its first "
                    f"{len(items) + len(chunk)} of {len(texts)} texts); the limit is {max_cost_ms:.0f} ms per "
                    "request: send fewer or shorter texts"
                )
            new = [kind(encoding, options) for encoding in self.encode(chunk, field, first=len(items))]
            cut = None if truncate else next((i for i, item in enumerate(new) if item.encoding.overflowing), None)
            if cut is not None:
                index = len(items) + cut
                message = f"{field}[{index}] has more than {self.max_length} tokens, the model's limit"
                raise TooLongError(message, index)
            cost += sum(self.cost_ms(item) for item in new)
            items += new
            if cost > max_cost_ms:
                raise OverCostError(self.over_cost_message(items, len(texts), cost, max_cost_ms))
        return items

    def over_cost_message(self, items: Sequence[Item], num_texts: int, cost: float, max_cost_ms: float) -> str:
        values = sum(self.attention_values(len(item.encoding.ids), item.options.attention) for item in items)
        tokens = sum(len(item.encoding.ids) for item in items)
        counted = f"{len(items)} texts" if len(items) == num_texts else f"its first {len(items)} of {num_texts} texts"
        return (
            f"this request would take {'about' if len(items) == num_texts else 'more than'} {cost:.0f} ms of a "
            f"worker ({counted}: {tokens} tokens, {values} attention values); the limit is {max_cost_ms:.0f} ms "
            "per request: send fewer or shorter texts, or ask for less attention ('cls' instead of 'all') or a "
            "cheaper attribution"
        )

    def head(self, text: str, chars: int) -> str:
        """The start of `text` to tokenize: all of it up to `chars` characters, else the part before the last word
        boundary in the second half of the first `chars` (all of it if there is none)."""
        if len(text) <= chars:
            return text
        found = self._last_boundary.match(text, chars // 2, chars)
        return text[: found.end() - 1] if found else text

    def encode_cost_ms(self, texts: Sequence[Text]) -> float:
        """The estimated milliseconds of tokenizing `texts` (their heads, pairs in full; see PER_CHAR_MS)."""
        chars = (min(len(text), self.head_chars) if isinstance(text, str) else characters(text) for text in texts)
        return PER_CHAR_MS * sum(chars)

    def predict(self, texts: Sequence[Text], *args, **kwargs) -> list[Prediction]:
        """Classify `texts` (strings, or pairs of them); one JSON-ready prediction per text, in input order. The
        other arguments are the fields of `Options` (`predict(texts, "rollout")`, `predict(texts,
        attribution=...)`), or one `Options`."""
        options = (
            args[0] if len(args) == 1 and not kwargs and isinstance(args[0], Options) else Options(*args, **kwargs)
        )
        self.check_options(options)
        return self.run(self.items(texts, options))

    def check_options(self, options: Options) -> None:
        """ContractError unless the model can answer `options`: its target is one of the model's labels."""
        if options.target is not None and options.target not in self.labels:
            raise ContractError(f"unknown target label {options.target!r:.60}; the labels are {', '.join(self.labels)}")

    def run(self, items: Sequence[Item]) -> list[Prediction]:
        """Classify pre-tokenized items (modes may differ); results come back in the items' order."""
        results: list[Prediction | None] = [None] * len(items)
        for bucket in self._buckets(items):
            batch = [items[i] for i in bucket]
            inputs = [None if tensor is None else tensor.to(self.device) for tensor in self._pad(batch)]
            predictions = self._forward(batch, *inputs)
            if batch[0].options.attribution != "none":  # buckets never mix attribution methods
                self._attribute(batch, predictions, *inputs)
            for index, item, result in zip(bucket, batch, predictions, strict=True):
                attribution = result["attribution"]
                if result["attention"] is not None or attribution is not None:
                    attributed = attribution["values"] if attribution is not None else None
                    result["words"] = words(item.encoding, token_importance(result), attributed, self.decimals)
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
        forward_ms = (PER_TOKEN_MS + PER_MULTIPLY_ADD_MS * self.multiply_adds_per_token) * tokens
        gradient_passes = ATTRIBUTION_PASSES[item.options.attribution] * GRADIENT_PASS_FORWARDS
        return (
            forward_ms * (1 + gradient_passes)
            + PER_VALUE_MS * self.attention_values(tokens, item.options.attention)
            + PER_LABEL_MS * len(self.labels)
        )

    def choose_precision(self, repeats: int = 5) -> PrecisionChoice:
        """Time fp32 against bf16 autocast on batches like the service's, keep the faster (`faster_precision`).

        The probe: 16 sentence-length texts with [CLS] maps (the service's default mode) and 4 texts of the
        model's full length without maps. One untimed run of each precision first (first runs pick kernels);
        then they take turns, in alternating order so that a change in the machine's speed hits both, and
        the medians of `repeats` runs are compared.
        """
        cls, none = Options(attention="cls"), Options(attention="none")
        probe = [Item(encoding, cls) for encoding in self.encode([PROBE_SENTENCE] * 16)]
        probe += [Item(encoding, none) for encoding in self.encode([PROBE_SENTENCE * 20] * 4)]
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
        return item.options.attention in MAP_MODES, item.options.attribution

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

    def _pair_error(self, type_vocab_size: int) -> str | None:
        """Why this model cannot take text pairs (None if it can): its tokenizer has no pair template (the two
        texts would be joined without [CLS] and [SEP]), or gives the second text a type the model lacks."""
        probe = self._tokenizer.encode("a", "b")
        if not probe.special_tokens_mask or not probe.special_tokens_mask[0]:
            return "this model's tokenizer has no template for text pairs: send single texts"
        if self.token_types and max(probe.type_ids) >= type_vocab_size:
            return (
                f"this model's tokenizer gives a pair's second text token type {max(probe.type_ids)}, which the "
                f"model (type_vocab_size {type_vocab_size}) does not have: send single texts"
            )
        return None

    def _pad(self, items: Sequence[Item]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(input_ids, attention_mask, token_type_ids) of the items, padded to the longest of them; the types
        only for a batch with a pair in it, for a model that has them (else None: type 0 throughout)."""
        lengths = [len(item.encoding.ids) for item in items]
        input_ids = torch.full((len(items), max(lengths)), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(items), max(lengths)), dtype=torch.long)
        typed = self.token_types and any(item.encoding.n_sequences > 1 for item in items)
        token_type_ids = torch.zeros((len(items), max(lengths)), dtype=torch.long) if typed else None
        for row, item in enumerate(items):
            input_ids[row, : lengths[row]] = torch.tensor(item.encoding.ids, dtype=torch.long)
            attention_mask[row, : lengths[row]] = 1
            if typed:
                token_type_ids[row, : lengths[row]] = torch.tensor(item.encoding.type_ids, dtype=torch.long)
        return input_ids, attention_mask, token_type_ids

    @torch.inference_mode()
    def _forward(
        self,
        items: Sequence[Item],
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None,
    ) -> list[Prediction]:
        lengths = [len(item.encoding.ids) for item in items]
        needs_maps = any(item.options.attention in MAP_MODES for item in items)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            output = self.model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                token_type_ids=token_type_ids,
                output_attentions=needs_maps,
            )
        logits = output.logits.float().cpu()
        functions = [item.options.function_to_apply or self.default_function for item in items]
        # Each function the batch asks for, once (float64: a rounded float32 prints long in JSON).
        scored = {
            function: apply_function(logits, function).double().round(decimals=6).tolist()
            for function in {*functions, self.default_function}
        }
        probs = scored[self.default_function]
        maps = Maps(output.attentions, self.decimals) if needs_maps else None

        results = []
        for row, item in enumerate(items):
            row_scores = scored[functions[row]][row]
            scores = dict(zip(self.labels, row_scores, strict=True))
            best = max(range(len(self.labels)), key=row_scores.__getitem__)
            attention = None
            mode = item.options.attention
            if mode != "none":
                shape = self.attention_shape(lengths[row], mode)
                attention = {"mode": mode, "shape": shape, "values": maps.values(mode, row, lengths[row])}
            top = None
            if item.options.top_k is not None:
                ranked = sorted(scores.items(), key=lambda pair: pair[1], reverse=True)[: item.options.top_k]
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
                "words": None,  # filled in by run, with the attribution
                "attribution": None,  # filled in by _attribute for the texts that ask
            }
            results.append(result)
        return results

    def _attribute(
        self,
        items: Sequence[Item],
        predictions: list[Prediction],
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None,
    ) -> None:
        """Add each item's token attribution (one method for all; targets may differ) to its prediction."""
        method = items[0].options.attribution
        targets = [
            item.options.target or prediction["label"] for item, prediction in zip(items, predictions, strict=True)
        ]
        indices = [self.labels.index(target) for target in targets]
        scores = self.attributor.scores(
            method, input_ids, attention_mask, indices, self.max_batch_tokens, token_type_ids
        )
        values = scores.double().round(decimals=self.decimals).tolist()  # float64: prints as 0.1234 in JSON
        for row, (item, prediction) in enumerate(zip(items, predictions, strict=True)):
            length = len(item.encoding.ids)
            prediction["attribution"] = {"method": method, "target": targets[row], "values": values[row][:length]}


def empty_side(text: Text, encoding: Encoding) -> int | None:
    """Which text the tokenizer read nothing in (0, or 1 of a pair), if any: a single text's check is the cheap
    one, since every request makes it."""
    if isinstance(text, str):
        return 0 if all(encoding.special_tokens_mask) else None
    kept = {
        side for side, special in zip(encoding.sequence_ids, encoding.special_tokens_mask, strict=True) if not special
    }
    return next((side for side in (0, 1) if side not in kept), None)


def apply_function(logits: torch.Tensor, function: str) -> torch.Tensor:
    """(batch, labels) logits → scores: softmax (sum to 1), sigmoid (each label alone) or none (the logits)."""
    if function == "softmax":
        return logits.softmax(-1)
    if function == "sigmoid":
        return logits.sigmoid()
    if function == "none":
        return logits
    raise ValueError(f"unknown function_to_apply {function!r}; expected one of {', '.join(FUNCTIONS)}")
