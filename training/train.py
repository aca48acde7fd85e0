"""Fine-tune a Gaze text classifier.

    accelerate launch -m training.train --config training/configs/sst2.yaml [--key value ...]

Data is a hub dataset (`--dataset-name`) or local files (`--train-file`, `--validation-file`,
optional `--test-file`; CSV, TSV or JSON Lines; see training/data.py). The model starts from random
weights or from a pretrained encoder (`--init-from DIR`, e.g. the output of training.pretrain).
The run evaluates every `eval_steps` optimizer steps (or every epoch), keeps the best weights by
`metric_for_best_model`, stops early after `early_stopping_patience` evaluations without
improvement, and writes into `--output-dir`:

    config.json, model.safetensors, tokenizer files, *.py, README.md   a ready Hugging Face folder
    metrics.jsonl, results.json, learning_curve.png                    what happened
    checkpoints/step-N/                                                resumable states (--resume)
"""

import json
import math
import shutil
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import datasets
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import tqdm
from safetensors.torch import load_file, save_file
from transformers.utils import logging as hf_logging

from model import GazeConfig, GazeForSequenceClassification
from model.card import write_model_card
from training.common import (
    Checkpoints,
    check_finite,
    load_or_train_tokenizer,
    make_accelerator,
    make_dataloader,
    make_optimizer,
    make_scheduler,
    new_model_config,
    parse_config,
    resume_point,
    save_pretrained_atomically,
)
from training.data import ClassificationData, DataError, collator, load_data, tokenize

DEFAULTS = {
    # data: a hub dataset, or local files (which take precedence)
    "dataset_name": None,  # e.g. stanfordnlp/sst2
    "dataset_config": None,
    "train_file": None,  # .csv, .tsv (GLUE style, no quoting) or .jsonl
    "validation_file": None,
    "test_file": None,
    "text_column": None,  # default: "sentence", else "text"
    "label_column": None,  # default: "label", else "labels"
    "label_names": None,  # e.g. [negative, positive]: names for integer labels, or the order of string labels
    "cache_dir": None,  # the datasets cache (raw Arrow files and tokenized splits); default ~/.cache/huggingface
    "tokenizer": None,  # a tokenizer folder; else the --init-from one; else trained on the training texts
    "vocab_size": 8192,
    "max_seq_length": 128,
    "group_by_length": True,  # batches of similar lengths: less padding
    # model (sizes are ignored with --init-from, which brings its own)
    "init_from": None,  # a pretrained Gaze folder (e.g. from training.pretrain)
    "hidden_size": 256,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "intermediate_size": 1024,
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "classifier_dropout": None,
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
    "metric_for_best_model": "accuracy",  # accuracy, macro_f1 or loss
    "load_best_model_at_end": True,  # the saved folder holds the best weights, not the last
    "early_stopping_patience": 0,  # stop after this many evaluations without improvement; 0: never
    "output_dir": "runs/sst2",
    "overwrite_output_dir": False,
    "save_steps": 500,  # a resumable checkpoint every N optimizer steps
    "save_total_limit": 2,
    "resume": False,  # continue from the latest checkpoint in --output-dir
    "resume_from": None,  # or from this checkpoint folder
}


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(__doc__.splitlines()[0], DEFAULTS, argv)
    try:
        train(cfg)
    except DataError as error:
        sys.exit(f"error: {error}")


