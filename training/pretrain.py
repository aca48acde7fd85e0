"""Masked-language-model pretraining of the Gaze encoder.

    accelerate launch -m training.pretrain --train-files corpus.txt [--config FILE.yaml] [--key value ...]

Texts (plain files with one document per line, JSON Lines files with a text column, or a hub
dataset) are tokenized, joined with [SEP] and packed into full blocks, so no compute is spent on
padding. Each step masks `mlm_probability` of the tokens (80% [MASK], 10% a random token, 10%
unchanged; Devlin et al. 2019) and the model predicts them. The run shares its settings, resume
and outputs with training.train (training/loop.py); the result is a folder that
`training.train --init-from` starts a classifier from.
"""

from dataclasses import dataclass, replace
from pathlib import Path

import datasets
import torch
from accelerate import Accelerator

from model import GazeForMaskedLM
from model.card import write_model_card
from training.config import RunArgs, RunError, run_script, setting
from training.documents import TextArgs, dataset_names, read_documents
from training.loop import Task, begin, fit
from training.runtime import make_dataloader
from training.start import build_model, load_or_train_tokenizer, resolve_start, sequence_length


@dataclass(frozen=True)
class PretrainArgs(TextArgs, RunArgs):
    """Masked-language-model pretraining."""

    validation_documents: int = setting(500, "documents held out for the masked-token metrics", minimum=1)
    mlm_probability: float = setting(0.15, "the fraction of tokens masked and predicted", above=0, below=1)
    # Far less than one pass over the text: nothing to overfit, so no dropout (Geiping & Goldstein 2022),
    # large batches, a higher learning rate, and the last weights rather than the "best".
    hidden_dropout_prob: float = setting(0.0, "dropout on the blocks' outputs")
    attention_probs_dropout_prob: float = setting(0.0, "dropout on the attention weights")
    per_device_train_batch_size: int = setting(128, "training blocks per batch and process")
    learning_rate: float = setting(1e-3, "the peak learning rate (AdamW)")
    warmup_ratio: float = setting(0.06, "the fraction of the steps spent warming the learning rate up")
    num_train_epochs: int = setting(1, "passes over the text")
    eval_steps: int = setting(500, "evaluate every N optimizer steps; 0: at the end of every epoch")
    load_best_model_at_end: bool = setting(False, "the saved folder holds the best weights, not the last")
    output_dir: str = setting("runs/pretrain", "the folder of the saved model, its records and checkpoints")


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


def evaluate(model, loader, tokenizer, cfg: PretrainArgs, accelerator: Accelerator) -> dict[str, float]:
    """Masked-token loss and accuracy on held-out blocks, with the same masks every time."""
    model.eval()
    generator = torch.Generator().manual_seed(cfg.seed)
    total_loss, correct, count = 0.0, 0, 0
    with torch.no_grad():
        for input_ids in loader:
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
    return {"loss": total_loss / max(count, 1), "masked_accuracy": correct / max(count, 1)}


def main(argv: list[str] | None = None) -> None:
    run_script(pretrain, PretrainArgs, argv)


def pretrain(given: PretrainArgs) -> dict:
    accelerator, start = begin(given)
    cfg = replace(given, init_from=resolve_start(given.init_from, given.output_dir, accelerator))
    with accelerator.main_process_first():
        documents = read_documents(cfg)
        held_out = max(1, min(cfg.validation_documents, len(documents) // 10))
        split = documents.train_test_split(test_size=held_out, seed=cfg.seed)
    run_copy = Path(cfg.output_dir) / "checkpoints" / "tokenizer"
    texts = lambda: split["train"]["text"]  # noqa: E731
    tokenizer = load_or_train_tokenizer(cfg, texts, accelerator, run_copy, start, fallback=cfg.init_from)
    block_size = sequence_length(cfg)
    with accelerator.main_process_first():
        train_blocks = pack_into_blocks(split["train"], tokenizer, block_size)
        eval_blocks = pack_into_blocks(split["test"], tokenizer, block_size)
    if len(train_blocks) == 0 or len(eval_blocks) == 0:
        raise RunError(f"too little text for one block of {block_size} tokens in the training or held-out part")
    accelerator.print(
        f"{len(train_blocks):,} training and {len(eval_blocks):,} held-out blocks of {block_size} tokens "
        f"({held_out:,} documents held out)"
    )

    def masked_loss(model, input_ids: torch.Tensor) -> torch.Tensor:
        inputs, labels = mask_tokens(input_ids, tokenizer, cfg.mlm_probability)
        return model(input_ids=inputs, labels=labels).loss

    task = Task(
        name="Pretraining",
        model=build_model(GazeForMaskedLM, cfg, tokenizer, accelerator.print)[0],
        tokenizer=tokenizer,
        train_loader=make_dataloader(train_blocks, stack, cfg.per_device_train_batch_size, cfg.seed, shuffle=True),
        eval_loader=make_dataloader(eval_blocks, stack, cfg.per_device_eval_batch_size, cfg.seed, shuffle=False),
        loss=masked_loss,
        count_tokens=lambda input_ids: torch.tensor(input_ids.numel(), device=input_ids.device),
        evaluate=lambda model, loader, accelerator: evaluate(model, loader, tokenizer, cfg, accelerator),
        write_card=lambda folder, model, results: write_card(folder, model, cfg, results),
        facts={"train_blocks": len(train_blocks), "validation_blocks": len(eval_blocks), "block_size": block_size},
    )
    return fit(cfg, accelerator, task, start)


def write_card(folder: Path, model, cfg: PretrainArgs, results: dict) -> None:
    details = (
        f"## Pretraining\n\nMasked-language-model pretraining ({cfg.mlm_probability:.0%} of tokens; 80/10/10) with "
        f"`training/pretrain.py`: {results['tokens_seen']:,} tokens in {results['steps']:,} steps, "
        f"{results['wall_time_s'] / 60:.1f} min of wall time on `{results['device']}`."
    )
    metrics = {k: v for k, v in results.items() if k.startswith("eval_")}
    write_model_card(
        folder, model.config, task="fill-mask", datasets=dataset_names(cfg), metrics=metrics, details=details
    )


if __name__ == "__main__":
    main()
