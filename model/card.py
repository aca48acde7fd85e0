"""Model cards: the README.md that makes a saved Gaze folder self-describing on the Hub."""

from pathlib import Path

import yaml

from .configuration_gaze import GazeConfig

SOURCE_HEADING = "## Source"  # where published weights came from: repeated in every card built from them
AUTO_CLASSES = {
    "text-classification": "AutoModelForSequenceClassification",
    "fill-mask": "AutoModelForMaskedLM",
    "feature-extraction": "AutoModel",
}


def write_model_card(
    folder: str | Path,
    config: GazeConfig,
    *,
    task: str,
    datasets: list[str],
    metrics: dict[str, float] | None = None,
    details: str = "",
    title: str | None = None,
    lineage: dict | None = None,
) -> Path:
    """Write `folder/README.md` with Hub metadata, loading instructions and results.

    `task` is "text-classification", "fill-mask" or "feature-extraction" (a bare encoder); `metrics` maps
    a name to its value, where an `eval_` prefix means the validation split and `test_` the test split
    (e.g. "eval_accuracy");
    `details` is free Markdown (data, recipe, hardware, wall time); `title` defaults to the folder's
    name. The metrics also go into the Hub's machine-readable `model-index`. `lineage` (see
    `read_lineage`) names the published weights the model started from: licence, base model, and
    their "## Source" section, which every card built from them repeats.
    """
    lineage = lineage or {}
    metrics = metrics or {}
    title = title or Path(folder).resolve().name
    metadata = {
        "library_name": "transformers",
        "pipeline_tag": task,
        "tags": ["gaze", "custom_code", "attention-visualization"],
        "datasets": datasets,
        "metrics": sorted({_split_and_metric(name)[1] for name in metrics}),
    }
    metadata |= {key: lineage[key] for key in ("license", "base_model") if key in lineage}
    if metrics:
        results = {}
        for name, value in sorted(metrics.items()):
            split, metric = _split_and_metric(name)
            entry = results.setdefault(
                split,
                {"task": {"type": task}, "dataset": {"name": datasets[0], "type": datasets[0], "split": split}},
            )
            entry.setdefault("metrics", []).append({"type": metric, "value": round(float(value), 4)})
        metadata["model-index"] = [{"name": title, "results": list(results.values())}]
    auto_class = AUTO_CLASSES[task]
    size = (
        f"{config.num_hidden_layers} layers, hidden size {config.hidden_size}, "
        f"{config.num_attention_heads} heads, FFN {config.intermediate_size}, vocabulary {config.vocab_size}, "
        f"up to {config.max_position_embeddings} tokens"
    )
    lines = [
        "---",
        yaml.safe_dump(metadata, sort_keys=False).strip(),
        "---",
        "",
        f"# {title}",
        "",
        f"A Gaze encoder ({size}) for `{task}`. Gaze returns the exact softmax attention weights of",
        "every layer and head with `output_attentions=True`, whatever attention implementation is loaded.",
        "",
        "## Load",
        "",
        "```python",
        f"from transformers import AutoTokenizer, {auto_class}",
        "",
        'tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder", trust_remote_code=True)',
        f'model = {auto_class}.from_pretrained("path/to/this/folder", trust_remote_code=True)',
        'inputs = tokenizer(["a gripping, funny film"], return_tensors="pt")',
        "outputs = model(**inputs, output_attentions=True)",
        "# outputs.attentions: one (batch, heads, seq, seq) tensor per layer",
        "```",
    ]
    if task == "text-classification":
        labels = ", ".join(f"{i} = `{name}`" for i, name in sorted(config.id2label.items()))
        lines += ["", f"Labels: {labels}. {_kind_of_classifier(config)}"]
    if metrics:
        lines += ["", "## Results", "", "| metric | value |", "| --- | --- |"]
        lines += [f"| {name} | {value:.4f} |" for name, value in sorted(metrics.items())]
    if details:
        lines += ["", details.strip()]
    if lineage.get("source"):
        lines += ["", SOURCE_HEADING, "", lineage["source"].strip()]
    path = Path(folder) / "README.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def read_lineage(folder: str | Path) -> dict:
    """The licence, base model and "## Source" section of a folder's card; {} for a model of Gaze's own."""
    path = Path(folder) / "README.md"
    if not path.is_file():
        return {}
    text = path.read_text(encoding="utf-8")
    if not text.startswith("---\n") or SOURCE_HEADING not in text:
        return {}
    metadata = yaml.safe_load(text.split("---\n", 2)[1]) or {}
    source = text.split(SOURCE_HEADING + "\n", 1)[1].split("\n## ", 1)[0].strip()
    return {key: metadata[key] for key in ("license", "base_model") if key in metadata} | {"source": source}


def _kind_of_classifier(config: GazeConfig) -> str:
    """How to read the logits: what users of the folder must know to turn them into labels."""
    if config.problem_type == "multi_label_classification":
        return (
            "Multi-label: each label's score is its own sigmoid, `logits.sigmoid()`, and a text has every label"
            " whose score is 0.5 or more (possibly none)."
        )
    return "Single-label: the scores are a softmax over the labels, `logits.softmax(-1)`; the most probable one wins."


def _split_and_metric(name: str) -> tuple[str, str]:
    """ "eval_accuracy" → ("validation", "accuracy"); "test_f1" → ("test", "f1")."""
    for prefix, split in (("eval_", "validation"), ("test_", "test")):
        if name.startswith(prefix):
            return split, name.removeprefix(prefix)
    return "validation", name
