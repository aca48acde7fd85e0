"""Masked-language-model pretraining of the Gaze encoder.

    accelerate launch -m training.pretrain --config training/configs/pretrain-imdb.yaml [--key value ...]

Texts (plain files with one document per line, JSON Lines files with a text column, or a hub
dataset) are tokenized, joined with [SEP] and packed into full blocks, so no compute is spent on
padding. Each step masks 15% of the tokens (80% [MASK], 10% a random token, 10% unchanged; Devlin
et al. 2019) and the model predicts them. The result is a folder that `training.train --init-from`
starts a classifier from.
"""

import csv
import json
import math
import time
from pathlib import Path
from types import SimpleNamespace

import datasets
import torch
from accelerate import Accelerator
from accelerate.utils import tqdm

from model import GazeForMaskedLM
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

DEFAULTS = {
    # data
    "train_files": None,  # a path or a list: .txt (one document per line), .jsonl, .tsv or .csv
    "dataset": None,  # or a hub dataset id (its "train" split)
    "text_column": None,  # default: "text", else "sentence"
    "validation_documents": 500,  # held out from the training text for the masked-token metrics
    "tokenizer": None,  # a tokenizer folder; trained on the training text when not given
    "vocab_size": 8192,
    "max_seq_length": 128,
    "mlm_probability": 0.15,
    # model
    "hidden_size": 256,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "intermediate_size": 1024,
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    # optimization
    "seed": 42,
    "per_device_train_batch_size": 128,
    "gradient_accumulation_steps": 1,
    "learning_rate": 1e-3,
    "weight_decay": 0.01,
    "adam_beta2": 0.98,
    "max_grad_norm": 1.0,
    "lr_scheduler": "linear",
    "warmup_ratio": 0.06,
    "num_train_epochs": 1,
    "max_steps": 0,  # > 0 overrides num_train_epochs
    "mixed_precision": "no",
    # bookkeeping
    "output_dir": "runs/pretrain",
    "eval_steps": 500,
    "save_steps": 500,
    "save_total_limit": 2,
    "resume": False,
    "resume_from": None,
}


def read_documents(cfg: SimpleNamespace) -> datasets.Dataset:
    """One row per document, in a column named "text"; labels and other columns are dropped."""
    if cfg.dataset:
        parts = [(cfg.dataset, datasets.load_dataset(cfg.dataset, split="train"))]
    elif cfg.train_files:
        files = [cfg.train_files] if isinstance(cfg.train_files, str) else list(cfg.train_files)
        parts = [(file, _load_text_file(Path(file))) for file in files]
    else:
        raise ValueError("give --train-files PATH (or a list in the config) or --dataset HUB_ID")
    columns = []
    for source, part in parts:
        candidates = [cfg.text_column] if cfg.text_column else ["text", "sentence"]
        column = next((c for c in candidates if c in part.column_names), None)
        if column is None:
            raise ValueError(f"{source}: no text column {candidates} (columns: {part.column_names})")
        part = part.select_columns([column])
        part = part if column == "text" else part.rename_column(column, "text")
        columns.append(part.cast(datasets.Features({"text": datasets.Value("large_string")})))
    documents = datasets.concatenate_datasets(columns)
    return documents.filter(lambda row: bool(row["text"] and row["text"].strip()))


def _load_text_file(path: Path) -> datasets.Dataset:
    if not path.is_file():
        raise FileNotFoundError(f"training text file not found: {path}")
    if path.suffix in (".jsonl", ".json"):
        return datasets.load_dataset("json", data_files=str(path), split="train")
    if path.suffix in (".tsv", ".csv"):
        delimiter = "\t" if path.suffix == ".tsv" else ","
        quoting = csv.QUOTE_NONE if path.suffix == ".tsv" else csv.QUOTE_MINIMAL  # GLUE TSVs are unquoted
        return datasets.load_dataset("csv", data_files=str(path), delimiter=delimiter, quoting=quoting, split="train")
    return datasets.load_dataset("text", data_files=str(path), split="train")