def train(cfg: SimpleNamespace) -> dict:
    if cfg.metric_for_best_model not in ("accuracy", "macro_f1", "loss"):
        raise ValueError(f"metric_for_best_model must be accuracy, macro_f1 or loss, not {cfg.metric_for_best_model!r}")
    accelerator = make_accelerator(cfg)
    if not accelerator.is_main_process:
        datasets.disable_progress_bars()
        hf_logging.set_verbosity_error()
    output_dir = Path(cfg.output_dir)
    checkpoints = Checkpoints(output_dir, keep=cfg.save_total_limit)
    start = resume_point(cfg)
    if start is None and checkpoints.latest() is not None:
        if not cfg.overwrite_output_dir:
            raise FileExistsError(
                f"{output_dir} holds checkpoints of an earlier run: pass --resume to continue it, "
                "--overwrite-output-dir true to start over, or another --output-dir"
            )
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            shutil.rmtree(checkpoints.root)

    # --- data and tokenizer (the main process first: it fills the datasets cache the others read)
    with accelerator.main_process_first():
        data = load_data(
            dataset_name=cfg.dataset_name,
            dataset_config=cfg.dataset_config,
            train_file=cfg.train_file,
            validation_file=cfg.validation_file,
            test_file=cfg.test_file,
            text_column=cfg.text_column,
            label_column=cfg.label_column,
            label_names=cfg.label_names,
            cache_dir=cfg.cache_dir,
        )
    tokenizer = load_or_train_tokenizer(
        cfg.tokenizer or cfg.init_from,
        lambda: data.train["text"],
        cfg.vocab_size,
        cfg.max_seq_length,
        accelerator,
        checkpoints.root / "tokenizer",
        start,
    )
    max_length = cfg.max_seq_length
    if cfg.init_from:  # no longer than the pretrained position embeddings
        max_length = min(max_length, GazeConfig.from_pretrained(cfg.init_from).max_position_embeddings)
    with accelerator.main_process_first():
        splits = tokenize(data, tokenizer, max_length)

    model = build_model(cfg, data, tokenizer)
    pad = collator(tokenizer)
    train_set = splits["train"]
    train_loader = make_dataloader(
        train_set.remove_columns("length"),
        pad,
        cfg.per_device_train_batch_size,
        cfg.seed,
        shuffle=True,
        lengths=train_set["length"],
        group_by_length=cfg.group_by_length,
    )
    eval_loader = make_dataloader(
        splits["validation"].remove_columns("length"), pad, cfg.per_device_eval_batch_size, cfg.seed, shuffle=False
    )
    optimizer = make_optimizer(model, cfg)
    model, optimizer, train_loader, eval_loader = accelerator.prepare(model, optimizer, train_loader, eval_loader)
    steps_per_epoch = math.ceil(len(train_loader) / cfg.gradient_accumulation_steps)
    total_steps = cfg.max_steps if cfg.max_steps > 0 else steps_per_epoch * cfg.num_train_epochs
    scheduler = accelerator.prepare(make_scheduler(optimizer, cfg, total_steps))

    # --- where we are: a fresh start or a checkpoint
    state = {"epoch": 0, "batches_done": 0, "elapsed": 0.0, "eval_time": 0.0, "tokens_seen": 0}
    state |= {"best_metric": None, "best_step": None, "evals_without_improvement": 0}
    step = 0
    if start is not None:
        state |= Checkpoints.load(accelerator, start)
        step = state.pop("step")
        accelerator.print(f"Resumed from {start} at optimizer step {step}")
    metrics_file = output_dir / "metrics.jsonl"
    best_file = checkpoints.root / "best.safetensors"
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        keep_records(metrics_file, up_to_step=step)  # drop what a killed run logged after its checkpoint

    accelerator.print(
        f"{len(train_set):,} training and {len(splits['validation']):,} validation examples, "
        f"{len(data.label_names)} labels, {total_steps:,} optimizer steps, {accelerator.num_processes} process(es), "
        f"vocabulary {len(tokenizer):,}, {sum(p.numel() for p in model.parameters()):,} parameters"
    )
    progress = tqdm(total=total_steps, initial=step, desc="Training", main_process_only=True)
    loss_sum, loss_count = torch.zeros((), device=accelerator.device), 0
    tokens = torch.zeros((), dtype=torch.long, device=accelerator.device)
    tic = time.perf_counter()
    stop = False
    model.train()
    while step < total_steps and not stop:
        train_loader.set_epoch(state["epoch"])
        skip = state["batches_done"]
        for batch in accelerator.skip_first_batches(train_loader, skip) if skip else train_loader:
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            state["batches_done"] += 1
            loss_sum, loss_count = loss_sum + loss.detach().float(), loss_count + 1
            tokens += batch["attention_mask"].sum()
            if not accelerator.sync_gradients:
                continue
            step += 1
            check_finite(loss.detach(), step)
            progress.update(1)
            epoch_done = state["batches_done"] == len(train_loader)
            if epoch_done:  # a checkpoint taken now resumes at the start of the next epoch
                state["epoch"], state["batches_done"] = state["epoch"] + 1, 0
            log_due = step % cfg.logging_steps == 0 or step == total_steps
            eval_due = step == total_steps or (step % cfg.eval_steps == 0 if cfg.eval_steps > 0 else epoch_done)
            save_due = step % cfg.save_steps == 0 and step < total_steps
            if log_due or eval_due or save_due:  # count the tokens of every process (a collective)
                state["tokens_seen"] += accelerator.reduce(tokens, reduction="sum").item()
                tokens.zero_()
            records = {}
            if log_due:
                records["train_loss"] = accelerator.reduce(loss_sum / loss_count, reduction="mean").item()
                records["learning_rate"] = scheduler.get_last_lr()[0]
                loss_sum, loss_count = torch.zeros_like(loss_sum), 0
                progress.set_postfix(loss=f"{records['train_loss']:.3f}")
            if eval_due:
                eval_tic = time.perf_counter()
                records |= {f"eval_{k}": v for k, v in evaluate(model, eval_loader, accelerator).items()}
                state["eval_time"] += time.perf_counter() - eval_tic
                stop = track_best(cfg, state, step, records, model, accelerator, best_file)
            elapsed = state["elapsed"] + time.perf_counter() - tic
            if records:
                tokens_per_s = round(state["tokens_seen"] / max(elapsed - state["eval_time"], 1e-9))
                records = {"step": step, "epoch": round(step / steps_per_epoch, 3), **records}
                records |= {"elapsed_s": round(elapsed, 1), "tokens_seen": state["tokens_seen"]}
                append_record(metrics_file, records | {"train_tokens_per_s": tokens_per_s}, accelerator)
            if save_due and not stop:
                checkpoints.save(accelerator, step, state | {"elapsed": elapsed})
            if step >= total_steps or stop:
                break
    progress.close()
    state["elapsed"] += time.perf_counter() - tic
    if stop:
        accelerator.print(f"Early stopping at step {step}: no improvement in {cfg.early_stopping_patience} evaluations")

    # --- the final folder: best (or last) weights, tokenizer, code, card; plus results and a plot
    if cfg.load_best_model_at_end and state["best_step"] is not None and state["best_step"] != step:
        accelerator.unwrap_model(model).load_state_dict(load_file(best_file), strict=True)
    chosen_step = state["best_step"] if cfg.load_best_model_at_end and state["best_step"] is not None else step
    results = summarize(cfg, state, step, steps_per_epoch, chosen_step, metrics_file, data, accelerator)
    if "test" in splits and "labels" in splits["test"].column_names:
        test_loader = accelerator.prepare(
            make_dataloader(
                splits["test"].remove_columns("length"), pad, cfg.per_device_eval_batch_size, cfg.seed, False
            )
        )
        results |= {f"test_{k}": v for k, v in evaluate(model, test_loader, accelerator).items()}
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (output_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        plot_learning_curve(metrics_file, output_dir / "learning_curve.png")
    weights = accelerator.get_state_dict(model)  # collective: FSDP gathers the full weights here
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        save_pretrained_atomically(
            unwrapped, tokenizer, output_dir, lambda folder: write_card(folder, unwrapped, cfg, results), weights
        )
        accelerator.print(f"Saved the classifier to {output_dir}: " + json.dumps(results))
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return results


def build_model(cfg, data: ClassificationData, tokenizer) -> GazeForSequenceClassification:
    labels = {"id2label": data.id2label, "label2id": {name: i for i, name in data.id2label.items()}}
    dropout = {
        "hidden_dropout_prob": cfg.hidden_dropout_prob,
        "attention_probs_dropout_prob": cfg.attention_probs_dropout_prob,
        "classifier_dropout": cfg.classifier_dropout,
    }
    if cfg.init_from:
        # The encoder comes from the folder; the classification head starts random (seeded).
        model = GazeForSequenceClassification.from_pretrained(
            cfg.init_from, num_labels=len(data.label_names), dtype=torch.float32, **labels, **dropout
        )
        if model.config.vocab_size < len(tokenizer):
            raise ValueError(f"--init-from {cfg.init_from}: its vocabulary is smaller than the tokenizer's")
        return model
    config = new_model_config(cfg, tokenizer, classifier_dropout=cfg.classifier_dropout, **labels)
    return GazeForSequenceClassification(config)


def evaluate(model, loader, accelerator: Accelerator) -> dict[str, float]:
    """Loss, accuracy and macro-F1 over the whole split (gathered from every process)."""
    model.eval()
    all_logits, all_labels = [], []
    with torch.no_grad():
        for batch in loader:
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            logits, labels = accelerator.gather_for_metrics((logits.float(), batch["labels"]))
            all_logits.append(logits.cpu())
            all_labels.append(labels.cpu())
    model.train()
    logits, labels = torch.cat(all_logits), torch.cat(all_labels)
    return {
        "loss": F.cross_entropy(logits, labels).item(),
        "accuracy": (logits.argmax(-1) == labels).float().mean().item(),
        "macro_f1": macro_f1(logits.argmax(-1), labels),
    }


def macro_f1(predictions: torch.Tensor, labels: torch.Tensor) -> float:
    """F1 averaged over the classes that occur in the labels or the predictions (as scikit-learn)."""
    scores = []
    for c in torch.cat([predictions, labels]).unique():
        tp = ((predictions == c) & (labels == c)).sum().item()
        fp = ((predictions == c) & (labels != c)).sum().item()
        fn = ((predictions != c) & (labels == c)).sum().item()
        scores.append(2 * tp / (2 * tp + fp + fn))
    return sum(scores) / len(scores)


def track_best(cfg, state: dict, step: int, records: dict, model, accelerator: Accelerator, best_file: Path) -> bool:
    """Update the best metric (saving the best weights) and say whether early stopping is due."""
    value = records[f"eval_{cfg.metric_for_best_model}"]
    best = state["best_metric"]
    improved = best is None or (value < best if cfg.metric_for_best_model == "loss" else value > best)
    if improved:
        state |= {"best_metric": value, "best_step": step, "evals_without_improvement": 0}
        if cfg.load_best_model_at_end:
            weights = accelerator.get_state_dict(model)  # collective (FSDP gathers the shards)
            if accelerator.is_main_process:
                best_file.parent.mkdir(parents=True, exist_ok=True)
                staging = best_file.with_name(".tmp-" + best_file.name)
                save_file({k: v.contiguous() for k, v in weights.items()}, staging)
                staging.replace(best_file)
    else:
        state["evals_without_improvement"] += 1
    records["is_best"] = improved
    patience = cfg.early_stopping_patience
    return patience > 0 and state["evals_without_improvement"] >= patience


def append_record(path: Path, record: dict, accelerator: Accelerator) -> None:
    if accelerator.is_main_process:
        with path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


def read_records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def keep_records(path: Path, up_to_step: int) -> None:
    kept = [r for r in read_records(path) if r["step"] <= up_to_step]
    path.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")


def summarize(
    cfg, state: dict, step: int, steps_per_epoch: int, chosen_step: int, metrics_file: Path, data, accelerator
):
    records = read_records(metrics_file) if accelerator.is_main_process else []
    evaluated = [r for r in records if "eval_accuracy" in r]
    chosen = next((r for r in evaluated if r["step"] == chosen_step), evaluated[-1] if evaluated else {})
    train_time = state["elapsed"] - state["eval_time"]
    return {
        "eval_accuracy": chosen.get("eval_accuracy"),
        "eval_macro_f1": chosen.get("eval_macro_f1"),
        "eval_loss": chosen.get("eval_loss"),
        "model_step": chosen_step,
        "metric_for_best_model": cfg.metric_for_best_model,
        "steps": step,
        "epochs": round(step / steps_per_epoch, 3),
        "train_examples": len(data.train),
        "validation_examples": len(data.validation),
        "labels": data.label_names,
        "wall_time_s": round(state["elapsed"], 1),
        "train_time_s": round(train_time, 1),
        "tokens_seen": state["tokens_seen"],
        "train_tokens_per_s": round(state["tokens_seen"] / max(train_time, 1e-9)),
        "num_processes": accelerator.num_processes,
        "mixed_precision": accelerator.mixed_precision,
        "device": str(accelerator.device),
    }


def plot_learning_curve(metrics_file: Path, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_records(metrics_file)
    train = [(r["step"], r["train_loss"]) for r in records if "train_loss" in r]
    evals = [r for r in records if "eval_loss" in r]
    fig, loss_axis = plt.subplots(figsize=(7, 4), dpi=100)
    if train:
        loss_axis.plot(*zip(*train, strict=True), label="train loss", color="tab:blue", alpha=0.7)
    if evals:
        loss_axis.plot(
            [r["step"] for r in evals],
            [r["eval_loss"] for r in evals],
            "o-",
            label="validation loss",
            color="tab:orange",
        )
        accuracy_axis = loss_axis.twinx()
        accuracy_axis.plot(
            [r["step"] for r in evals],
            [r["eval_accuracy"] for r in evals],
            "s--",
            label="validation accuracy",
            color="tab:green",
        )
        accuracy_axis.set_ylabel("accuracy")
        accuracy_axis.legend(loc="upper right")
    loss_axis.set_xlabel("optimizer step")
    loss_axis.set_ylabel("loss")
    loss_axis.legend(loc="upper left")
    loss_axis.set_title("Learning curve")
    fig.tight_layout()
    staging = png.with_name(".tmp-" + png.name)
    fig.savefig(staging, format="png")
    plt.close(fig)
    staging.replace(png)


def write_card(folder: Path, model, cfg, results: dict) -> None:
    source = cfg.dataset_name if not cfg.train_file else Path(cfg.train_file).name
    start = f"the pretrained encoder `{Path(cfg.init_from).name}`" if cfg.init_from else "random weights"
    details = (
        "## Training\n\n"
        f"Fine-tuned from {start} with `training/train.py` on {results['train_examples']:,} examples of `{source}`: "
        f"{results['steps']:,} optimizer steps, batch {cfg.per_device_train_batch_size} × "
        f"{results['num_processes']} process(es) × {cfg.gradient_accumulation_steps} accumulation, learning rate "
        f"{cfg.learning_rate} ({cfg.lr_scheduler}, warmup {cfg.warmup_ratio}), "
        f"mixed precision `{cfg.mixed_precision}`, "
        f"seed {cfg.seed}. Weights from step {results['model_step']} (best validation {cfg.metric_for_best_model}). "
        f"Wall time {results['wall_time_s'] / 60:.1f} min on `{results['device']}`, "
        f"{results['train_tokens_per_s']:,} training tokens/s. Metrics are on the validation set "
        f"({results['validation_examples']:,} examples)."
    )
    metrics = {k: results[k] for k in ("eval_accuracy", "eval_macro_f1", "test_accuracy") if results.get(k) is not None}
    write_model_card(
        folder, model.config, task="text-classification", datasets=[source], metrics=metrics, details=details
    )


if __name__ == "__main__":
    main()
