"""Where a run starts: its tokenizer and its model, fresh or from a saved Gaze folder (`--init-from`).

Only our own classes read a folder here, never transformers' Auto classes: a BERT, DistilBERT or
RoBERTa folder or hub id is imported into Gaze's modules first (training/import_hf.py), and any other
model type (or code of its own, `auto_map`) is refused with one line instead of being run.
"""

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from safetensors import SafetensorError
from safetensors.torch import load_file
from tokenizers import Tokenizer
from transformers import PreTrainedTokenizerFast

from model import GazeConfig
from model.folder import ModelLoadError, one_line, read_config
from model.modeling_gaze import GazePreTrainedModel
from model.tokenization import named_special_tokens, train_tokenizer, wrap
from training import gaze_base
from training.checkpoints import staged
from training.config import ModelSizeArgs, RunArgs, RunError, TokenizerArgs
from training.import_hf import import_checkpoint

GAZE_BASE = gaze_base.GAZE_BASE  # the default start: all-MiniLM-L6-v2, imported (built on first use)
# The encoder of word vectors trained here on IMDB text only (no outside weights); its vocabulary is the
# default of a model trained from scratch.
GAZE_IMDB_VECTORS = GAZE_BASE.with_name("gaze-imdb-vectors")


def resolve_start(init_from: str | None, output_dir: str, accelerator: Accelerator) -> str | None:
    """The Gaze folder `init_from` names: gaze-base is built on first use, and a BERT-family folder or
    hub id is imported (by the main process) into the run's checkpoints/start folder."""
    if not init_from:
        return None
    folder = Path(init_from)
    if folder == GAZE_BASE and not (folder / "model.safetensors").is_file():
        if accelerator.is_main_process:
            accelerator.print(f"Building {GAZE_BASE} from {gaze_base.PACKAGE}=={gaze_base.VERSION} (once)")
            gaze_base.build()
        accelerator.wait_for_everyone()
    if _model_type(folder) == "gaze":
        return init_from
    target = Path(output_dir) / "checkpoints" / "start"
    if accelerator.is_main_process:
        try:
            import_checkpoint(init_from, target)
        except RunError as error:
            raise RunError(f"--init-from {error}") from None
        accelerator.print(f"Imported {init_from} into {target}")
    accelerator.wait_for_everyone()
    return str(target)


def _model_type(folder: Path) -> str | None:
    try:
        raw = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return raw.get("model_type") if isinstance(raw, dict) else None


def load_tokenizer(folder: str | Path, max_length: int) -> PreTrainedTokenizerFast:
    """The tokenizer of a folder: its `tokenizer.json` only (no code, no hub lookup), with the special
    tokens its files name (an imported RoBERTa's `<s>`, ...), else Gaze's; they must be
    in its vocabulary."""
    path = Path(folder) / "tokenizer.json"
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as error:
        raise RunError(f"{path}: not a readable tokenizer file ({error})") from None
    named = named_special_tokens(folder)
    missing = [token for token in named.values() if tokenizer.token_to_id(token) is None]
    if missing:
        raise RunError(f"{path}: the vocabulary lacks the special tokens {missing}")
    return wrap(tokenizer, max_length, **named)


def load_or_train_tokenizer(
    cfg: TokenizerArgs,
    texts: Callable[[], Iterable[str]],
    accelerator: Accelerator,
    run_copy: Path,
    start: Path | None,
    fallback: str | Path | None = None,
) -> PreTrainedTokenizerFast:
    """`--tokenizer DIR`, else `fallback`'s (the `--init-from` folder, or a shipped vocabulary), else the one
    of the run being resumed, else one trained on `texts()` (also with `--tokenizer train`).

    WordPiece training is not deterministic (ties between merges break differently from run to
    run), so a trained tokenizer is trained once, by the main process, and kept beside the
    checkpoints (`run_copy`): every process loads that copy, and so does a resumed run.
    """
    given = cfg.tokenizer or fallback
    if given and given != "train":
        return load_tokenizer(given, cfg.max_seq_length)
    if start is not None:
        saved = Path(start).parent / "tokenizer"
        if not (saved / "tokenizer.json").exists():
            raise RunError(f"{saved}: the tokenizer of the run to resume is missing; pass --tokenizer DIR")
        if accelerator.is_main_process and saved.resolve() != run_copy.resolve():
            load_tokenizer(saved, cfg.max_seq_length).save_pretrained(run_copy)
        return load_tokenizer(saved, cfg.max_seq_length)
    if accelerator.is_main_process:
        trained = train_tokenizer(texts(), cfg.vocab_size, cfg.max_seq_length, show_progress=False)
        with staged(run_copy) as staging:
            trained.save_pretrained(staging)
    accelerator.wait_for_everyone()
    return load_tokenizer(run_copy, cfg.max_seq_length)


def read_gaze_config(folder: str | Path) -> GazeConfig:
    """The folder's GazeConfig, or a RunError saying in one line why it is not a Gaze folder."""
    try:
        return read_config(folder)
    except ModelLoadError as error:
        raise RunError(f"--init-from {folder}: {error}") from None


