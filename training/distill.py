"""Distil a Gaze classifier into another (smaller, faster) one, on texts that need no labels.

    accelerate launch -m training.distill --teacher checkpoints/gaze-sst2 --train-files texts.txt \
        --validation-file dev.tsv [--init-from checkpoints/gaze-imdb-vectors] [--key value ...]

The teacher labels every training text with its probabilities, once, through the serving core (kept in the
run's checkpoints/, so `--resume` does not label again); the student learns to give the same probabilities:
the cross-entropy against the teacher's softmax (Hinton et al. 2015, at temperature 1), or for a multi-label
teacher the binary cross-entropy against each label's sigmoid. Any unlabeled in-domain text is training data
(`--train-files`: .txt, one text per line, .jsonl, .tsv or .csv; their labels, if any, are not read). The
student has the teacher's labels; the labeled `--validation-file` picks its best weights, as in training.train.
The output folder is what training.train writes.
"""

from dataclasses import dataclass, replace
from pathlib import Path

import datasets
import torch
import torch.nn.functional as F
from accelerate.utils import tqdm
from safetensors.torch import load_file, save_file

from inference.predictor import Predictor
from model import GazeForSequenceClassification
from model.card import read_lineage, write_model_card
from model.folder import ModelLoadError, check_model_folder, read_config
from training.checkpoints import staged
from training.config import RunArgs, RunError, run_script, setting
from training.data import collator, load_data, tokenize
from training.documents import TextArgs, dataset_names, read_documents
from training.loop import Task, begin, fit
from training.runtime import make_dataloader
from training.start import GAZE_IMDB_VECTORS, build_model, load_or_train_tokenizer, resolve_start, sequence_length
from training.train import METRICS, default_learning_rate, evaluate

# Texts the teacher labels per call: large enough for its length buckets, small enough for a steady progress bar.
TEACHER_CHUNK = 2048


@dataclass(frozen=True)
class DistillArgs(TextArgs, RunArgs):
    """Distilling a classifier."""

    teacher: str = setting("checkpoints/gaze-sst2", "the Gaze classifier whose probabilities the student learns")
    validation_file: str | None = setting(None, "labeled texts (.csv, .tsv or .jsonl) that pick the best weights")
    init_from: str | None = setting(
        str(GAZE_IMDB_VECTORS), "the student's start: a Gaze folder, or a BERT-family folder or hub id; none: random"
    )
    learning_rate: float | None = setting(None, "default: as training.train's for the --init-from folder")
    metric_for_best_model: str | None = setting(None, "default: accuracy (multi-label teacher: micro_f1)")
    output_dir: str = setting("runs/student", "the folder of the saved model, its records and checkpoints")


def main(argv: list[str] | None = None) -> None:
    run_script(distill, DistillArgs, argv)


def distill(given: DistillArgs) -> dict:
    if not given.validation_file:
        raise RunError("give --validation-file: labeled texts that pick the student's best weights")
    try:
        config = read_config(check_model_folder(given.teacher))
    except ModelLoadError as error:
        raise RunError(f"--teacher {given.teacher}: {error}") from None
    accelerator, start = begin(given)
    multi_label = config.problem_type == "multi_label_classification"
    kind = "multi-label" if multi_label else "single-label"
    label_names = [config.id2label[i] for i in range(config.num_labels)]
    with accelerator.main_process_first():
        texts = read_documents(given)
        # load_data checks a labeled file; given as its own validation file, it is the validation split whole.
        labeled = load_data(
            train_file=given.validation_file, validation_file=given.validation_file, label_names=label_names
        )
    if labeled.multi_label != multi_label:
        raise RunError(f"{given.validation_file}: its labels are not {kind}, as the teacher {given.teacher}'s are")
    init_from = resolve_start(given.init_from, given.output_dir, accelerator)
    cfg = replace(
        given,
        init_from=init_from,
        metric_for_best_model=given.metric_for_best_model or METRICS[kind][1],
        learning_rate=default_learning_rate(init_from) if given.learning_rate is None else given.learning_rate,
    )
    if cfg.metric_for_best_model not in METRICS[kind]:
        raise RunError(f"metric_for_best_model {cfg.metric_for_best_model!r}: choose one of {', '.join(METRICS[kind])}")

    checkpoints = Path(cfg.output_dir) / "checkpoints"
    with accelerator.main_process_first():  # the main process labels, the others read its file
        targets = teacher_probabilities(given.teacher, texts["text"], checkpoints / "teacher-probabilities.safetensors")
    tokenizer = load_or_train_tokenizer(
        cfg, lambda: texts["text"], accelerator, checkpoints / "tokenizer", start, fallback=cfg.init_from
    )
    length = sequence_length(cfg)
    with accelerator.main_process_first():
        train_set = encode(texts, targets, tokenizer, length)
        validation = tokenize(labeled, tokenizer, length)["validation"]

    labels = {"id2label": dict(enumerate(label_names)), "label2id": {name: i for i, name in enumerate(label_names)}}
    model, _ = build_model(
        GazeForSequenceClassification, cfg, tokenizer, accelerator.print, problem_type=config.problem_type, **labels
    )
    pad = collator(tokenizer)
    train_loader = make_dataloader(
        train_set.remove_columns("length"), pad, cfg.per_device_train_batch_size, cfg.seed, shuffle=True,
        lengths=train_set["length"], group_by_length=True,
    )  # fmt: skip
    eval_loader = make_dataloader(
        validation.remove_columns("length"), pad, cfg.per_device_eval_batch_size, cfg.seed, shuffle=False
    )
    accelerator.print(
        f"{len(train_set):,} texts labeled by {given.teacher}, {len(validation):,} validation examples, "
        f"{len(label_names)} labels ({kind})"
    )

    def distillation_loss(model, batch) -> torch.Tensor:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
        target = batch["teacher_probabilities"].float()
        if multi_label:
            return F.binary_cross_entropy_with_logits(logits, target)
        return F.cross_entropy(logits, target)

    facts = {"train_examples": len(train_set), "validation_examples": len(validation), "labels": label_names}
    task = Task(
        "Distilling",
        model,
        tokenizer,
        train_loader,
        eval_loader,
        lambda model, loader, accelerator: evaluate(model, loader, accelerator, multi_label=multi_label),
        write_card=lambda folder, model, results: write_card(folder, model, cfg, results, given.init_from),
        loss=distillation_loss,
        facts=facts,
    )
    return fit(cfg, accelerator, task, start)


