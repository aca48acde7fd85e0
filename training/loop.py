"""The one optimizer-step loop that every training script runs.

A script is a task definition (`Task`): its model, batches, the loss of a batch, an evaluation,
and the text of its model card. The loop owns everything else, the same way for every task:
gradient accumulation, the log / evaluate / save cadence, exact resume, epoch rollover, token
counts, best-model tracking and early stopping, the divergence stop, and the final folder.

    accelerator, start = begin(cfg)
    task = Task(...)
    results = fit(cfg, accelerator, task, start)

Run state survives a kill: a checkpoint under `output_dir/checkpoints/step-N` holds the weights,
optimizer, schedule and RNG states plus `Progress`, so a resumed run continues bit-identically.
"""

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import tqdm
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader

from training.checkpoints import Checkpoints, claim_output_dir, save_pretrained_atomically, staged, write_json
from training.config import RunArgs, RunError
from training.records import append_record, keep_records, plot_learning_curve, read_records
from training.runtime import make_accelerator, make_optimizer, make_scheduler


@dataclass
class Task:
    """What a training script brings to the loop."""

    name: str  # "Training", "Pretraining": the progress bar's label
    model: torch.nn.Module
    tokenizer: Any
    train_loader: DataLoader
    eval_loader: DataLoader
    evaluate: Callable[[torch.nn.Module, DataLoader, Accelerator], dict[str, float]]  # "loss" and more
    write_card: Callable[[Path, torch.nn.Module, dict], None]
    loss: Callable[[torch.nn.Module, Any], torch.Tensor] = lambda model, batch: model(**batch).loss
    count_tokens: Callable[[Any], torch.Tensor] = lambda batch: batch["attention_mask"].sum()
    test_loader: DataLoader | None = None  # evaluated once, with the final weights, into test_* results
    head_lr_scale: float = 1.0  # the head (every parameter outside the encoder) learns at this × learning_rate
    facts: dict[str, Any] = field(default_factory=dict)  # for results.json: examples, labels, ...


@dataclass
class Progress:
    """Where a run stands: saved in every checkpoint, restored on resume."""

    step: int = 0
    epoch: int = 0
    batches_done: int = 0  # batches of the current epoch already trained on
    elapsed: float = 0.0  # seconds, over all sessions of the run
    eval_time: float = 0.0
    tokens_seen: int = 0
    best_metric: float | None = None
    best_step: int | None = None
    evals_without_improvement: int = 0


def begin(cfg: RunArgs) -> tuple[Accelerator, Path | None]:
    """The run's Accelerator, and the checkpoint to resume from (None: a fresh start in a claimed --output-dir)."""
    accelerator = make_accelerator(
        cfg.seed, cfg.mixed_precision, cfg.gradient_accumulation_steps, cfg.report_to, cfg.output_dir
    )
    start = claim_output_dir(accelerator, cfg.output_dir, cfg.overwrite_output_dir, cfg.resume, cfg.resume_from)
    return accelerator, start


def fit(cfg: RunArgs, accelerator: Accelerator, task: Task, start: Path | None) -> dict:
    """Train `task` to the end (or an early stop) and write the final folder; returns results.json."""
    loop = _Loop(cfg, accelerator, task, start)
    loop.train()
    return loop.finish()