def pack_into_blocks(documents: datasets.Dataset, tokenizer, block_size: int) -> datasets.Dataset:
    """Tokenize, join documents with [SEP] and cut into blocks of [CLS] + (block_size - 2) + [SEP]."""
    body = block_size - 2

    def tokenize_and_pack(batch: dict[str, list]) -> dict[str, list]:
        stream: list[int] = []
        for ids in tokenizer(batch["text"], add_special_tokens=False)["input_ids"]:
            stream += ids + [tokenizer.sep_token_id]
        blocks = [stream[i : i + body] for i in range(0, len(stream) - body + 1, body)]
        return {"input_ids": [[tokenizer.cls_token_id, *b, tokenizer.sep_token_id] for b in blocks]}

    return documents.map(
        tokenize_and_pack,
        batched=True,
        batch_size=1000,
        remove_columns=documents.column_names,
        desc="Tokenizing and packing",
    )


def mask_tokens(
    input_ids: torch.Tensor, tokenizer, probability: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's 80/10/10 masking. Returns (inputs, labels), labels = -100 where nothing is predicted.

    Draws from `generator` when given, else from the global RNG (restored exactly on resume).
    """
    labels = input_ids.clone()
    special = (input_ids == tokenizer.cls_token_id) | (input_ids == tokenizer.sep_token_id)
    chosen = (torch.rand(input_ids.shape, generator=generator, device=input_ids.device) < probability) & ~special
    labels[~chosen] = -100
    roll = torch.rand(input_ids.shape, generator=generator, device=input_ids.device)
    inputs = input_ids.clone()
    inputs[chosen & (roll < 0.8)] = tokenizer.mask_token_id
    randomize = chosen & (roll >= 0.8) & (roll < 0.9)
    random_ids = torch.randint(len(tokenizer), input_ids.shape, generator=generator, device=input_ids.device)
    inputs[randomize] = random_ids[randomize]
    return inputs, labels


def stack(rows: list[dict]) -> torch.Tensor:
    return torch.tensor([row["input_ids"] for row in rows])


def evaluate(model, dataloader, tokenizer, cfg: SimpleNamespace, accelerator: Accelerator) -> dict[str, float]:
    """Masked-token loss and accuracy on held-out blocks, with the same masks every time."""
    model.eval()
    generator = torch.Generator().manual_seed(cfg.seed)
    total_loss, correct, count = 0.0, 0, 0
    with torch.no_grad():
        for input_ids in dataloader:
            inputs, labels = mask_tokens(input_ids.cpu(), tokenizer, cfg.mlm_probability, generator)
            inputs, labels = inputs.to(input_ids.device), labels.to(input_ids.device)
            outputs = model(input_ids=inputs, labels=labels)
            targets = labels[labels != -100]
            n = torch.tensor(targets.numel(), device=inputs.device)
            hits = (outputs.logits.argmax(-1) == targets).sum()
            loss_sum = outputs.loss.detach().float() * n
            n, hits, loss_sum = accelerator.reduce((n, hits, loss_sum), reduction="sum")
            total_loss, correct, count = total_loss + loss_sum.item(), correct + hits.item(), count + n.item()
    model.train()
    return {"eval_loss": total_loss / max(count, 1), "eval_masked_accuracy": correct / max(count, 1)}


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(__doc__.splitlines()[0], DEFAULTS, argv)
    accelerator = make_accelerator(cfg)
    output_dir = Path(cfg.output_dir)

    checkpoints = Checkpoints(output_dir, keep=cfg.save_total_limit)
    start = resume_point(cfg)

    with accelerator.main_process_first():
        documents = read_documents(cfg)
        held_out = min(cfg.validation_documents, len(documents) // 10)
        split = documents.train_test_split(test_size=held_out, seed=cfg.seed) if held_out else None
        train_docs = split["train"] if split else documents
    tokenizer = load_or_train_tokenizer(
        cfg.tokenizer,
        lambda: train_docs["text"],
        cfg.vocab_size,
        cfg.max_seq_length,
        accelerator,
        checkpoints.root / "tokenizer",
        start,
    )
    with accelerator.main_process_first():
        train_blocks = pack_into_blocks(train_docs, tokenizer, cfg.max_seq_length)
        eval_blocks = pack_into_blocks(split["test"], tokenizer, cfg.max_seq_length) if split else None

    config = new_model_config(cfg, tokenizer)
    model = GazeForMaskedLM(config)

    train_loader = make_dataloader(train_blocks, stack, cfg.per_device_train_batch_size, cfg.seed, shuffle=True)
    eval_loader = (
        make_dataloader(eval_blocks, stack, cfg.per_device_train_batch_size, cfg.seed, shuffle=False)
        if eval_blocks is not None
        else None
    )
    steps_per_epoch = math.ceil(len(train_loader) / accelerator.num_processes / cfg.gradient_accumulation_steps)
    total_steps = cfg.max_steps if cfg.max_steps > 0 else steps_per_epoch * cfg.num_train_epochs
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg, total_steps)
    model, optimizer, train_loader, scheduler = accelerator.prepare(model, optimizer, train_loader, scheduler)
    if eval_loader is not None:
        eval_loader = accelerator.prepare(eval_loader)

    step, epoch, batches_done, elapsed = 0, 0, 0, 0.0
    if start is not None:
        state = Checkpoints.load(accelerator, start)
        step, epoch, batches_done, elapsed = state["step"], state["epoch"], state["batches_done"], state["elapsed"]
        accelerator.print(f"Resumed from {start} at optimizer step {step}")

    accelerator.print(
        f"{len(train_blocks):,} blocks of {cfg.max_seq_length} tokens, {total_steps:,} optimizer steps, "
        f"{accelerator.num_processes} process(es), vocabulary {len(tokenizer):,}"
    )
    tokens_per_step = (
        cfg.per_device_train_batch_size
        * cfg.max_seq_length
        * accelerator.num_processes
        * cfg.gradient_accumulation_steps
    )
    progress = tqdm(total=total_steps, initial=step, desc="Pretraining", main_process_only=True)
    metrics_file = output_dir / "metrics.jsonl"
    tic = time.perf_counter()
    model.train()
    while step < total_steps:
        train_loader.set_epoch(epoch)
        loader = accelerator.skip_first_batches(train_loader, batches_done) if batches_done else train_loader
        for input_ids in loader:
            inputs, labels = mask_tokens(input_ids, tokenizer, cfg.mlm_probability)
            with accelerator.accumulate(model):
                loss = model(input_ids=inputs, labels=labels).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            batches_done += 1
            if not accelerator.sync_gradients:
                continue
            step += 1
            check_finite(loss.detach(), step)
            progress.update(1)
            progress.set_postfix(loss=f"{loss.item():.3f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
            if step % cfg.eval_steps == 0 or step == total_steps:
                now = elapsed + time.perf_counter() - tic
                record = {"step": step, "epoch": epoch, "train_loss": loss.item(), "elapsed_s": round(now, 1)}
                record["tokens_per_s"] = round(step * tokens_per_step / now)
                if eval_loader is not None:
                    record |= evaluate(model, eval_loader, tokenizer, cfg, accelerator)
                if accelerator.is_main_process:
                    output_dir.mkdir(parents=True, exist_ok=True)
                    with metrics_file.open("a") as f:
                        f.write(json.dumps(record) + "\n")
                accelerator.print(json.dumps(record))
            if step % cfg.save_steps == 0 and step < total_steps:
                now = elapsed + time.perf_counter() - tic
                checkpoints.save(accelerator, step, {"epoch": epoch, "batches_done": batches_done, "elapsed": now})
            if step >= total_steps:
                break
        else:
            epoch, batches_done = epoch + 1, 0
    progress.close()

    elapsed += time.perf_counter() - tic
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        summary = {"steps": step, "tokens_seen": step * tokens_per_step, "wall_time_s": round(elapsed, 1)}
        summary["num_processes"] = accelerator.num_processes
        final_eval = json.loads(metrics_file.read_text().splitlines()[-1]) if metrics_file.exists() else {}
        summary |= {k: v for k, v in final_eval.items() if k.startswith("eval_")}
        (output_dir / "results.json").write_text(json.dumps(summary, indent=2) + "\n")

        def card(folder: Path) -> None:
            details = (
                "## Pretraining\n\nMasked-language-model pretraining (15% of tokens; 80/10/10) with "
                f"`training/pretrain.py`: {summary['tokens_seen']:,} tokens in {step:,} steps, "
                f"{elapsed / 60:.1f} min of wall time."
            )
            metrics = {k: v for k, v in summary.items() if k.startswith("eval_")}
            write_model_card(
                folder, config, task="fill-mask", datasets=_dataset_names(cfg), metrics=metrics, details=details
            )

        save_pretrained_atomically(accelerator.unwrap_model(model), tokenizer, output_dir, card)
        accelerator.print(f"Saved the pretrained encoder to {output_dir}")
    accelerator.end_training()


def _dataset_names(cfg: SimpleNamespace) -> list[str]:
    if cfg.dataset:
        return [cfg.dataset]
    files = [cfg.train_files] if isinstance(cfg.train_files, str) else list(cfg.train_files)
    return [Path(f).name for f in files]


if __name__ == "__main__":
    main()