def sequence_length(cfg: RunArgs) -> int:
    """`max_seq_length`, but no longer than the positions of the `--init-from` folder."""
    if not cfg.init_from:
        return cfg.max_seq_length
    config = read_gaze_config(cfg.init_from)
    return min(cfg.max_seq_length, config.max_position_embeddings - config.position_offset)


def new_model_config(cfg: ModelSizeArgs | TokenizerArgs, tokenizer, **extra: Any) -> GazeConfig:
    """A GazeConfig for a model trained from scratch: sizes from the settings, ids from the tokenizer,
    dropout and the task's settings from `extra`."""
    try:
        return _new_config(cfg, tokenizer, **extra)
    except Exception as error:  # sizes out of range, heads that do not divide the width, ...
        raise RunError(f"model settings: {one_line(error)}") from None


def _new_config(cfg: ModelSizeArgs | TokenizerArgs, tokenizer, **extra: Any) -> GazeConfig:
    return GazeConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        intermediate_size=cfg.intermediate_size,
        max_position_embeddings=cfg.max_seq_length,
        pad_token_id=tokenizer.pad_token_id,
        unk_token_id=tokenizer.unk_token_id,
        cls_token_id=tokenizer.cls_token_id,
        sep_token_id=tokenizer.sep_token_id,
        mask_token_id=tokenizer.mask_token_id,
        **extra,
    )


def build_model(
    model_class: type[GazePreTrainedModel],
    cfg: RunArgs,
    tokenizer,
    log: Callable[[str], None],
    **task_config: Any,
) -> tuple[GazePreTrainedModel, bool]:
    """A fresh `model_class`, from scratch or with the encoder of `--init-from`, and whether its head was kept.

    Any Gaze folder works as a start: a bare encoder, an MLM model or a classifier. Its head is
    kept only where it means the same thing here (same architecture and, for a classifier, the
    same labels and the same kind: single-label softmax or multi-label sigmoid); otherwise the new
    head starts random (seeded) and the log says so.
    """
    dropout = {
        "hidden_dropout_prob": cfg.hidden_dropout_prob,
        "attention_probs_dropout_prob": cfg.attention_probs_dropout_prob,
    }
    if not cfg.init_from:
        return model_class(new_model_config(cfg, tokenizer, **dropout, **task_config)), False
    folder = Path(cfg.init_from)
    source = read_gaze_config(folder)
    if source.vocab_size < len(tokenizer):
        raise RunError(f"--init-from {folder}: vocabulary of {source.vocab_size} < the tokenizer's {len(tokenizer)}")
    config = GazeConfig.from_dict(source.to_dict() | dropout | task_config)
    model = model_class(config)
    try:
        weights = load_file(folder / "model.safetensors")
    except (OSError, SafetensorError) as error:
        raise RunError(f"--init-from {folder}: cannot read model.safetensors ({error})") from None
    wanted = model.state_dict()
    renamed = {f"gaze.{k.removeprefix('gaze.')}": v for k, v in weights.items()}  # a bare encoder has no prefix
    encoder = {k: v for k, v in renamed.items() if k.startswith("gaze.") and k in wanted}
    missing = sorted(k for k in wanted if k.startswith("gaze.") and k not in encoder)
    if missing:
        raise RunError(f"--init-from {folder}: model.safetensors lacks encoder weights {missing[:3]} ...")
    misshapen = [k for k, v in encoder.items() if v.shape != wanted[k].shape]
    if misshapen:
        k = misshapen[0]
        raise RunError(
            f"--init-from {folder}: {k} has shape {list(encoder[k].shape)}, its config.json makes it "
            f"{list(wanted[k].shape)} ({len(misshapen)} tensor(s) differ)"
        )
    broken = [k for k, v in weights.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if broken:
        raise RunError(f"--init-from {folder}: {broken[0]} holds NaN or infinite values ({len(broken)} tensor(s) do)")
    head_keys = [k for k in wanted if not k.startswith("gaze.") and k not in model.all_tied_weights_keys]
    same_kind = _is_multi_label(source) == _is_multi_label(config)
    keep_head = source.architectures == [model_class.__name__] and source.id2label == config.id2label and same_kind
    keep_head = keep_head and all(k in weights and weights[k].shape == wanted[k].shape for k in head_keys)
    model.load_state_dict(encoder | ({k: weights[k] for k in head_keys} if keep_head else {}), strict=False)
    what = "its head too" if keep_head else f"a new {model_class.__name__.removeprefix('GazeFor')} head"
    if not keep_head and source.architectures == ["GazeForSequenceClassification"]:
        kinds = "" if same_kind else f"; it was {_kind(source)}, this model is {_kind(config)}"
        what += f" (its classifier for {list(source.id2label.values())} is replaced{kinds})"
    log(f"Starting from {folder}: its encoder ({len(encoder)} tensors) and {what}")
    return model, keep_head


def _is_multi_label(config: GazeConfig) -> bool:
    return config.problem_type == "multi_label_classification"


def _kind(config: GazeConfig) -> str:
    return "multi-label" if _is_multi_label(config) else "single-label"
