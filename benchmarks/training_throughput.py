"""Benchmark 5: training tokens/s, our accelerate loop (training/train.py) vs `transformers.Trainer`.

Same model (a from-scratch Gaze classifier of the shipped size, built by training.start.build_model),
same data (the first `--examples` SST-2 training sentences, tokenized by training.data with the same
tokenizer, max 128 tokens, padded per batch by the same collator), same per-device batch (32), same
optimizer (fused AdamW, lr 5e-4, β2 0.98, ε 1e-6, weight decay 0.01), linear schedule with 10 % warm-up,
gradient clipping at 1.0 and the same number of steps, in fp32 and in bf16 autocast. Both run as fresh
subprocesses, offline, with the same number of torch threads (`--threads`, default all cores).

The Trainer runs at its best on CPU: `use_cpu=True`, `train_sampling_strategy="group_by_length"` (its
LengthGroupedSampler: batches of similar lengths, as our `group_by_length`), `optim="adamw_torch_fused"`
(its default with torch ≥ 2.8, spelled out), `dataloader_pin_memory=False` (nothing to copy to),
`report_to="none"`, no saving, no evaluation. Left off on purpose: `torch_compile` (a different
execution, not a loop setting, open to both; with a new sequence length every batch it recompiles),
`train_sampling_strategy="batch_rebalance"` (batches of varying size: not the same batch), and
`dataloader_num_workers=1` (collation is ~1 % of a step; measured: 1.00× the Trainer without it).
The "random order" rows turn length grouping off on both sides.

Tokens are real (non-padding) tokens, counted the same way for both (the attention-mask sum). The
rate is measured over a window of steps that leaves out the first `--skip` steps (start-up, first
allocations) and the final step (ours evaluates there): tokens in the window / time of the window.
Ours reads its metrics.jsonl (tokens_seen and elapsed_s every 10 steps); the Trainer gets a callback
that stamps every step and a forward hook on the model that counts every batch's tokens. Each rate is
also given per CPU-second of the training process over the same window (`time.process_time()`, all
threads): ours runs as `training.train` with that added to its records (`ours_worker`), the Trainer's
callback reads it too. On one thread that is the run's own work whatever else the machine runs; wall
time is not (on a shared machine use `--threads 1` and the CPU-time ratios).

Also measured with 2 or more threads: ours with one process per thread of 1 thread each (`accelerate
launch --multi_gpu --num_processes N` on CPU: DDP over gloo, batch 32 per process; no CPU-time column,
which would count the main process only) and ours with 1 thread, which is what `accelerate launch
--num_processes 1` without `--num_cpu_threads_per_process` gives (it sets OMP_NUM_THREADS=1).

    python -m benchmarks.training_throughput [--steps 150] [--rounds 3] [--threads N] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import (
    ROOT,
    base_parser,
    goal,
    goals_table,
    median,
    report,
    sst2,
    table,
    tokenizer_dir,
)
from benchmarks.harness import free_port

BATCH = 32
LOG_EVERY = 10


def launch_env(hf_home: Path) -> dict[str, str]:
    env = os.environ | {"HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return env | {"TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(ROOT), "WANDB_DISABLED": "true"}


def run(command: list[str], env: dict[str, str], log: Path) -> None:
    with log.open("wb") as f:
        result = subprocess.run(command, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=1800)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command[:8])} ... failed (exit {result.returncode}):\n{log.read_text()[-4000:]}")


def ours(
    data: dict[str, Path],
    out: Path,
    steps: int,
    precision: str,
    processes: int,
    grouped: bool,
    hf_home: Path,
    threads: int | None = None,
) -> dict:
    """`accelerate launch -m training.train`. `threads` per process defaults to the cores divided among
    the processes: `accelerate launch --num_processes 1` without `--cpu` otherwise sets
    OMP_NUM_THREADS=1, and the Trainer (a plain process) would get both cores against our one."""
    threads = threads or max(1, (os.cpu_count() or 1) // processes)
    if processes > 1:
        topology = ["--multi_gpu", "--num_processes", str(processes), "--main_process_port", str(free_port())]
    else:
        topology = ["--num_processes", "1"]
    topology += ["--num_cpu_threads_per_process", str(threads)]
    command = [sys.executable, "-m", "accelerate.commands.launch", *topology, "--num_machines", "1"]
    command += ["--mixed_precision", precision, "--dynamo_backend", "no", "-m", "benchmarks.training_throughput"]
    command += ["--ours-worker"]
    command += ["--train-file", str(data["train"]), "--validation-file", str(data["validation"])]
    command += [
        "--tokenizer",
        str(data["tokenizer"]),
        "--max-seq-length",
        "128",
        "--label-names",
        "negative",
        "positive",
    ]
    command += ["--init-from", "none", "--per-device-train-batch-size", str(BATCH), "--max-steps", str(steps)]
    command += ["--seed", "42"]
    command += ["--mixed-precision", precision, "--group-by-length", str(grouped).lower()]
    command += ["--logging-steps", str(LOG_EVERY), "--eval-steps", "1000000", "--save-steps", "1000000"]
    command += ["--load-best-model-at-end", "false", "--output-dir", str(out), "--overwrite-output-dir", "true"]
    command += ["--cache-dir", str(hf_home / "datasets")]
    tic = time.perf_counter()
    run(command, launch_env(hf_home), out.with_suffix(".log"))
    wall = time.perf_counter() - tic
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {"records": [r for r in records if "tokens_seen" in r], "wall_s": wall}


def ours_worker(argv: list[str]) -> None:
    """`training.train` itself, with the process's CPU time added to every metrics.jsonl record."""
    import training.loop
    from training import train

    plain = training.loop.append_record
    training.loop.append_record = lambda path, record: plain(path, record | {"cpu_s": time.process_time()})
    train.main(argv)


