"""Fine-tune a Gaze text classifier.

    accelerate launch -m training.train --train-file train.csv [--validation-file dev.csv] [--key value ...]

Data is a hub dataset (`--dataset-name`) or local files (`--train-file`, optional `--validation-file`
and `--test-file`; CSV, TSV or JSON Lines; see training/data.py); without a validation file, a
seeded 10 % of the training file is held out. Labels that are lists make a multi-label classifier
(`problem_type` "multi_label_classification": one sigmoid per label, binary cross-entropy, a label
applies at a score of 0.5 or more). The model starts from random weights or from any
saved Gaze folder (`--init-from DIR`). The run evaluates every `eval_steps` optimizer steps (or
every epoch), keeps the best weights by `metric_for_best_model`, stops early after
`early_stopping_patience` evaluations without improvement, and writes into `--output-dir`:

    config.json, model.safetensors, tokenizer files, *.py, README.md   a ready Hugging Face folder
    metrics.jsonl, results.json, learning_curve.png                    what happened
    checkpoints/step-N/                                                resumable states (--resume)
"""

import math
from dataclasses import dataclass, fields, replace
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch.utils.data import DataLoader

from inference.contract import THRESHOLD  # where a multi-label class applies: the served models' rule
from model import GazeForSequenceClassification
from model.card import read_lineage, write_model_card
from training.config import RunArgs, RunError, run_script, setting
from training.data import ClassificationData, collator, load_data, tokenize
from training.loop import Task, begin, fit
from training.metrics import DecisionCounts
from training.runtime import make_dataloader
from training.start import (
    GAZE_BASE,
    GAZE_IMDB_VECTORS,
    build_model,
    load_or_train_tokenizer,
    read_gaze_config,
    resolve_start,
    sequence_length,
)

# A small training set gets more than 3 epochs by default: at least this many optimizer steps. Fine-tuning on few
# examples needs more steps than 3 epochs give (Mosbach et al. 2021, Zhang et al. 2021); a 300-text multi-label
# file with 8 labels, from gaze-base, reached micro-F1 0.98 in 90 steps and 0.60 in 3 epochs' 27
# (tests/test_multi_label.py has a smaller case). Data sets of more than 1,000 texts are unaffected.
MIN_STEPS = 100
# A new multi-label head learns at 10x the encoder's rate, from biases at each label's training rate (Lin et al.
# 2017's prior): a sigmoid must cross 0.5 on its own, not merely beat the other labels as under a softmax, and at
# the encoder's 1e-4 the head barely moves in a short run. On that file: 0.98 micro-F1 with both, 0.73 with the prior
# alone, 0.26 with neither (100 steps; 27 steps: 0.60 with both, 0.0 without).
MULTI_LABEL_HEAD_LR_SCALE = 10.0


@dataclass(frozen=True)
class DataArgs:
    """The labeled data: a hub dataset, or local files (which take precedence)."""

    dataset_name: str | None = setting(None, "a hub dataset id, e.g. stanfordnlp/sst2")
    dataset_config: str | None = setting(None, "the hub dataset's configuration")
    train_file: str | None = setting(None, "a .csv, .tsv (GLUE style, no quoting) or .jsonl file of texts and labels")
    validation_file: str | None = setting(None, "picks the best weights; default: a seeded 10 % of the training file")
    test_file: str | None = setting(None, "evaluated once, with the saved weights, into results.json")
    text_column: str | None = setting(None, "default: sentence, else text")
    label_column: str | None = setting(None, "default: label, else labels (lists of labels make a multi-label model)")
    label_names: list[str] | None = setting(
        None, "names for integer labels, or the order of string labels (default: sorted)"
    )
    cache_dir: str | None = setting(None, "the datasets cache (raw Arrow files and tokenized splits)")


@dataclass(frozen=True)
class TrainArgs(DataArgs, RunArgs):
    """Fine-tuning a classifier."""

    init_from: str | None = setting(
        str(GAZE_BASE), "the start: a Gaze folder, or a BERT-family folder or hub id; none: random weights"
    )
    learning_rate: float | None = setting(
        None, "default: 1e-4 from gaze-base (as 1/width for other published encoders), 5e-4 otherwise"
    )
    num_train_epochs: int | None = setting(
        None, f"default: 3, or as many as make {MIN_STEPS} optimizer steps on a small training set"
    )
    group_by_length: bool = setting(True, "batches of texts of similar length: less padding")
    classifier_dropout: float | None = setting(
        None, "dropout before the classifier; default: hidden_dropout_prob", minimum=0, below=1
    )
    freeze_embeddings: bool = setting(False, "keep the token embeddings as loaded (CNN-static keeps its vectors)")
    metric_for_best_model: str | None = setting(
        None, "picks the best weights; default: accuracy (multi-label: micro_f1)"
    )
    output_dir: str = setting("runs/classifier", "the folder of the saved model, its records and checkpoints")


