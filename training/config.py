"""Settings of a training run: defaults ← `--config FILE.yaml` ← command-line flags.

`COMMON` holds the settings every training script shares, with the same meaning everywhere: the
tokenizer and model sizes, optimization, evaluation cadence, checkpoints and resume. A script adds
its data settings and may change a default (pretraining uses larger batches, for instance).
"""

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import yaml

COMMON: dict[str, Any] = {
    # tokenizer and model (sizes are ignored with --init-from, which brings its own)
    # a tokenizer folder, or `train`; default: the --init-from folder's, else gaze-base's (training.train)
    # or one trained on the text (training.pretrain)
    "tokenizer": None,
    "vocab_size": 8192,
    "max_seq_length": 128,
    "init_from": None,  # start from this saved Gaze folder instead of random weights
    "hidden_size": 256,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "intermediate_size": 1024,
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    # optimization
    "seed": 42,
    "per_device_train_batch_size": 32,
    "per_device_eval_batch_size": 128,
    "gradient_accumulation_steps": 1,
    "learning_rate": 5e-4,
    "weight_decay": 0.01,
    "adam_beta2": 0.98,
    "max_grad_norm": 1.0,
    "lr_scheduler": "linear",  # or cosine, constant_with_warmup, ...
    "warmup_ratio": 0.1,
    "num_train_epochs": 3,
    "max_steps": 0,  # > 0 overrides num_train_epochs
    "mixed_precision": "no",  # or bf16
    # evaluation and bookkeeping
    "eval_steps": 0,  # 0: evaluate at the end of every epoch
    "logging_steps": 50,
    "metric_for_best_model": "loss",  # a key of the script's evaluation: loss, accuracy, ...
    "load_best_model_at_end": True,  # the saved folder holds the best weights, not the last
    "early_stopping_patience": 0,  # stop after this many evaluations without improvement; 0: never
    "output_dir": "runs/gaze",
    "overwrite_output_dir": False,  # start over in an --output-dir that holds something
    "save_steps": 500,  # a resumable checkpoint every N optimizer steps
    "save_total_limit": 2,
    "resume": False,  # continue from the latest checkpoint in --output-dir
    "resume_from": None,  # or from this checkpoint folder
}


class RunError(Exception):
    """A setting, file or folder the run refuses; `run_script` prints it as one `error:` line."""


def run_script(train: Callable[[SimpleNamespace], dict], cfg: SimpleNamespace) -> dict:
    """Run `train(cfg)`; a refusal or a diverged run ends the process with one line, not a traceback."""
    try:
        return train(cfg)
    except (RunError, FloatingPointError) as error:
        sys.exit(f"error: {error}")


# Folder settings that can be switched off with the word `none`, on the command line or in YAML.
OPTIONAL_PATHS = {"init_from", "tokenizer", "resume_from", "validation_file", "test_file"}
# Numbers whose default (None) is decided by the run: read as floats (YAML reads `5e-5` as a string).
OPTIONAL_NUMBERS = {"learning_rate", "classifier_dropout"}


def parse_config(description: str, defaults: dict[str, Any], argv: list[str] | None = None) -> SimpleNamespace:
    """Every key of `defaults` can be set in `--config FILE.yaml` and overridden as `--some-key VALUE`."""
    parser = argparse.ArgumentParser(description=description, argument_default=argparse.SUPPRESS)
    parser.add_argument("--config", type=Path, help="YAML file of settings; command-line flags override it")
    for key, default in defaults.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(default, bool):
            parser.add_argument(flag, type=_parse_bool, nargs="?", const=True, metavar="true|false")
        else:
            kind, name = (float, "FLOAT") if key in OPTIONAL_NUMBERS else (_parser_for(default), type(default).__name__)
            parser.add_argument(flag, type=kind, metavar=name.upper())
    args = vars(parser.parse_args(argv))

    values = dict(defaults)
    config_file = args.pop("config", None)
    if config_file is not None:
        try:
            from_file = yaml.safe_load(config_file.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as error:
            parser.error(f"{config_file}: {error}")
        if not isinstance(from_file, dict):
            parser.error(f"{config_file}: expected a mapping of settings, got {type(from_file).__name__}")
        unknown = sorted(set(from_file) - set(defaults))
        if unknown:
            parser.error(f"{config_file}: unknown keys {unknown}; known keys are {sorted(defaults)}")
        values.update({key: _coerce(key, value, defaults[key], parser) for key, value in from_file.items()})
    values.update(args)
    for key in OPTIONAL_PATHS & set(values):
        if isinstance(values[key], str) and values[key].lower() in ("none", "null"):
            values[key] = None
    return SimpleNamespace(**values)


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _parser_for(default: Any) -> Callable[[str], Any]:
    if default is None:
        return yaml.safe_load  # None-default keys take a YAML scalar: a number, a path, null
    if isinstance(default, float):
        return float
    return type(default)


def _coerce(key: str, value: Any, default: Any, parser: argparse.ArgumentParser) -> Any:
    if key in OPTIONAL_NUMBERS and value is not None:
        try:
            return float(value)
        except (TypeError, ValueError):
            parser.error(f"config key {key!r} should be a number, got {value!r}")
    if default is None or value is None or isinstance(value, type(default)):
        return value
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    parser.error(f"config key {key!r} should be {type(default).__name__}, got {value!r}")
