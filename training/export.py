"""Turn a training or pretraining run into a shippable checkpoint folder.

    python -m training.export runs/finetune-sst2 checkpoints/gaze-sst2 \
        --validation-file ../shared/data/sst2/dev.tsv --earlier-runs runs/imdb-sentiment --datasets ...
    python -m training.export runs/gaze-base-vectors checkpoints/gaze-base --datasets stanfordnlp/imdb

The weights are stored in float16, which halves the file, while `config.json` keeps `"dtype":
"float32"`, so `from_pretrained` computes in full precision. Because rounding the weights can move a
prediction, an exported classifier is evaluated again through the prediction core
(inference/predictor.py) and the model card states that accuracy, the one users get. The folder is
assembled next to the target and renamed into place, so a crash never leaves half a checkpoint
where a good one was.
"""

import argparse
import json
import os
import platform
import shutil
from pathlib import Path

import torch

from inference.predictor import Predictor
from model import GazeForMaskedLM, GazeForSequenceClassification, GazeModel
from model.card import read_lineage, write_model_card
from model.folder import ModelLoadError, read_config
from training.checkpoints import staged
from training.data import label_key, load_data
from training.metrics import multi_label_metrics

RUN_FILES = ("results.json", "metrics.jsonl", "learning_curve.png")
TASKS = {  # the Hub's pipeline tag of each kind of folder
    GazeForSequenceClassification: "text-classification",
    GazeForMaskedLM: "fill-mask",
    GazeModel: "feature-extraction",
}
MODEL_CLASSES = {cls.__name__: cls for cls in TASKS}


def export(
    run: Path, target: Path, validation_file: Path | None, earlier_runs: list[Path], datasets: list[str]
) -> dict:
    """Write `target`; returns the exported classifier's accuracy (an MLM model: its pretraining metrics)."""
    try:
        architectures = read_config(run).architectures or []
    except ModelLoadError as error:
        raise SystemExit(f"error: {error}") from None
    if len(architectures) != 1 or architectures[0] not in MODEL_CLASSES:
        raise SystemExit(f"error: {run}: config.json names {architectures}; expected one of {', '.join(MODEL_CLASSES)}")
    model_class = MODEL_CLASSES[architectures[0]]
    classifier = model_class is GazeForSequenceClassification
    if classifier and validation_file is None:
        raise SystemExit("a classifier is evaluated after export: give --validation-file")
    model = model_class.from_pretrained(run, dtype=torch.float32, use_safetensors=True)
    with staged(target) as staging:
        model.half().save_pretrained(staging)
        config = json.loads((staging / "config.json").read_text())
        config["dtype"] = "float32"
        (staging / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        for name in ("tokenizer.json", "tokenizer_config.json", *RUN_FILES):
            if (run / name).exists():
                shutil.copy2(run / name, staging / name)

        if classifier:
            metrics = evaluate(staging, validation_file)
            name, key = ("Micro-F1", "eval_micro_f1") if "eval_micro_f1" in metrics else ("Accuracy", "eval_accuracy")
            export_note = (
                f"{name} of this folder on `{validation_file.name}` ({metrics['examples']} sentences), measured "
                f"after export through the prediction core: **{metrics[key]:.4f}**."
            )
        elif model_class is GazeForMaskedLM:
            results = json.loads((run / "results.json").read_text())
            metrics = {k: v for k, v in results.items() if k.startswith("eval_")}
            export_note = "Masked-token metrics of the run (held-out documents): " + ", ".join(
                f"{k.removeprefix('eval_')} {v:.4f}" for k, v in metrics.items()
            )
        else:  # a bare encoder (training.word_vectors): nothing to measure before fine-tuning
            metrics = {}
            export_note = "A bare encoder, the start of `training.train`: measured by what fine-tuning makes of it."
        write_card(staging, target.name, model, [*earlier_runs, run], metrics, export_note, datasets)
    return metrics


def evaluate(folder: Path, validation_file: Path) -> dict:
    """Accuracy of the folder, through the prediction core; integer labels 0, 1, ... are
    named by the model's id2label. A multi-label folder: micro- and macro-F1 and subset accuracy of
    its predicted `labels`, as training evaluates them."""
    predictor = Predictor(folder)
    data = load_data(train_file=validation_file, validation_file=validation_file, label_names=predictor.labels)
    predictions = predictor.predict(list(data.validation["text"]), attention="none")
    if data.multi_label:
        predicted = torch.tensor([[name in p["labels"] for name in predictor.labels] for p in predictions])
        expected = torch.tensor([[name in labels for name in predictor.labels] for labels in data.validation["label"]])
        metrics = multi_label_metrics(predicted, expected)
        return {f"eval_{name}": value for name, value in metrics.items()} | {"examples": len(predictions)}
    expected = [data.label_names[data.label2id[label_key(label)]] for label in data.validation["label"]]
    correct = sum(p["label"] == e for p, e in zip(predictions, expected, strict=True))
    return {"eval_accuracy": correct / len(expected), "examples": len(expected)}


def write_card(
    folder: Path, title: str, model, runs: list[Path], metrics: dict, note: str, datasets: list[str]
) -> None:
    """The card of the last run, with every stage's own description (from its card) as the recipe."""
    lineage = read_lineage(runs[-1])
    outside = "the published weights named under Source" if lineage else "no weights or word vectors from elsewhere"
    sections = ["## Recipe"]
    for number, run in enumerate(runs, 1):
        sections += ["", f"### Stage {number}: `{run}`", "", stage_description(run)]
    sections += [
        "",
        f"### Stage {len(runs) + 1}: export (`python -m training.export`)",
        "",
        f"float16 weights, float32 compute. {note}",
        "",
        f"Data: {', '.join(datasets)}; {outside}. Hardware: {cpu_name()}, "
        f"{os.cpu_count()} cores, no GPU, shared with other jobs while training (wall times are inflated by that).",
    ]
    write_model_card(
        folder,
        model.config,
        task=TASKS[type(model)],
        datasets=datasets,
        metrics={k: v for k, v in metrics.items() if k.startswith("eval_")},
        details="\n".join(sections),
        title=title,
        lineage=lineage,
    )


def stage_description(run: Path) -> str:
    """The "## Pretraining" or "## Training" section that the run's script wrote into its card."""
    card = (run / "README.md").read_text(encoding="utf-8")
    for heading in ("## Pretraining", "## Training"):
        if heading in card:
            return card.split(heading, 1)[1].split("\n## ", 1)[0].strip()
    raise ValueError(f"{run / 'README.md'} has no Pretraining or Training section")


def cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="the --output-dir of a training.train or training.pretrain run")
    parser.add_argument("target", type=Path, help="the folder to write, e.g. checkpoints/gaze-sst2")
    parser.add_argument("--validation-file", type=Path, help="a classifier is evaluated on it after export")
    parser.add_argument("--datasets", nargs="+", required=True, help="the data every stage saw, for the card")
    parser.add_argument(
        "--earlier-runs", type=Path, nargs="*", default=[], help="the runs it started from, first stage first"
    )
    args = parser.parse_args()
    metrics = export(args.run, args.target, args.validation_file, args.earlier_runs, args.datasets)
    print(f"wrote {args.target}: {metrics}")


if __name__ == "__main__":
    main()