# What `evaluate` reports, by kind of data; the first after the loss is the default metric_for_best_model.
METRICS = {
    "single-label": ("loss", "accuracy", "macro_f1"),
    "multi-label": ("loss", "micro_f1", "macro_f1", "subset_accuracy"),
}


def main(argv: list[str] | None = None) -> None:
    run_script(train, TrainArgs, argv)


def train(given: TrainArgs) -> dict:
    accelerator, start = begin(given)
    with accelerator.main_process_first():  # the main process fills the datasets cache the others read
        data_settings = {spec.name: getattr(given, spec.name) for spec in fields(DataArgs)}
        data = load_data(**data_settings, seed=given.seed, log=accelerator.print)
    kind = "multi-label" if data.multi_label else "single-label"
    init_from = resolve_start(given.init_from, given.output_dir, accelerator)  # an import makes a Gaze folder
    cfg = replace(
        given,
        init_from=init_from,
        metric_for_best_model=given.metric_for_best_model or METRICS[kind][1],
        learning_rate=default_learning_rate(init_from) if given.learning_rate is None else given.learning_rate,
    )
    if cfg.metric_for_best_model not in METRICS[kind]:
        raise RunError(
            f"metric_for_best_model {cfg.metric_for_best_model!r} is not evaluated for {kind} data;"
            f" choose one of {', '.join(METRICS[kind])}"
        )
    run_copy = Path(cfg.output_dir) / "checkpoints" / "tokenizer"
    # From scratch, the IMDB encoder's vocabulary by default: a trained one differs from run to run.
    tokenizer = load_or_train_tokenizer(
        cfg, lambda: data.train["text"], accelerator, run_copy, start, fallback=cfg.init_from or GAZE_IMDB_VECTORS
    )
    with accelerator.main_process_first():
        splits = tokenize(data, tokenizer, sequence_length(cfg))

    labels = {"id2label": data.id2label, "label2id": {name: i for i, name in data.id2label.items()}}
    labels["problem_type"] = "multi_label_classification" if data.multi_label else "single_label_classification"
    model, head_kept = build_model(
        GazeForSequenceClassification,
        cfg,
        tokenizer,
        accelerator.print,
        classifier_dropout=cfg.classifier_dropout,
        **labels,
    )
    new_multi_label_head = data.multi_label and not head_kept
    if new_multi_label_head:
        with torch.no_grad():
            rates = torch.tensor(splits["train"]["labels"], dtype=torch.float).mean(0).clamp(1e-3, 1 - 1e-3)
            model.classifier.bias.copy_(torch.logit(rates))
    if cfg.freeze_embeddings:
        model.gaze.embeddings.word_embeddings.requires_grad_(False)
    train_loader, eval_loader, test_loader = make_loaders(cfg, splits, tokenizer)
    accelerator.print(
        f"{len(splits['train']):,} training and {len(splits['validation']):,} validation examples, "
        f"{len(data.label_names)} labels ({kind})"
    )
    cfg = with_epochs(cfg, train_loader, accelerator)
    facts = {"train_examples": len(data.train), "validation_examples": len(data.validation), "labels": data.label_names}
    task = Task(
        "Training",
        model,
        tokenizer,
        train_loader,
        eval_loader,
        partial(evaluate, multi_label=data.multi_label),
        write_card=lambda folder, model, results: write_card(folder, model, cfg, data, results, given.init_from),
        test_loader=test_loader,
        facts=facts,
        head_lr_scale=MULTI_LABEL_HEAD_LR_SCALE if new_multi_label_head else 1.0,
    )
    results = fit(cfg, accelerator, task, start)
    if data.multi_label and results.get("eval_predicted_labels_per_text") == 0:
        accelerator.print(
            f"warning: the saved model assigns no label to any of the {len(data.validation):,} validation texts"
            f" (every score is below {THRESHOLD}; micro-F1 {results.get('eval_micro_f1', 0):.2f}): it has not"
            " learned the labels. Train longer (--num-train-epochs), or with more examples of each label"
        )
    return results


def make_loaders(cfg: TrainArgs, splits: dict, tokenizer) -> tuple[DataLoader, DataLoader, DataLoader | None]:
    """The training batches (shuffled, grouped by length), the validation and the labeled test batches."""
    pad = collator(tokenizer)
    batches = {"batch_size": cfg.per_device_eval_batch_size, "seed": cfg.seed, "shuffle": False}
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
    eval_loader = make_dataloader(splits["validation"].remove_columns("length"), pad, **batches)
    labeled_test = "test" in splits and "labels" in splits["test"].column_names
    test_loader = make_dataloader(splits["test"].remove_columns("length"), pad, **batches) if labeled_test else None
    return train_loader, eval_loader, test_loader


