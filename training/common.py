"""Plumbing shared by the fine-tuning (train.py) and pretraining (pretrain.py) scripts.

Configuration, the Accelerator, deterministic batching, optimizer and schedule, and checkpoints
that are written atomically and resume to bit-identical weights.
"""

import argparse
import contextlib
import errno
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
import yaml
from accelerate import Accelerator, PartialState
from accelerate.utils import set_seed
from torch.utils.data import DataLoader, Sampler
from transformers import AutoTokenizer, get_scheduler

from model import GazeConfig
from model.tokenization import train_tokenizer

# ---------------------------------------------------------------------------------------------
# Configuration: defaults ← YAML file ← command-line overrides
# ---------------------------------------------------------------------------------------------


def parse_config(description: str, defaults: dict[str, Any], argv: list[str] | None = None) -> SimpleNamespace:
    """Every key of `defaults` can be set in `--config FILE.yaml` and overridden as `--some-key VALUE`."""
    parser = argparse.ArgumentParser(description=description, argument_default=argparse.SUPPRESS)
    parser.add_argument("--config", type=Path, help="YAML file of settings; command-line flags override it")
    for key, default in defaults.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(default, bool):
            parser.add_argument(flag, type=_parse_bool, nargs="?", const=True, metavar="true|false")
        else:
            parser.add_argument(flag, type=_parser_for(default), metavar=type(default).__name__.upper())
    args = vars(parser.parse_args(argv))

    values = dict(defaults)
    config_file = args.pop("config", None)
    if config_file is not None:
        from_file = yaml.safe_load(config_file.read_text(encoding="utf-8")) or {}
        unknown = sorted(set(from_file) - set(defaults))
        if unknown:
            parser.error(f"{config_file}: unknown keys {unknown}; known keys are {sorted(defaults)}")
        values.update({key: _coerce(key, value, defaults[key], parser) for key, value in from_file.items()})
    values.update(args)
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
    if default is None or value is None or isinstance(value, type(default)):
        return value
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    parser.error(f"config key {key!r} should be {type(default).__name__}, got {value!r}")


# ---------------------------------------------------------------------------------------------
# Accelerator
# ---------------------------------------------------------------------------------------------


def make_accelerator(cfg: SimpleNamespace) -> Accelerator:
    """An Accelerator on GPU when there is one, else CPU.

    `cpu=True` matters on CPU machines: with it, `accelerate launch --multi_gpu --num_processes N`
    runs N data-parallel processes over gloo; without it, N independent copies (see NOTES.md).
    """
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(),
        mixed_precision=cfg.mixed_precision,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
    )
    set_seed(cfg.seed)
    share = len(os.sched_getaffinity(0)) // accelerator.num_processes
    if accelerator.device.type == "cpu" and torch.get_num_threads() < share:
        accelerator.print(
            f"warning: training on CPU with {torch.get_num_threads()} thread(s) per process where {share} are "
            "free; plain `accelerate launch` sets OMP_NUM_THREADS=1 on CPU: pass "
            f"`--num_cpu_threads_per_process {share}` to use them (about 1.5x faster on 2 cores)"
        )
    return accelerator


# ---------------------------------------------------------------------------------------------
# Batching: an order that depends only on (seed, epoch), so resume can replay it exactly
# ---------------------------------------------------------------------------------------------


class EpochSampler(Sampler[int]):
    """Shuffles with its own generator seeded by (seed, epoch), never the global RNG.

    With `group_by_length`, indices are shuffled, cut into mega-chunks of 64 batches, sorted by
    length inside each chunk and the resulting batches shuffled again: batches hold texts of
    similar length (little padding) while their order stays random.
    """

    def __init__(self, lengths: list[int], seed: int, batch_size: int, group_by_length: bool = False):
        self.lengths = lengths
        self.seed = seed
        self.batch_size = batch_size
        self.group_by_length = group_by_length
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(len(self.lengths), generator=generator).tolist()
        if not self.group_by_length:
            return iter(order)
        chunk = self.batch_size * 64
        batches = []
        for start in range(0, len(order), chunk):
            by_length = sorted(order[start : start + chunk], key=lambda i: self.lengths[i], reverse=True)
            batches += [by_length[i : i + self.batch_size] for i in range(0, len(by_length), self.batch_size)]
        shuffled = torch.randperm(len(batches), generator=generator).tolist()
        return iter([index for b in shuffled for index in batches[b]])


