"""Settings of a training run, typed: defaults ← `--config FILE.yaml` ← command-line flags.

A script's settings are one frozen dataclass (`training.train.TrainArgs`, ...) made of the groups below;
each field's type and `help` are its command-line flag, its `--help` line and the check of its value in
a YAML file. Flags take both spellings (`--train-file`, as here, and `--train_file`, as transformers'
scripts), lists as repeated values (`--label-names negative positive`), and `none` where a setting may be
unset. Values a run derives (the default learning rate, an imported `--init-from`) make a new copy with
`dataclasses.replace`; the settings as given are never changed.
"""

import argparse
import dataclasses
import math
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml


def setting(
    default: Any, help: str, *, minimum: float | None = None, above: float | None = None, below: float | None = None
) -> Any:
    """A field with its `--help` line and, for a number, the values it takes (checked when the settings are
    read; a script that changes the default keeps the bounds of the group that declares the setting)."""
    bounds = {"minimum": minimum, "above": above, "below": below}
    return dataclasses.field(
        default=default, metadata={"help": help, **{k: v for k, v in bounds.items() if v is not None}}
    )


# Schedules of transformers' `get_scheduler` that need no settings beyond the warmup and the step count.
SCHEDULES = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup")


@dataclasses.dataclass(frozen=True)
class TokenizerArgs:
    """The tokenizer."""

    tokenizer: str | None = setting(
        None,
        "a tokenizer folder, or `train` to train one on the text; default: the --init-from folder's, else a"
        " shipped or trained one (docs/training.md)",
    )
    vocab_size: int = setting(8192, "the size of a trained tokenizer's vocabulary", minimum=100)
    max_seq_length: int = setting(128, "texts are cut to this many tokens", minimum=3)


@dataclasses.dataclass(frozen=True)
class ModelSizeArgs:
    """The sizes of a model trained from random weights (a start from --init-from brings its own)."""

    hidden_size: int = setting(256, "the width of every token's vector", minimum=1)
    num_hidden_layers: int = setting(4, "the number of transformer blocks", minimum=1)
    num_attention_heads: int = setting(4, "attention heads per block; they divide hidden_size", minimum=1)
    intermediate_size: int = setting(1024, "the width of each block's MLP", minimum=1)


@dataclasses.dataclass(frozen=True)
class OutputArgs:
    """Where the run writes."""

    output_dir: str = setting("runs/gaze", "the folder of the saved model, its records and checkpoints")
    overwrite_output_dir: bool = setting(False, "start over in an --output-dir that already holds something")
    seed: int = setting(42, "the seed of the initial weights, the shuffling, the held-out split and dropout", minimum=0)


@dataclasses.dataclass(frozen=True)
class RunArgs(TokenizerArgs, ModelSizeArgs, OutputArgs):
    """Optimization, evaluation and checkpoints (training/loop.py)."""

    init_from: str | None = setting(None, "start from this saved Gaze folder instead of random weights")
    hidden_dropout_prob: float = setting(0.1, "dropout on the blocks' outputs", minimum=0, below=1)
    attention_probs_dropout_prob: float = setting(0.1, "dropout on the attention weights", minimum=0, below=1)
    # optimization
    per_device_train_batch_size: int = setting(32, "training examples per batch and process", minimum=1)
    per_device_eval_batch_size: int = setting(128, "evaluation examples per batch and process", minimum=1)
    gradient_accumulation_steps: int = setting(1, "batches per optimizer step", minimum=1)
    learning_rate: float = setting(5e-4, "the peak learning rate (AdamW)", minimum=0)
    weight_decay: float = setting(0.01, "AdamW's weight decay (biases, norms and embeddings get none)", minimum=0)
    adam_beta2: float = setting(0.98, "AdamW's second-moment decay", minimum=0, below=1)
    max_grad_norm: float = setting(1.0, "gradients are clipped to this norm", above=0)
    lr_scheduler: Literal[SCHEDULES] = setting("linear", "how the learning rate decays after the warmup")
    warmup_ratio: float = setting(
        0.1, "the fraction of the steps spent warming the learning rate up", minimum=0, below=1
    )
    num_train_epochs: int = setting(3, "passes over the training data", minimum=1)
    max_steps: int = setting(0, "stop after this many optimizer steps; > 0 overrides num_train_epochs", minimum=0)
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = setting(
        "auto", "auto measures bf16 against fp32 before training and keeps the faster (training/runtime.py)"
    )
    # evaluation and bookkeeping
    eval_steps: int = setting(0, "evaluate every N optimizer steps; 0: at the end of every epoch", minimum=0)
    logging_steps: int = setting(50, "log the training loss every N optimizer steps", minimum=1)
    report_to: Literal["none", "tensorboard"] = setting(
        "none", "also log every record to TensorBoard, in --output-dir/tensorboard (`tensorboard --logdir` it)"
    )
    metric_for_best_model: str = setting("loss", "the evaluation metric that picks the best weights")
    load_best_model_at_end: bool = setting(True, "the saved folder holds the best weights, not the last")
    early_stopping_patience: int = setting(
        0, "stop after this many evaluations without improvement; 0: never", minimum=0
    )
    save_steps: int = setting(
        500, "a resumable checkpoint every N optimizer steps (and at the end of each epoch)", minimum=1
    )
    save_total_limit: int = setting(2, "the number of checkpoints kept", minimum=1)
    resume: bool = setting(False, "continue from the latest checkpoint in --output-dir")
    resume_from: str | None = setting(None, "continue from this checkpoint folder")


