"""Benchmark 5: training tokens/s, our accelerate loop (training/train.py) vs `transformers.Trainer`.

Same model (a from-scratch Gaze classifier of the shipped size, built by training.train.build_model),
same data (the first `--examples` SST-2 training sentences, tokenized by training.data with the same
tokenizer, max 128 tokens), same per-device batch (32), same optimizer settings (AdamW, lr 5e-4,
β2 0.98, weight decay 0.01, linear schedule with 10 % warm-up, gradient clipping at 1.0) and the
same number of steps, in fp32 and in bf16 autocast. Both run as fresh subprocesses, offline; the
Trainer with `use_cpu=True, report_to="none"`, no saving, no evaluation.

Tokens are real (non-padding) tokens, counted the same way for both (the attention-mask sum). The
rate is measured over a window of steps that leaves out the first `--skip` steps (start-up, first
allocations) and the final step (ours evaluates there): tokens in the window / time of the window.
Ours reads its metrics.jsonl (tokens_seen and elapsed_s every 10 steps); the Trainer gets a callback
that stamps every step and a collator that counts every batch's tokens.

Also measured: ours without length-grouped batches (the Trainer in transformers 5 has no such
option; this row separates that lever from the loop itself), ours with 2 processes of 1 thread
(`accelerate launch --multi_gpu --num_processes 2` on CPU: DDP over gloo, batch 32 per process), and
ours with 1 thread, which is what `accelerate launch --num_processes 1` (without `--cpu` or
`--num_cpu_threads_per_process`) gives: it sets OMP_NUM_THREADS=1. All other runs of ours pass
`--num_cpu_threads_per_process` = cores / processes; the Trainer uses torch's default (all cores).

    python -m benchmarks.training_throughput [--steps 150] [--rounds 2] [--quick]
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
    command += ["--mixed_precision", precision, "--dynamo_backend", "no", "-m", "training.train"]
    command += ["--train-file", str(data["train"]), "--validation-file", str(data["validation"])]
    command += [
        "--tokenizer",
        str(data["tokenizer"]),
        "--max-seq-length",
        "128",
        "--label-names",
        "[negative, positive]",
    ]
    command += ["--per-device-train-batch-size", str(BATCH), "--max-steps", str(steps), "--seed", "42"]
    command += ["--mixed-precision", precision, "--group-by-length", str(grouped).lower()]
    command += ["--logging-steps", str(LOG_EVERY), "--eval-steps", "1000000", "--save-steps", "1000000"]
    command += ["--load-best-model-at-end", "false", "--output-dir", str(out), "--overwrite-output-dir", "true"]
    command += ["--cache-dir", str(hf_home / "datasets")]
    tic = time.perf_counter()
    run(command, launch_env(hf_home), out.with_suffix(".log"))
    wall = time.perf_counter() - tic
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {"records": [r for r in records if "tokens_seen" in r], "wall_s": wall}


def trainer(data: dict[str, Path], out: Path, steps: int, precision: str, hf_home: Path) -> dict:
    command = [sys.executable, "-m", "benchmarks.training_throughput", "--trainer-worker", str(out)]
    command += ["--steps", str(steps), "--precision", precision]
    command += ["--data", json.dumps({k: str(v) for k, v in data.items()}), "--cache-dir", str(hf_home / "datasets")]
    tic = time.perf_counter()
    run(command, launch_env(hf_home), out.with_suffix(".log"))
    wall = time.perf_counter() - tic
    return json.loads((out / "trainer_steps.json").read_text()) | {"wall_s": wall}


def trainer_worker(args: argparse.Namespace) -> None:
    """Runs in its own process: the Trainer on the same model, data and settings as ours."""
    from types import SimpleNamespace

    import torch
    from transformers import AutoTokenizer, Trainer, TrainerCallback, TrainingArguments
    from transformers.utils import logging as hf_logging

    from training.data import collator, load_data, tokenize
    from training.train import DEFAULTS, build_model

    hf_logging.set_verbosity_error()
    data_files = json.loads(args.data)
    cfg = SimpleNamespace(**DEFAULTS)
    data = load_data(
        train_file=data_files["train"],
        validation_file=data_files["validation"],
        label_names=["negative", "positive"],
        cache_dir=args.cache_dir,
    )
    tokenizer = AutoTokenizer.from_pretrained(data_files["tokenizer"])
    splits = tokenize(data, tokenizer, 128)
    torch.manual_seed(42)
    model = build_model(cfg, data, tokenizer)
    pad = collator(tokenizer)
    batch_tokens: list[int] = []
    step_times: list[float] = []

    def counting_collator(features):
        batch = pad(features)
        batch_tokens.append(int(batch["attention_mask"].sum()))
        return batch

    class Stamp(TrainerCallback):
        def on_step_end(self, *_, **__):
            step_times.append(time.perf_counter())

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
        dataloader_num_workers=0,
    )
    train_set = splits["train"].remove_columns("length")
    Trainer(
        model=model,
        args=training_args,
        train_dataset=train_set,
        data_collator=counting_collator,
        callbacks=[Stamp()],
    ).train()
    Path(args.trainer_worker).mkdir(parents=True, exist_ok=True)
    (Path(args.trainer_worker) / "trainer_steps.json").write_text(
        json.dumps({"step_times": step_times, "batch_tokens": batch_tokens})
    )


def rate_ours(result: dict, skip: int, steps: int) -> float:
    """Tokens/s between the record at step `skip` and the last record before the final step."""
    records = {r["step"]: r for r in result["records"]}
    last = max(s for s in records if s < steps)
    a, b = records[skip], records[last]
    return (b["tokens_seen"] - a["tokens_seen"]) / (b["elapsed_s"] - a["elapsed_s"])


def rate_trainer(result: dict, skip: int, steps: int) -> float:
    """The same window for the Trainer: steps skip+1 … last (its batch i is step i's batch)."""
    times, tokens = result["step_times"], result["batch_tokens"]
    last = max(s for s in range(LOG_EVERY, steps, LOG_EVERY))
    return sum(tokens[skip:last]) / (times[last - 1] - times[skip - 1])


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
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--examples", type=int, default=8000)
    parser.add_argument("--trainer-worker", help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="no", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.trainer_worker:
        return trainer_worker(args)
    steps, skip, rounds = (args.steps, args.skip, args.rounds) if not args.quick else (40, 10, 1)

    contenders = {
        "ours fp32": lambda d, o, h: ours(d, o, steps, "no", 1, True, h),
        "Trainer fp32": lambda d, o, h: trainer(d, o, steps, "no", h),
        "ours bf16": lambda d, o, h: ours(d, o, steps, "bf16", 1, True, h),
        "Trainer bf16": lambda d, o, h: trainer(d, o, steps, "bf16", h),
        "ours fp32, no length grouping": lambda d, o, h: ours(d, o, steps, "no", 1, False, h),
        "ours fp32, 2 processes × 1 thread": lambda d, o, h: ours(d, o, steps, "no", 2, True, h),
        "ours fp32, 1 thread (plain `accelerate launch`)": lambda d, o, h: ours(d, o, steps, "no", 1, True, h, 1),
    }
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    walls: dict[str, list[float]] = {name: [] for name in contenders}
    with tempfile.TemporaryDirectory(prefix="gaze-train-bench-") as tmp:
        tmp = Path(tmp)
        data = write_subset(tmp, args.examples)
        names = list(contenders)
        for r in range(rounds):
            for i, name in enumerate(names[r % len(names) :] + names[: r % len(names)]):
                out = tmp / f"run-{r}-{i}"
                result = contenders[name](data, out, tmp / "hf-home")
                rate = (rate_trainer if name.startswith("Trainer") else rate_ours)(result, skip, steps)
                rates[name].append(rate)
                walls[name].append(result["wall_s"])
                print(f"  {name}: {rate:,.0f} tokens/s (wall {result['wall_s']:.0f} s)", file=sys.stderr, flush=True)

    med = {name: median(v) for name, v in rates.items()}
    rows = [
        [name, f"{med[name]:,.0f}", f"{med[name] / med['Trainer fp32' if 'bf16' not in name else 'Trainer bf16']:.2f}×"]
        for name in rates
    ]
    goals = [
        goal("ours vs Trainer, fp32", med["ours fp32"] / med["Trainer fp32"], 1.3),
        goal("ours vs Trainer, bf16", med["ours bf16"] / med["Trainer bf16"], 1.3),
    ]
    scaling = med["ours fp32, 2 processes × 1 thread"] / med["ours fp32"]
    markdown = "\n\n".join(
        [
            f"### Training throughput, batch {BATCH} per process, {steps} steps, tokens/s over steps "
            f"{skip + 1}–{max(range(LOG_EVERY, steps, LOG_EVERY))} (median of {rounds} interleaved rounds)",
            f"From-scratch Gaze classifier of the shipped size; first {args.examples:,} SST-2 training sentences. "
            f"2 processes × 1 thread vs 1 process × 2 threads (ours, fp32): {scaling:.2f}×. Every run uses "
            "both cores unless its name says otherwise.",
            table(["contender", "tokens/s", "vs Trainer (same precision)"], rows),
            goals_table(goals),
        ]
    )
    report(
        "training_throughput",
        args,
        {
            "batch_size": BATCH,
            "steps": steps,
            "window": [skip + 1, max(range(LOG_EVERY, steps, LOG_EVERY))],
            "examples": args.examples,
            "rounds": rounds,
            "tokens_per_s": rates,
            "wall_s": walls,
            "median_tokens_per_s": med,
            "two_process_scaling": scaling,
            "goals": goals,
        },
        markdown,
    )


if __name__ == "__main__":
    main()