def teacher_probabilities(folder: str, texts: list[str], cache: Path) -> torch.Tensor:
    """The teacher's probabilities of every label for each text, (texts, labels); read from `cache` when it
    holds as many rows (a resumed run), else computed by the serving core, at its faster precision, and
    written there."""
    if cache.is_file():
        saved = load_file(cache)["probabilities"]
        if len(saved) == len(texts):
            return saved
    teacher = Predictor(folder, precision="auto", decimals=6)
    print(f"Teacher {folder}: {teacher.precision_choice}")
    names = [teacher.model.config.id2label[i] for i in range(teacher.model.config.num_labels)]
    rows = []
    with tqdm(total=len(texts), desc="Teacher", unit=" texts", main_process_only=True) as bar:
        for begin_at in range(0, len(texts), TEACHER_CHUNK):
            chunk = texts[begin_at : begin_at + TEACHER_CHUNK]
            rows += [[p["scores"][name] for name in names] for p in teacher.predict(chunk, attention="none")]
            bar.update(len(chunk))
    probabilities = torch.tensor(rows, dtype=torch.float32)
    cache.parent.mkdir(parents=True, exist_ok=True)
    with staged(cache) as staging:
        save_file({"probabilities": probabilities}, staging)
    return probabilities


def encode(texts: datasets.Dataset, targets: torch.Tensor, tokenizer, length: int) -> datasets.Dataset:
    """The training texts tokenized, each with its teacher's probabilities and its length in tokens."""
    texts = texts.add_column("teacher_probabilities", targets.tolist())

    def tokenize_batch(batch: dict[str, list]) -> dict[str, list]:
        encoded = tokenizer(batch["text"], truncation=True, max_length=length)
        return {**encoded, "length": [len(ids) for ids in encoded["input_ids"]]}

    return texts.map(tokenize_batch, batched=True, remove_columns=["text"], desc="Tokenizing")


def write_card(folder: Path, model, cfg: DistillArgs, results: dict, started_from: str | None) -> None:
    start = f"`{Path(started_from).name}`" if started_from else "random weights"
    details = (
        "## Training\n\n"
        f"Distilled with `training/distill.py` from the teacher `{Path(cfg.teacher).name}`: the student, started from "
        f"{start}, learned the teacher's probabilities on {results['train_examples']:,} unlabeled texts of "
        f"{', '.join(f'`{name}`' for name in dataset_names(cfg))}: {results['steps']:,} optimizer steps, batch "
        f"{cfg.per_device_train_batch_size} × {results['num_processes']} process(es) × "
        f"{cfg.gradient_accumulation_steps} accumulation, learning rate {cfg.learning_rate} ({cfg.lr_scheduler}, "
        f"warmup {cfg.warmup_ratio}), mixed precision `{results['mixed_precision']}`, seed {cfg.seed}. Weights from "
        f"step {results['model_step']} (best validation {cfg.metric_for_best_model}). Wall time "
        f"{results['wall_time_s'] / 60:.1f} min on `{results['device']}`. Metrics are on the validation set "
        f"({results['validation_examples']:,} labeled examples, `{Path(cfg.validation_file).name}`)."
    )
    shown = ("eval_accuracy", "eval_micro_f1", "eval_macro_f1", "eval_subset_accuracy")
    metrics = {k: results[k] for k in shown if results.get(k) is not None}
    write_model_card(
        folder,
        model.config,
        task="text-classification",
        datasets=dataset_names(cfg),
        metrics=metrics,
        details=details,
        title=Path(cfg.output_dir).name,
        lineage=read_lineage(cfg.teacher),  # what the teacher was built from, the student learned from
    )


if __name__ == "__main__":
    main()