def trainer(
    data: dict[str, Path],
    out: Path,
    steps: int,
    precision: str,
    grouped: bool,
    hf_home: Path,
    threads: int,
) -> dict:
    """The Trainer in a fresh process (`trainer_worker`) with `threads` torch threads."""
    command = [sys.executable, "-m", "benchmarks.training_throughput", "--trainer-worker", str(out)]
    command += ["--steps", str(steps), "--precision", precision, "--threads", str(threads)]
    command += ["--grouped"] if grouped else []
    command += ["--data", json.dumps({k: str(v) for k, v in data.items()}), "--cache-dir", str(hf_home / "datasets")]
    tic = time.perf_counter()
    run(command, launch_env(hf_home), out.with_suffix(".log"))
    wall = time.perf_counter() - tic
    return json.loads((out / "trainer_steps.json").read_text()) | {"wall_s": wall}


def trainer_worker(args: argparse.Namespace) -> None:
    """Runs in its own process: the Trainer on the same model, data and settings as ours, with every
    setting on that makes it faster on CPU without changing what is computed (see the module docstring)."""
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments
    from transformers.utils import logging as hf_logging

    from model import GazeForSequenceClassification
    from training.data import collator, load_data, tokenize
    from training.start import build_model, load_tokenizer
    from training.train import TrainArgs

    hf_logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    data_files = json.loads(args.data)
    cfg = TrainArgs(init_from=None)  # from scratch, as ours with --init-from none
    data = load_data(
        train_file=data_files["train"],
        validation_file=data_files["validation"],
        label_names=["negative", "positive"],
        cache_dir=args.cache_dir,
    )
    tokenizer = load_tokenizer(data_files["tokenizer"], 128)
    splits = tokenize(data, tokenizer, 128)
    torch.manual_seed(42)
    labels = {"id2label": data.id2label, "label2id": {name: i for i, name in data.id2label.items()}}
    model, _ = build_model(GazeForSequenceClassification, cfg, tokenizer, print, **labels)
    batch_tokens: list[int] = []
    step_times: list[float] = []
    step_cpu: list[float] = []

    def count_tokens(module, args, kwargs):  # in this process, wherever the batch was collated
        batch_tokens.append(int(kwargs["attention_mask"].sum()))

    model.register_forward_pre_hook(count_tokens, with_kwargs=True)

    class Stamp(TrainerCallback):
        def on_step_end(self, *_, **__):
            step_times.append(time.perf_counter())
            step_cpu.append(time.process_time())

    training_args = TrainingArguments(
        output_dir=args.trainer_worker,
        per_device_train_batch_size=BATCH,
        max_steps=args.steps,
        learning_rate=5e-4,
        weight_decay=0.01,
        adam_beta2=0.98,
        adam_epsilon=1e-6,
        max_grad_norm=1.0,
        lr_scheduler_type="linear",
        warmup_steps=0.1,
        bf16=args.precision == "bf16",
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        eval_strategy="no",
        logging_steps=LOG_EVERY,
        disable_tqdm=True,
        seed=42,
        # at its best on CPU: length-grouped batches, the fused AdamW kernel, no pinning (no GPU to copy to)
        train_sampling_strategy="group_by_length" if args.grouped else "random",
        optim="adamw_torch_fused",
        dataloader_pin_memory=False,
        dataloader_num_workers=0,
    )
    Trainer(
        model=model,
        args=training_args,
        train_dataset=splits["train"].remove_columns("length"),  # its sampler measures input_ids itself
        data_collator=collator(tokenizer),
        callbacks=[Stamp()],
    ).train()
    Path(args.trainer_worker).mkdir(parents=True, exist_ok=True)
    (Path(args.trainer_worker) / "trainer_steps.json").write_text(
        json.dumps({"step_times": step_times, "step_cpu": step_cpu, "batch_tokens": batch_tokens})
    )