class RunError(Exception):
    """A setting, file or folder the run refuses; `run_script` prints it as one `error:` line."""


Args = TypeVar("Args")


def run_script(train: Callable[[Args], dict], args_class: type[Args], argv: list[str] | None = None) -> dict:
    """Parse the settings, run `train(args)`; a refusal or a diverged run ends the process with one line."""
    args = parse_args(args_class, argv)
    try:
        return train(args)
    except (RunError, FloatingPointError) as error:
        sys.exit(f"error: {error}")


def parse_args(args_class: type[Args], argv: list[str] | None = None) -> Args:
    """The settings of `args_class`: its defaults, then `--config FILE.yaml`, then the flags."""
    parser = argparse.ArgumentParser(
        description=sys.modules[args_class.__module__].__doc__.splitlines()[0],
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument("--config", type=Path, help="a YAML file of settings; flags override it")
    hints = typing.get_type_hints(args_class)
    groups = {  # the script's own settings first, the most shared last
        owner: parser.add_argument_group(owner.__doc__.splitlines()[0].rstrip("."))
        for owner in args_class.__mro__
        if dataclasses.is_dataclass(owner) and owner.__dict__.get("__annotations__")
    }
    for spec in dataclasses.fields(args_class):
        owner = _declared_by(args_class, spec.name)
        dashed = "--" + spec.name.replace("_", "-")
        flags = [dashed, "--" + spec.name] if "_" in spec.name else [dashed]
        line = spec.metadata["help"]  # a default decided by the run says so in its help
        bounds = _range_text(_bounds(args_class, spec.name))
        facts = ([] if "default:" in line else [f"default: {_shown(spec.default)}"]) + ([bounds] if bounds else [])
        line = f"{line} ({'; '.join(facts)})" if facts else line
        kind = _flag(hints[spec.name])
        groups[owner].add_argument(*flags, dest=spec.name, help=line.replace("%", "%%"), **kind)
    given = vars(parser.parse_args(argv))

    values: dict[str, Any] = {}
    config_file = given.pop("config", None)
    if config_file is not None:
        values = _read_config_file(config_file, hints, parser)
    values.update(given)
    for name, value in values.items():
        if value == "none" and _is_optional(hints[name]):
            values[name] = value = None
        if isinstance(value, int | float) and not isinstance(value, bool) and not _in_range(value, name, args_class):
            kind = "a finite number" if isinstance(value, float) else "an integer"
            parser.error(
                f"--{name.replace('_', '-')} {value}: expected {kind} {_range_text(_bounds(args_class, name))}".rstrip()
            )
    return args_class(**values)


def _bounds(args_class: type, name: str) -> dict[str, float]:
    """minimum / above / below of a number setting, as the group that declares it gives them."""
    metadata = _declared_by(args_class, name).__dataclass_fields__[name].metadata
    return {key: value for key, value in metadata.items() if key != "help"}


def _range_text(bounds: dict[str, float]) -> str:
    words = {"minimum": "at least", "above": "above", "below": "below"}
    return " and ".join(f"{words[key]} {value:g}" for key, value in bounds.items())


def _in_range(value: float, name: str, args_class: type) -> bool:
    bounds = _bounds(args_class, name)
    return (
        math.isfinite(value)
        and value >= bounds.get("minimum", -math.inf)
        and value > bounds.get("above", -math.inf)
        and value < bounds.get("below", math.inf)
    )


def _declared_by(args_class: type, name: str) -> type:
    """The most basic class that declares `name`: a default changed by a script stays in its group."""
    return next(c for c in reversed(args_class.__mro__) if name in c.__dict__.get("__annotations__", {}))


def _shown(default: Any) -> str:
    if default is None:
        return "none"
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, str) and Path(default).is_absolute() and Path(default).is_relative_to(Path.cwd()):
        return str(Path(default).relative_to(Path.cwd()))  # gaze-base, run from the repository
    return str(default)