class _Loop:
    def __init__(self, cfg: RunArgs, accelerator: Accelerator, task: Task, start: Path | None):
        self.cfg, self.accelerator, self.task = cfg, accelerator, task
        self.output_dir = Path(cfg.output_dir)
        self.checkpoints = Checkpoints(self.output_dir)
        self.metrics_file = self.output_dir / "metrics.jsonl"
        self.best_file = self.checkpoints.root / "best.safetensors"

        optimizer = make_optimizer(task.model, cfg, task.head_lr_scale)
        prepared = accelerator.prepare(task.model, optimizer, task.train_loader, task.eval_loader)
        self.model, self.optimizer, self.train_loader, self.eval_loader = prepared
        self.steps_per_epoch = math.ceil(len(self.train_loader) / cfg.gradient_accumulation_steps)
        self.total_steps = cfg.max_steps if cfg.max_steps > 0 else self.steps_per_epoch * cfg.num_train_epochs
        self.scheduler = accelerator.prepare(make_scheduler(self.optimizer, cfg, self.total_steps))

        self.progress = Progress()
        if start is not None and cfg.resume_from:  # the checkpoint named, or none
            self.progress = Progress(**Checkpoints.load(accelerator, start))
        elif start is not None:
            start, state = self.checkpoints.load_newest_readable(accelerator, start)
            self.progress = Progress(**state)
            accelerator.print(f"Resumed from {start} at optimizer step {self.progress.step}")
        if accelerator.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            keep_records(self.metrics_file, up_to_step=self.progress.step)
        if cfg.report_to != "none":  # after claim_output_dir: a refused folder gets no tracker files
            settings = {k: v for k, v in asdict(cfg).items() if isinstance(v, int | float | str | bool)}
            accelerator.init_trackers("tensorboard", config=settings)
        parameters = sum(p.numel() for p in self.model.parameters())
        accelerator.print(
            f"{task.name}: {self.total_steps:,} optimizer steps ({self.steps_per_epoch:,} per epoch), "
            f"{accelerator.num_processes} process(es), vocabulary {len(task.tokenizer):,}, {parameters:,} parameters"
        )

    def train(self) -> None:
        cfg, accelerator, progress = self.cfg, self.accelerator, self.progress
        bar = tqdm(total=self.total_steps, initial=progress.step, desc=self.task.name, main_process_only=True)
        self.loss_sum, self.loss_count = torch.zeros((), device=accelerator.device), 0
        self.tokens = torch.zeros((), dtype=torch.long, device=accelerator.device)
        self.tic = time.perf_counter()
        self.stop = False
        self.model.train()
        while progress.step < self.total_steps and not self.stop:
            self.train_loader.set_epoch(progress.epoch)
            skip = progress.batches_done
            batches = accelerator.skip_first_batches(self.train_loader, skip) if skip else self.train_loader
            for batch in batches:
                loss = self.train_step(batch)
                if not accelerator.sync_gradients:
                    continue  # accumulating: the optimizer step comes with a later batch
                progress.step += 1
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"loss is {loss.item()} at optimizer step {progress.step}: training diverged. "
                        "Lower --learning-rate, raise --warmup-ratio or use --mixed-precision no."
                    )
                bar.update(1)
                if progress.batches_done == len(self.train_loader):  # a checkpoint now resumes at the next epoch
                    progress.epoch, progress.batches_done = progress.epoch + 1, 0
                    epoch_done = True
                else:
                    epoch_done = False
                self.after_step(epoch_done, bar)
                if progress.step >= self.total_steps or self.stop:
                    break
        bar.close()
        progress.elapsed += time.perf_counter() - self.tic
        if self.stop:
            accelerator.print(
                f"Early stopping at step {progress.step}: no improvement in {cfg.early_stopping_patience} evaluations"
            )

    def train_step(self, batch: Any) -> torch.Tensor:
        with self.accelerator.accumulate(self.model):
            loss = self.task.loss(self.model, batch)
            self.accelerator.backward(loss)
            if self.accelerator.sync_gradients:
                self.accelerator.clip_grad_norm_(self.model.parameters(), self.cfg.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad()
        self.progress.batches_done += 1
        loss = loss.detach()
        self.loss_sum, self.loss_count = self.loss_sum + loss.float(), self.loss_count + 1
        self.tokens += self.task.count_tokens(batch)
        return loss

    def after_step(self, epoch_done: bool, bar) -> None:
        """Log, evaluate and save when their cadence says so."""
        cfg, accelerator, progress = self.cfg, self.accelerator, self.progress
        step, last = progress.step, progress.step == self.total_steps
        log_due = step % cfg.logging_steps == 0 or last
        eval_due = last or (step % cfg.eval_steps == 0 if cfg.eval_steps > 0 else epoch_done)
        save_due = step % cfg.save_steps == 0 or epoch_done or last  # a short run resumes (or continues) too
        if not (log_due or eval_due or save_due):
            return
        progress.tokens_seen += accelerator.reduce(self.tokens, reduction="sum").item()  # a collective
        self.tokens.zero_()
        record = {}
        if log_due:
            record["train_loss"] = accelerator.reduce(self.loss_sum / self.loss_count, reduction="mean").item()
            record["learning_rate"] = self.scheduler.get_last_lr()[0]
            self.loss_sum, self.loss_count = torch.zeros_like(self.loss_sum), 0
            bar.set_postfix(loss=f"{record['train_loss']:.3f}")
        if eval_due:
            eval_tic = time.perf_counter()
            record |= {f"eval_{k}": v for k, v in self.task.evaluate(self.model, self.eval_loader, accelerator).items()}
            progress.eval_time += time.perf_counter() - eval_tic
            self.stop = self.track_best(record)
            if accelerator.is_main_process:  # one line per evaluation, as transformers' Trainer logs
                scores = ", ".join(
                    f"{k.removeprefix('eval_')} {v:.4f}" for k, v in record.items() if k.startswith("eval_")
                )
                best = " (best so far)" if record.get("is_best") else ""
                bar.write(f"Evaluation at step {step} (epoch {step / self.steps_per_epoch:.2f}): {scores}{best}")
        elapsed = progress.elapsed + time.perf_counter() - self.tic
        if record:  # to the tracker (the main process's): the numbers, not is_best
            accelerator.log({k: v for k, v in record.items() if k != "is_best"}, step=step)
        if record and accelerator.is_main_process:
            train_time = max(elapsed - progress.eval_time, 1e-9)
            append_record(
                self.metrics_file,
                {"step": step, "epoch": round(step / self.steps_per_epoch, 3), **record}
                | {"elapsed_s": round(elapsed, 1), "tokens_seen": progress.tokens_seen}
                | {"train_tokens_per_s": round(progress.tokens_seen / train_time)},
            )
        if save_due and not self.stop:
            self.checkpoints.save(accelerator, step, asdict(progress) | {"elapsed": elapsed}, cfg.save_total_limit)

    def track_best(self, record: dict) -> bool:
        """Update the best metric (saving the best weights) and say whether early stopping is due."""
        metric = self.cfg.metric_for_best_model
        if f"eval_{metric}" not in record:
            known = sorted(k.removeprefix("eval_") for k in record if k.startswith("eval_"))
            raise RunError(f"metric_for_best_model {metric!r} is not one this task evaluates: {known}")
        record["is_best"] = update_best(self.progress, record[f"eval_{metric}"], metric)
        if record["is_best"] and self.cfg.load_best_model_at_end:
            weights = self.accelerator.get_state_dict(self.model)  # collective (FSDP gathers the shards)
            if self.accelerator.is_main_process:
                with staged(self.best_file) as staging:
                    save_file({k: v.contiguous() for k, v in weights.items()}, staging)
        patience = self.cfg.early_stopping_patience
        return patience > 0 and self.progress.evals_without_improvement >= patience

    def load_best_weights(self, model) -> None:
        """Load the best weights: best.safetensors while a run goes; a run resumed after its end (which removed
        that file) reads them from the folder it saved, which lacks only the tied weights."""
        if self.best_file.exists():
            model.load_state_dict(load_file(self.best_file), strict=True)
            return
        saved = self.output_dir / "model.safetensors"
        if not saved.exists():
            best = self.progress.best_step
            raise RunError(f"the best weights (step {best}) are gone: neither {self.best_file} nor {saved} exists")
        missing, unexpected = model.load_state_dict(load_file(saved), strict=False)
        if unexpected or set(missing) - set(model.all_tied_weights_keys):
            raise RunError(f"{saved} does not hold this run's best weights (step {self.progress.best_step})")
        model.tie_weights()

    def finish(self) -> dict:
        """The final folder: best (or last) weights, tokenizer, code and card; results.json and a plot."""
        cfg, accelerator, progress = self.cfg, self.accelerator, self.progress
        use_best = cfg.load_best_model_at_end and progress.best_step is not None
        if use_best and progress.best_step != progress.step:
            self.load_best_weights(accelerator.unwrap_model(self.model))
        results = self.results(progress.best_step if use_best else progress.step)
        if self.task.test_loader is not None:
            test_loader = accelerator.prepare(self.task.test_loader)
            results |= {f"test_{k}": v for k, v in self.task.evaluate(self.model, test_loader, accelerator).items()}
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            write_json(self.output_dir / "results.json", results)
            plot_learning_curve(self.metrics_file, self.output_dir / "learning_curve.png", cfg.metric_for_best_model)
        weights = accelerator.get_state_dict(self.model)  # collective: FSDP gathers the full weights here
        if accelerator.is_main_process:
            model = accelerator.unwrap_model(self.model)
            card = lambda folder: self.task.write_card(folder, model, results)  # noqa: E731
            save_pretrained_atomically(model, self.task.tokenizer, self.output_dir, card, weights)
            if use_best:  # the saved folder holds the same weights now
                self.best_file.unlink(missing_ok=True)
            accelerator.print(f"Saved the model to {self.output_dir}: {results}")
        accelerator.wait_for_everyone()
        accelerator.end_training()
        return results

    def results(self, model_step: int) -> dict:
        progress, accelerator = self.progress, self.accelerator
        records = read_records(self.metrics_file) if accelerator.is_main_process else []
        evaluated = [r for r in records if "eval_loss" in r]
        chosen = next((r for r in evaluated if r["step"] == model_step), evaluated[-1] if evaluated else {})
        train_time = progress.elapsed - progress.eval_time
        return {
            **{k: v for k, v in chosen.items() if k.startswith("eval_")},
            "model_step": model_step,
            "metric_for_best_model": self.cfg.metric_for_best_model,
            "steps": progress.step,
            "epochs": round(progress.step / self.steps_per_epoch, 3),
            **self.task.facts,
            "wall_time_s": round(progress.elapsed, 1),
            "train_time_s": round(train_time, 1),
            "tokens_seen": progress.tokens_seen,
            "train_tokens_per_s": round(progress.tokens_seen / max(train_time, 1e-9)),
            "num_processes": accelerator.num_processes,
            "mixed_precision": accelerator.mixed_precision,
            "device": str(accelerator.device),
        }


def update_best(progress: Progress, value: float, metric: str) -> bool:
    """Record an evaluation; True if it is the best so far (lower is better for a loss, higher for
    everything else; a tie is no improvement)."""
    best = progress.best_metric
    improved = best is None or (value < best if metric.endswith("loss") else value > best)
    if improved:
        progress.best_metric, progress.best_step, progress.evals_without_improvement = value, progress.step, 0
    else:
        progress.evals_without_improvement += 1
    return improved