def rate_ours(result: dict, skip: int, steps: int) -> tuple[float, float]:
    """Tokens per second and per CPU-second between the record at step `skip` and the last record
    before the final step."""
    records = {r["step"]: r for r in result["records"]}
    last = max(s for s in records if s < steps)
    a, b = records[skip], records[last]
    tokens = b["tokens_seen"] - a["tokens_seen"]
    return tokens / (b["elapsed_s"] - a["elapsed_s"]), tokens / (b["cpu_s"] - a["cpu_s"])


def rate_trainer(result: dict, skip: int, steps: int) -> tuple[float, float]:
    """The same window for the Trainer: steps skip+1 … last (its batch i is step i's batch)."""
    times, cpu, tokens = result["step_times"], result["step_cpu"], result["batch_tokens"]
    last = max(s for s in range(LOG_EVERY, steps, LOG_EVERY))
    window = sum(tokens[skip:last])
    return window / (times[last - 1] - times[skip - 1]), window / (cpu[last - 1] - cpu[skip - 1])


def write_subset(folder: Path, examples: int) -> dict[str, Path]:
    texts, labels = sst2("train")
    dev, dev_labels = sst2("dev")
    paths = {"train": folder / "train.tsv", "validation": folder / "dev.tsv", "tokenizer": tokenizer_dir()}
    for path, (t, y) in (
        (paths["train"], (texts[:examples], labels[:examples])),
        (paths["validation"], (dev, dev_labels)),
    ):
        path.write_text(
            "sentence\tlabel\n" + "".join(f"{a}\t{b}\n" for a, b in zip(t, y, strict=True)), encoding="utf-8"
        )
    return paths


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--skip", type=int, default=20, help="steps left out of the window at the start")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--examples", type=int, default=8000)
    parser.add_argument("--threads", type=int, help="torch threads per run (default: all cores)")
    parser.add_argument("--trainer-worker", help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="no", help=argparse.SUPPRESS)
    parser.add_argument("--grouped", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", help=argparse.SUPPRESS)
    if sys.argv[1:2] == ["--ours-worker"]:
        return ours_worker(sys.argv[2:])
    args = parser.parse_args()
    if args.trainer_worker:
        return trainer_worker(args)
    steps, skip, rounds = (args.steps, args.skip, args.rounds) if not args.quick else (40, 10, 1)
    cores = args.threads or os.cpu_count() or 1

    contenders = {  # name: (run, the Trainer row it is compared with)
        "ours fp32": (lambda d, o, h: ours(d, o, steps, "no", 1, True, h, cores), "Trainer fp32"),
        "Trainer fp32": (lambda d, o, h: trainer(d, o, steps, "no", True, h, cores), "Trainer fp32"),
        "ours bf16": (lambda d, o, h: ours(d, o, steps, "bf16", 1, True, h, cores), "Trainer bf16"),
        "Trainer bf16": (lambda d, o, h: trainer(d, o, steps, "bf16", True, h, cores), "Trainer bf16"),
        "ours fp32, random order": (
            lambda d, o, h: ours(d, o, steps, "no", 1, False, h, cores),
            "Trainer fp32, random order",
        ),
        "Trainer fp32, random order": (
            lambda d, o, h: trainer(d, o, steps, "no", False, h, cores),
            "Trainer fp32, random order",
        ),
    }
    if cores > 1:
        contenders |= {
            f"ours fp32, {cores} processes × 1 thread": (
                lambda d, o, h: ours(d, o, steps, "no", cores, True, h, 1),
                "Trainer fp32",
            ),
            "ours fp32, 1 thread (plain `accelerate launch`)": (
                lambda d, o, h: ours(d, o, steps, "no", 1, True, h, 1),
                "Trainer fp32",
            ),
        }
    rates: dict[str, list[float]] = {name: [] for name in contenders}  # tokens/s
    cpu_rates: dict[str, list[float]] = {name: [] for name in contenders}  # tokens per CPU-second
    walls: dict[str, list[float]] = {name: [] for name in contenders}
    with tempfile.TemporaryDirectory(prefix="gaze-train-bench-") as tmp:
        tmp = Path(tmp)
        data = write_subset(tmp, args.examples)
        names = list(contenders)
        for r in range(rounds):
            for i, name in enumerate(names[r % len(names) :] + names[: r % len(names)]):
                out = tmp / f"run-{r}-{i}"
                result = contenders[name][0](data, out, tmp / "hf-home")
                rate, cpu_rate = (rate_trainer if name.startswith("Trainer") else rate_ours)(result, skip, steps)
                rates[name].append(rate)
                cpu_rates[name].append(cpu_rate)
                walls[name].append(result["wall_s"])
                print(
                    f"  {name}: {rate:,.0f} tokens/s, {cpu_rate:,.0f} per CPU-second (wall {result['wall_s']:.0f} s)",
                    file=sys.stderr,
                    flush=True,
                )
    # The CPU time is the main process's: with several processes it leaves the others out.
    multi = [name for name in contenders if "processes" in name]
    cpu_rates = {name: v for name, v in cpu_rates.items() if name not in multi}

    def ratios(values: dict[str, list[float]]) -> dict[str, float]:
        """Each round's value over its Trainer row's in the same round, then the median over rounds:
        steadier than a ratio of medians when the machine's load drifts between rounds."""
        return {
            name: median([a / b for a, b in zip(values[name], values[peer], strict=True)])
            for name, (_, peer) in contenders.items()
            if name in values
        }

    med, cpu_med = ({name: median(v) for name, v in d.items()} for d in (rates, cpu_rates))
    ratio, cpu_ratio = ratios(rates), ratios(cpu_rates)
    rows = [
        [
            name,
            f"{med[name]:,.0f}",
            f"{ratio[name]:.2f}×",
            f"{cpu_med[name]:,.0f}" if name in cpu_med else "–",
            f"{cpu_ratio[name]:.2f}×" if name in cpu_ratio else "–",
            peer,
        ]
        for name, (_, peer) in contenders.items()
    ]
    goals = [
        goal(f"ours vs Trainer, {precision}{measure}", values[f"ours {precision}"], target)
        for target in (1.0, 1.3)
        for precision in ("fp32", "bf16")
        for measure, values in ((", tokens/s", ratio), (", tokens per CPU-second", cpu_ratio))
    ]
    window = [skip + 1, max(range(LOG_EVERY, steps, LOG_EVERY))]
    lines = [
        f"### Training throughput, batch {BATCH} per process, {steps} steps, tokens over steps "
        f"{window[0]}–{window[1]} (median of {rounds} interleaved rounds)",
        f"From-scratch Gaze classifier of the shipped size; first {args.examples:,} SST-2 training sentences; "
        f"{cores} torch thread(s) per run unless its name says otherwise. Ratio: the median over rounds of "
        "each round's value divided by that round's value for the Trainer row named. Per CPU-second: tokens "
        "over the CPU time of the training process in the same window (all its threads).",
        table(["contender", "tokens/s", "ratio", "per CPU-second", "ratio", "vs"], rows),
        goals_table(goals),
    ]
    markdown = "\n\n".join(lines)
    report(
        "training_throughput",
        args,
        {
            "batch_size": BATCH,
            "steps": steps,
            "window": window,
            "threads": cores,
            "examples": args.examples,
            "rounds": rounds,
            "tokens_per_s": rates,
            "tokens_per_cpu_s": cpu_rates,
            "wall_s": walls,
            "median_tokens_per_s": med,
            "median_tokens_per_cpu_s": cpu_med,
            "ratio_to_trainer": ratio,
            "cpu_ratio_to_trainer": cpu_ratio,
            "goals": goals,
        },
        markdown,
    )


if __name__ == "__main__":
    main()