def _flag(hint: Any) -> dict[str, Any]:
    """argparse's keywords for a field of type `hint`."""
    kind = _without_none(hint)
    if kind is bool:
        return {"type": _parse_bool, "nargs": "?", "const": True, "metavar": "true|false"}
    if typing.get_origin(kind) is Literal:
        choices = [*typing.get_args(kind), *(["none"] if _is_optional(hint) else [])]
        return {"choices": choices, "metavar": "{" + ",".join(choices) + "}"}
    if typing.get_origin(kind) is list:
        return {"nargs": "+", "metavar": "VALUE"}
    return {"type": _parse_optional(kind) if _is_optional(hint) else kind, "metavar": kind.__name__.upper()}


def _parse_optional(kind: type) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        return "none" if text.lower() in ("none", "null") else kind(text)

    parse.__name__ = kind.__name__  # argparse names the type in its "invalid value" message
    return parse


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _is_optional(hint: Any) -> bool:
    return isinstance(hint, types.UnionType) and type(None) in typing.get_args(hint)


def _without_none(hint: Any) -> Any:
    if not _is_optional(hint):
        return hint
    (kind,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    return kind


def _read_config_file(path: Path, hints: dict[str, Any], parser: argparse.ArgumentParser) -> dict[str, Any]:
    """The file's settings, each checked against its field's type (YAML reads `5e-5` as a string: a number
    field takes it)."""
    try:
        from_file = yaml.load(path.read_text(encoding="utf-8"), Loader=_NoAliasLoader) or {}
    except yaml.MarkedYAMLError as error:  # one line: where, and what
        mark = error.problem_mark
        parser.error(f"{path}, line {mark.line + 1}, column {mark.column + 1}: {error.problem}")
    except (OSError, yaml.YAMLError) as error:
        parser.error(f"{path}: {error}")
    if not isinstance(from_file, dict):
        parser.error(f"{path}: expected a mapping of settings, got {type(from_file).__name__}")
    unknown = sorted(set(from_file) - set(hints))
    if unknown:
        parser.error(f"{path}: unknown keys {unknown}; known keys are {sorted(hints)}")
    values = {}
    for name, value in from_file.items():
        try:
            values[name] = _checked(value, hints[name])
        except (TypeError, ValueError):
            parser.error(f"{path}: {name} should be {_describe(hints[name])}, got {value!r}")
    return values


class _NoAliasLoader(yaml.SafeLoader):
    """YAML's safe loader without aliases (`*name`): a settings file needs none, and nested aliases make a
    few hundred bytes into billions of values."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not allowed", self.peek_event().start_mark
            )
        return super().compose_node(parent, index)


def _checked(value: Any, hint: Any) -> Any:
    if value is None:
        if _is_optional(hint):
            return None
        raise TypeError
    kind = _without_none(hint)
    if typing.get_origin(kind) is Literal:
        if value not in typing.get_args(kind):
            raise ValueError
        return value
    if typing.get_origin(kind) is list:
        items = value if isinstance(value, list) else [value]  # one file needs no list
        return [_checked(item, str) for item in items]
    if kind is float and not isinstance(value, bool) and isinstance(value, int | float | str):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError
    return value


def _describe(hint: Any) -> str:
    kind = _without_none(hint)
    if typing.get_origin(kind) is Literal:
        text = "one of " + ", ".join(typing.get_args(kind))
    elif typing.get_origin(kind) is list:
        text = "a list of strings"
    else:
        text = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[kind]
    return text + (" or null" if _is_optional(hint) else "")
