"""The machinery under a training run: the Accelerator, deterministic batches, optimizer, schedule."""

import math
import os
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import set_seed
from torch.utils.data import DataLoader, Sampler
from transformers import get_scheduler


def make_accelerator(cfg: SimpleNamespace) -> Accelerator:
    """An Accelerator on GPU when there is one, else CPU.

    `cpu=True` matters on CPU machines: with it, `accelerate launch --multi_gpu --num_processes N`
    runs N data-parallel processes over gloo; without it, N independent copies of the whole training (accelerate
    1.15; tests/test_training.py checks that two processes match one).
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


class EpochSampler(Sampler[int]):
    """Shuffles with its own generator seeded by (seed, epoch), never the global RNG, so that a
    resumed run replays the same order.

    With `group_by_length`, indices are shuffled, cut into mega-chunks of 64 batches, sorted by
    length inside each chunk and the resulting batches shuffled again: batches hold texts of
    similar length (little padding) while their order stays random.
    """

    def __init__(self, lengths: list[int], seed: int, batch_size: int, group_by_length: bool = False):
        self.lengths = lengths[:]  # a list: indexing a `datasets` Column would read Arrow on every access
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


def make_optimizer(model: torch.nn.Module, cfg: SimpleNamespace) -> torch.optim.AdamW:
    """AdamW; biases, norms and embeddings get no weight decay (decaying them only hurts).

    `fused=True`: one kernel over all tensors, on CPU as on GPU. Without it torch on CPU updates the
    tensors one by one in several passes: 23.5 ms instead of 7.7 ms for our 5.4 M parameters, 20 % of
    a training step (benchmarks/README.md, section 5). It is the Trainer's default optimizer too.
    """
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 or "embeddings" in name else decay).append(param)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=(0.9, cfg.adam_beta2), eps=1e-6, fused=True)


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: SimpleNamespace, total_steps: int):
    """Warmup then decay over `total_steps` optimizer steps, once the scheduler is `accelerator.prepare`d.

    A prepared scheduler (without split_batches) is stepped once per process at every optimizer
    step, so it is built for total_steps × num_processes of its own steps.
    """
    n = PartialState().num_processes
    warmup = math.ceil(cfg.warmup_ratio * total_steps)
    return get_scheduler(cfg.lr_scheduler, optimizer, num_warmup_steps=warmup * n, num_training_steps=total_steps * n)
