"""The one check that a folder is a Gaze model: serving, `--init-from`, import and export all call it.

Reads config.json and the safetensors header only: no weights, no model built, and never the Auto
classes (an unknown type with an `auto_map` would ask to run the folder's own code).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from huggingface_hub.errors import StrictDataclassError
from safetensors import safe_open
from tokenizers import Tokenizer

from .configuration_gaze import GazeConfig
from .modeling_gaze import GazeForSequenceClassification
from .tokenization import named_special_tokens


class ModelLoadError(RuntimeError):
    """The model folder is missing, incomplete or corrupt. The message says which and why, in one line."""


def one_line(error: Exception) -> str:
    """The error's type and message on one line, for a refusal; a GazeConfig validation error (which
    huggingface_hub's strict dataclasses wrap in a multi-line one) is told by its cause."""
    if isinstance(error, StrictDataclassError) and error.__cause__ is not None:
        error = error.__cause__
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:500]}"


def read_config(path: str | Path) -> GazeConfig:
    """The folder's GazeConfig, or a ModelLoadError saying in one line why it is not a Gaze folder.

    GazeConfig refuses sizes a typo or an attack would ask for (configuration_gaze.SIZE_LIMITS)."""
    path = Path(path)
    if not path.is_dir():
        raise ModelLoadError(f"model folder {path} does not exist (train it first, or name another folder)")
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"model folder {path} is incomplete: missing config.json")
    try:
        raw = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"model folder {path} is corrupt: {one_line(error)}") from error
    if not isinstance(raw, dict):
        raise ModelLoadError(f"model folder {path} is corrupt: config.json is not a JSON object")
    if raw.get("model_type") != GazeConfig.model_type:
        raise ModelLoadError(
            f"model folder {path} holds a model of type {raw.get('model_type')!r:.80} (config.json model_type), "
            f"not a Gaze model ({GazeConfig.model_type!r}); only Gaze folders are loaded, and code in a folder is "
            "never run"
        )
    raw.pop("auto_map", None)  # our own classes read the folder
    try:
        return GazeConfig.from_dict(raw)
    except Exception as error:
        raise ModelLoadError(f"model folder {path} has an invalid config.json: {one_line(error)}") from error


def check_model_folder(path: str | Path) -> Path:
    """Fail early, with one line that names the problem, unless `path` holds a servable Gaze classifier.

    Beyond `read_config`: the labels are 0..N-1 with names of their own, the tokenizer gives only ids the
    embeddings have and has the special tokens the model reads, and the weights file holds every tensor the
    config describes, each of the shape the config implies. The Predictor then checks the values (no NaN or
    infinity) when it loads them.
    """
    path = Path(path)
    config = read_config(path)
    missing = [name for name in ("model.safetensors", "tokenizer.json") if not (path / name).is_file()]
    if missing:
        raise ModelLoadError(
            f"model folder {path} is incomplete: missing {', '.join(missing)} (only safetensors weights are loaded)"
        )
    _check_labels(path, config)
    _check_tokenizer(path, config)
    try:
        with safe_open(path / "model.safetensors", framework="pt") as weights:
            shapes = {name: tuple(weights.get_slice(name).get_shape()) for name in weights.keys()}  # noqa: SIM118
    except Exception as error:  # any parse error means the same thing to the operator
        raise ModelLoadError(f"model folder {path} is corrupt: {one_line(error)}") from error
    _check_tensors(path, config, shapes)
    return path


def _check_labels(path: Path, config: GazeConfig) -> None:
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


def _check_tokenizer(path: Path, config: GazeConfig) -> None:
    """Every id the tokenizer can give is a row of the embeddings (else texts with that token fail), and the
    [CLS], [SEP] and [PAD] of the folder are in it (else texts are classified without them)."""
    try:
        vocabulary = Tokenizer.from_file(str(path / "tokenizer.json")).get_vocab(with_added_tokens=True)
    except Exception as error:
        raise ModelLoadError(f"model folder {path} is corrupt: tokenizer.json: {one_line(error)}") from error
    largest = max(vocabulary.values(), default=-1)
    if largest >= config.vocab_size:
        raise ModelLoadError(
            f"model folder {path} does not fit its config.json: tokenizer.json gives token id {largest}, and the "
            f"embeddings have {config.vocab_size} rows (vocab_size)"
        )
    named = named_special_tokens(path)
    missing = [named[role] for role in ("cls", "sep", "pad") if named[role] not in vocabulary]
    if missing:
        raise ModelLoadError(f"model folder {path} has a tokenizer without the special tokens {', '.join(missing)}")


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
            f"tensors its config describes: {names(absent)}"
        )
    wrong = [
        f"{name} {list(shapes[name])} (config: {list(shape)})"
        for name, shape in sorted(expected.items())
        if name in shapes and shapes[name] != shape
    ]
    if wrong:
        raise ModelLoadError(
            f"model folder {path} does not fit its config.json: {len(wrong)} tensors in model.safetensors have "
            f"another shape: {names(wrong, 3)}"
        )


def names(items: Sequence[str], limit: int = 5) -> str:
    """The first `limit` of `items`, comma-separated, and how many more."""
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more