def make_dataloader(
    dataset: Any,
    collate_fn: Callable,
    batch_size: int,
    seed: int,
    shuffle: bool,
    lengths: list[int] | None = None,
    group_by_length: bool = False,
) -> DataLoader:
    """A DataLoader that never draws from the global RNG (whose state also drives dropout)."""
    sampler = EpochSampler(lengths or [0] * len(dataset), seed, batch_size, group_by_length) if shuffle else None
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        collate_fn=collate_fn,
        generator=torch.Generator().manual_seed(seed),
    )


# ---------------------------------------------------------------------------------------------
# Optimizer and schedule
# ---------------------------------------------------------------------------------------------


def make_optimizer(model: torch.nn.Module, cfg: SimpleNamespace) -> torch.optim.AdamW:
    """AdamW; biases, norms and embeddings get no weight decay (decaying them only hurts)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 or "embeddings" in name else decay).append(param)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=(0.9, cfg.adam_beta2), eps=1e-6)


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: SimpleNamespace, total_steps: int):
    """Warmup then decay over `total_steps` optimizer steps, once the scheduler is `accelerator.prepare`d.

    A prepared scheduler (without split_batches) is stepped once per process at every optimizer
    step, so it is built for total_steps × num_processes of its own steps.
    """
    n = PartialState().num_processes
    warmup = math.ceil(cfg.warmup_ratio * total_steps)
    return get_scheduler(cfg.lr_scheduler, optimizer, num_warmup_steps=warmup * n, num_training_steps=total_steps * n)


def check_finite(loss: torch.Tensor, step: int) -> None:
    if not torch.isfinite(loss):
        raise FloatingPointError(
            f"loss is {loss.item()} at optimizer step {step}: training diverged. "
            "Lower --learning-rate, raise --warmup-ratio or use --mixed-precision no."
        )


# ---------------------------------------------------------------------------------------------
# Checkpoints: written to a temporary folder, then renamed into place
# ---------------------------------------------------------------------------------------------


class Checkpoints:
    """Resumable training states under `output_dir/checkpoints/step-N`, the newest `keep` kept.

    A state is saved into a hidden temporary folder and renamed when complete, so a crash while
    saving leaves the previous checkpoints untouched; an unfinished temporary folder is ignored.
    """

    def __init__(self, output_dir: str | Path, keep: int):
        self.root = Path(output_dir) / "checkpoints"
        self.keep = keep

    def all(self) -> list[Path]:
        found = [p for p in self.root.glob("step-*") if (p / "training_state.json").exists()]
        return sorted(found, key=lambda p: int(p.name.removeprefix("step-")))

    def latest(self) -> Path | None:
        found = self.all()
        return found[-1] if found else None

    def save(self, accelerator: Accelerator, step: int, state: dict[str, Any]) -> Path:
        """Collective: every process calls it; the main process writes."""
        final = self.root / f"step-{step}"
        staging = self.root / f".tmp-step-{step}"
        if accelerator.is_main_process:
            self.root.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(staging, ignore_errors=True)
        accelerator.wait_for_everyone()
        try:
            accelerator.save_state(str(staging))
            if accelerator.is_main_process:
                _write_json(staging / "training_state.json", {**state, "step": step})
        except Exception as error:  # a full disk may come as torch's RuntimeError or a SafetensorError
            if accelerator.is_main_process:
                shutil.rmtree(staging, ignore_errors=True)  # the partial state would keep the disk full
            previous = self.latest()
            raise OSError(
                getattr(error, "errno", None) or errno.EIO,
                f"could not save checkpoint step-{step} in {self.root} ({type(error).__name__}: {error}; "
                f"{shutil.disk_usage(self.root).free:,} bytes free); the previous checkpoint "
                f"{previous.name if previous else '(none)'} is intact",
            ) from error
        if accelerator.is_main_process:
            shutil.rmtree(final, ignore_errors=True)
            os.replace(staging, final)
            for old in self.all()[: -self.keep]:
                shutil.rmtree(old)
        accelerator.wait_for_everyone()
        return final

    @staticmethod
    def load(accelerator: Accelerator, path: str | Path) -> dict[str, Any]:
        path = Path(path)
        if not (path / "training_state.json").exists():
            raise FileNotFoundError(f"{path} is not a complete checkpoint (no training_state.json)")
        accelerator.load_state(str(path))
        return json.loads((path / "training_state.json").read_text())


def resume_point(cfg: SimpleNamespace) -> Path | None:
    """The checkpoint that `--resume-from DIR` or `--resume` (latest in --output-dir) names."""
    if cfg.resume_from:
        return Path(cfg.resume_from)
    if cfg.resume:
        latest = Checkpoints(cfg.output_dir, keep=cfg.save_total_limit).latest()
        if latest is None:
            raise FileNotFoundError(f"--resume: no checkpoint under {Path(cfg.output_dir) / 'checkpoints'}")
        return latest
    return None


def new_model_config(cfg: SimpleNamespace, tokenizer, **extra: Any) -> GazeConfig:
    """A GazeConfig for a model trained from scratch: sizes from the settings, ids from the tokenizer."""
    return GazeConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        intermediate_size=cfg.intermediate_size,
        max_position_embeddings=cfg.max_seq_length,
        hidden_dropout_prob=cfg.hidden_dropout_prob,
        attention_probs_dropout_prob=cfg.attention_probs_dropout_prob,
        pad_token_id=tokenizer.pad_token_id,
        unk_token_id=tokenizer.unk_token_id,
        cls_token_id=tokenizer.cls_token_id,
        sep_token_id=tokenizer.sep_token_id,
        mask_token_id=tokenizer.mask_token_id,
        **extra,
    )


def load_or_train_tokenizer(
    given: str | None,
    texts: Callable[[], Iterable[str]],
    vocab_size: int,
    max_length: int,
    accelerator: Accelerator,
    run_copy: Path,
    start: Path | None,
):
    """The `given` tokenizer folder, the one of the run being resumed, or one trained on `texts()`.

    WordPiece training is not deterministic (ties between merges break differently from run to
    run), so a trained tokenizer is trained once, by the main process, and kept beside the
    checkpoints (`run_copy`): every process loads that copy, and so does a resumed run.
    """
    if given:
        return AutoTokenizer.from_pretrained(given)
    if start is not None:
        saved = Path(start).parent / "tokenizer"
        if not (saved / "tokenizer.json").exists():
            raise FileNotFoundError(f"{saved}: the tokenizer of the run to resume is missing; pass --tokenizer DIR")
        tokenizer = AutoTokenizer.from_pretrained(saved)
        if accelerator.is_main_process and saved.resolve() != run_copy.resolve():
            tokenizer.save_pretrained(run_copy)
        return tokenizer
    if accelerator.is_main_process:
        trained = train_tokenizer(texts(), vocab_size, max_length, show_progress=False)
        staging = run_copy.with_name(".tmp-tokenizer")
        shutil.rmtree(staging, ignore_errors=True)
        trained.save_pretrained(staging)
        shutil.rmtree(run_copy, ignore_errors=True)
        staging.replace(run_copy)
    accelerator.wait_for_everyone()
    return AutoTokenizer.from_pretrained(run_copy)


def save_pretrained_atomically(
    model: torch.nn.Module,
    tokenizer: Any,
    output_dir: str | Path,
    write_card: Callable[[Path], None],
    state_dict: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write the final HF folder into a temporary folder inside `output_dir`, then move its files in.

    Each file is complete before it is renamed over its predecessor, so a crash never leaves a
    half-written weight file; other files in `output_dir` (checkpoints/, metrics.jsonl) stay.
    `state_dict` (from the collective `accelerator.get_state_dict`) is needed where the model is
    sharded (FSDP); by default the model's own weights are written.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=".tmp-model-", dir=output_dir))
    staging = temporary / output_dir.resolve().name  # named like the output: the card's title is the folder name
    try:
        model.save_pretrained(staging, state_dict=state_dict)
        tokenizer.save_pretrained(staging)
        write_card(staging)
    except Exception as error:  # a full disk may come as a SafetensorError
        raise OSError(
            getattr(error, "errno", None) or errno.EIO,
            f"could not save the model to {output_dir} ({type(error).__name__}: {error}; "
            f"{shutil.disk_usage(output_dir).free:,} bytes free); the files already there are untouched",
        ) from error
    else:
        for item in staging.iterdir():
            os.replace(item, output_dir / item.name)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


@contextlib.contextmanager
def replacing_folder(target: Path) -> Iterator[Path]:
    """Yield an empty folder next to `target`; when the block ends without an error, it replaces
    `target` whole (made readable by all: a model folder is meant to be shared). On an error the
    partial folder is removed and `target` is untouched."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    try:
        yield staging
        staging.chmod(0o755)  # mkdtemp makes it private
        for file in staging.iterdir():
            file.chmod(0o644)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