def with_epochs(cfg: TrainArgs, train_loader: DataLoader, accelerator: Accelerator) -> TrainArgs:
    """`cfg` with its number of epochs: as given, else 3, or as many as make MIN_STEPS optimizer steps."""
    if cfg.num_train_epochs is not None:
        return cfg
    batches_per_process = math.ceil(len(train_loader) / accelerator.num_processes)
    steps_per_epoch = math.ceil(batches_per_process / cfg.gradient_accumulation_steps)
    epochs = max(3, math.ceil(MIN_STEPS / steps_per_epoch))
    if epochs > 3 and cfg.max_steps <= 0:
        accelerator.print(
            f"{epochs} epochs: a small training set gets at least {MIN_STEPS} optimizer steps"
            " (--num-train-epochs N to choose)"
        )
    return replace(cfg, num_train_epochs=epochs)


def default_learning_rate(init_from: str | None) -> float:
    """From a published post-norm encoder, 1e-4 at gaze-base's width (384), as 1/width elsewhere: 5e-5 for
    BERT-base's 768, inside the 2e-5 to 5e-5 Devlin et al. (2019) searched (Adam's step size scales as
    1/width, Yang et al. 2022). On fold 0 of the four Kim data sets, gaze-base at 1e-4 beat 5e-5 on three
    (CR +1.6, MPQA +0.4, MR +0.2; Subj -0.2; benchmarks/accuracy.md). Gaze's pre-norm models, from scratch
    or from its own pretraining, train at 5e-4."""
    if not init_from:
        return 5e-4
    config = read_gaze_config(init_from)
    return 1e-4 * 384 / config.hidden_size if config.norm_placement == "post" else 5e-4


def evaluate(model, loader, accelerator: Accelerator, multi_label: bool = False) -> dict[str, float]:
    """The split's METRICS (gathered from every process): loss, accuracy and macro-F1, or for multi-label
    data loss, micro- and macro-F1 and subset accuracy (every label of a text right) at THRESHOLD. Streams:
    each batch's decisions are counted and its logits dropped."""
    model.eval()
    counts, loss_sum = None, 0.0
    with torch.no_grad():
        for batch in loader:
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            logits, labels = accelerator.gather_for_metrics((logits.float(), batch["labels"]))
            logits, labels = logits.cpu(), labels.cpu()
            counts = counts or DecisionCounts(logits.shape[-1])
            if multi_label:
                loss_sum += F.binary_cross_entropy_with_logits(logits, labels.float(), reduction="sum").item()
                counts.add(logits.sigmoid() >= THRESHOLD, labels.bool())
            else:
                loss_sum += F.cross_entropy(logits, labels, reduction="sum").item()
                counts.add(logits.argmax(-1), labels)
    model.train()
    if counts is None:
        raise RunError("the validation split is empty")
    if multi_label:
        return {"loss": loss_sum / (counts.texts * counts.num_classes), **counts.multi_label()}
    return {"loss": loss_sum / counts.texts, **counts.single_label()}


def write_card(
    folder: Path, model, cfg: TrainArgs, data: ClassificationData, results: dict, started_from: str | None
) -> None:
    source = cfg.dataset_name if not cfg.train_file else Path(cfg.train_file).name
    start = f"`{Path(started_from).name if Path(started_from).is_dir() else started_from}`" if started_from else None
    start = f"the model {start}" if start else "random weights"
    details = (
        "## Training\n\n"
        f"Fine-tuned from {start} with `training/train.py` on {results['train_examples']:,} examples of `{source}`: "
        f"{results['steps']:,} optimizer steps, batch {cfg.per_device_train_batch_size} × "
        f"{results['num_processes']} process(es) × {cfg.gradient_accumulation_steps} accumulation, learning rate "
        f"{cfg.learning_rate} ({cfg.lr_scheduler}, warmup {cfg.warmup_ratio}), "
        f"mixed precision `{results['mixed_precision']}`, "
        f"seed {cfg.seed}. Weights from step {results['model_step']} (best validation {cfg.metric_for_best_model}). "
        f"Wall time {results['wall_time_s'] / 60:.1f} min on `{results['device']}`, "
        f"{results['train_tokens_per_s']:,} training tokens/s. Metrics are on the validation set "
        f"({results['validation_examples']:,} examples, {data.sources['validation'].name})."
    )
    shown = ("eval_accuracy", "eval_micro_f1", "eval_macro_f1", "eval_subset_accuracy")
    shown += ("test_accuracy", "test_micro_f1")
    metrics = {k: results[k] for k in shown if results.get(k) is not None}
    lineage = read_lineage(cfg.init_from) if cfg.init_from else {}
    write_model_card(
        folder,
        model.config,
        task="text-classification",
        datasets=[source],
        metrics=metrics,
        details=details,
        title=Path(cfg.output_dir).name,
        lineage=lineage,
    )


if __name__ == "__main__":
    main()
