"""The machinery under a training run: the Accelerator, deterministic batches, optimizer, schedule."""

import math
import os
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import broadcast_object_list, set_seed
from torch.utils.data import DataLoader, Sampler
from transformers import get_scheduler

from inference.precision import BF16_MIN_SPEEDUP, PRECISIONS, faster_precision
from model import GazeConfig, GazeForSequenceClassification
from training.config import RunArgs


def make_accelerator(
    seed: int,
    mixed_precision: str = "no",
    gradient_accumulation_steps: int = 1,
    report_to: str = "none",
    output_dir: str | None = None,
) -> Accelerator:
    """An Accelerator on GPU when there is one, else CPU; `mixed_precision` "auto" is measured
    (`choose_mixed_precision`); `report_to` "tensorboard" logs into `output_dir`/tensorboard.

    `cpu=True` matters on CPU machines: with it, `accelerate launch --multi_gpu --num_processes N`
    runs N data-parallel processes over gloo; without it, N independent copies of the whole training (accelerate
    1.15; tests/test_training.py checks that two processes match one).
    """
    on_cpu = not torch.cuda.is_available()
    state = PartialState(cpu=on_cpu)  # the process group, before the Accelerator: the choice is shared over it
    if mixed_precision == "auto":
        mixed_precision = choose_mixed_precision(state)
    elif mixed_precision == "bf16" and on_cpu and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        state.print(
            "warning: --mixed-precision bf16 on a CPU without bf16 instructions: autocast emulates it, often"
            " several times slower than fp32 (--mixed-precision auto measures)"
        )
    accelerator = Accelerator(
        cpu=on_cpu,
        mixed_precision=mixed_precision,
        gradient_accumulation_steps=gradient_accumulation_steps,
        log_with=None if report_to == "none" else report_to,
        project_dir=output_dir,
    )
    set_seed(seed)
    share = len(os.sched_getaffinity(0)) // accelerator.num_processes
    if accelerator.device.type == "cpu" and torch.get_num_threads() < share:
        accelerator.print(
            f"warning: training on CPU with {torch.get_num_threads()} thread(s) per process where {share} are "
            "free; plain `accelerate launch` sets OMP_NUM_THREADS=1 on CPU: pass "
            f"`--num_cpu_threads_per_process {share}` to use them (about 1.5x faster on 2 cores)"
        )
    return accelerator


def choose_mixed_precision(state: PartialState) -> str:
    """bf16 or no: bf16 on a GPU that supports it; on CPU, whichever trains a probe faster (`probe_step_seconds`),
    bf16 only when clearly faster, as the server decides (inference/precision.py). The main process measures and
    every process takes its answer: all must compute in the same precision."""
    if torch.cuda.is_available():
        choice = "bf16" if torch.cuda.is_bf16_supported() else "no"
        state.print(f"Mixed precision (auto): {choice} (this GPU {'has' if choice == 'bf16' else 'lacks'} bf16)")
        return choice
    answer: list[Any] = [None]
    if state.is_main_process:
        seconds = probe_step_seconds()
        precision = faster_precision(seconds)
        answer = [("bf16" if precision == "bf16" else "no", seconds)]
    ((choice, seconds),) = broadcast_object_list(answer)
    state.print(
        f"Mixed precision (auto): {choice} (a probe training step: fp32 {seconds['fp32'] * 1000:.0f} ms, bf16 "
        f"{seconds['bf16'] * 1000:.0f} ms; bf16 is kept from {BF16_MIN_SPEEDUP}x fp32's speed; "
        "--mixed-precision no|bf16 decides without measuring)"
    )
    return choice


def probe_step_seconds(repeats: int = 3) -> dict[str, float]:
    """The median seconds of one training step, forward and backward, of a stand-in model (one block at
    gaze-base's width, 384, on 8 × 64 tokens), in fp32 and under bf16 autocast, as accelerate applies it.
    A stand-in, as the real model is built after the Accelerator. Where bf16 is emulated it is many
    times slower: its repeats stop once one is twice fp32's median."""
    config = GazeConfig(
        vocab_size=1024, hidden_size=384, num_hidden_layers=1, num_attention_heads=12, intermediate_size=1536
    )
    model = GazeForSequenceClassification(config)
    generator = torch.Generator().manual_seed(0)
    batch = {
        "input_ids": torch.randint(5, 1024, (8, 64), generator=generator),
        "labels": torch.randint(0, 2, (8,), generator=generator),
    }

    def step(precision: str) -> float:
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = model(**batch).loss
        loss.backward()
        model.zero_grad(set_to_none=True)
        return time.perf_counter() - started

    seconds = {}
    for precision in PRECISIONS:
        step(precision)  # the first run picks kernels
        times = []
        for _ in range(repeats):
            times.append(step(precision))
            if precision == "bf16" and times[-1] > 2 * seconds["fp32"]:
                break
        seconds[precision] = statistics.median(times)
    return seconds


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


def make_optimizer(model: torch.nn.Module, cfg: RunArgs, head_lr_scale: float = 1.0) -> torch.optim.AdamW:
    """AdamW; biases, norms and embeddings get no weight decay (decaying them only hurts), and the parameters
    outside the encoder (the task's head) learn at `head_lr_scale` × the learning rate.

    `fused=True`: one kernel over all tensors, on CPU as on GPU. Without it torch on CPU updates the
    tensors one by one in several passes: 23.5 ms instead of 7.7 ms for our 5.4 M parameters, 20 % of
    a training step (benchmarks/README.md, section 5). It is the Trainer's default optimizer too.
    """
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            decays = param.ndim >= 2 and "embeddings" not in name
            groups.setdefault((decays, not name.startswith("gaze.")), []).append(param)
    settings = [
        {
            "params": params,
            "weight_decay": cfg.weight_decay if decays else 0.0,
            "lr": cfg.learning_rate * (head_lr_scale if head else 1.0),
        }
        for (decays, head), params in groups.items()
    ]
    return torch.optim.AdamW(settings, lr=cfg.learning_rate, betas=(0.9, cfg.adam_beta2), eps=1e-6, fused=True)


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: RunArgs, total_steps: int):
    """Warmup then decay over `total_steps` optimizer steps, once the scheduler is `accelerator.prepare`d.

    A prepared scheduler (without split_batches) is stepped once per process at every optimizer
    step, so it is built for total_steps × num_processes of its own steps.
    """
    n = PartialState().num_processes
    warmup = math.ceil(cfg.warmup_ratio * total_steps)
    return get_scheduler(cfg.lr_scheduler, optimizer, num_warmup_steps=warmup * n, num_training_steps=total_steps * n)
