"""What a run says about itself: `metrics.jsonl` (one JSON record per logged step) and its plot."""

import json
from pathlib import Path

from training.checkpoints import staged


def append_record(path: Path, record: dict) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def read_records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def keep_records(path: Path, up_to_step: int) -> None:
    """Drop what a killed run logged after the checkpoint it resumes from (no step twice in the log)."""
    if not path.exists():
        return
    kept = [r for r in read_records(path) if r["step"] <= up_to_step]
    with staged(path) as staging:
        staging.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")


def plot_learning_curve(metrics_file: Path, png: Path, metric: str) -> None:
    """Training and validation loss over optimizer steps, and the validation `metric` beside them."""
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
        steps = [r["step"] for r in evals]
        loss_axis.plot(steps, [r["eval_loss"] for r in evals], "o-", label="validation loss", color="tab:orange")
        if metric != "loss" and f"eval_{metric}" in evals[0]:
            metric_axis = loss_axis.twinx()
            values = [r[f"eval_{metric}"] for r in evals]
            metric_axis.plot(steps, values, "s--", label=f"validation {metric}", color="tab:green")
            metric_axis.set_ylabel(metric)
            metric_axis.legend(loc="upper right")
    loss_axis.set_xlabel("optimizer step")
    loss_axis.set_ylabel("loss")
    loss_axis.legend(loc="upper left")
    loss_axis.set_title("Learning curve")
    fig.tight_layout()
    with staged(png) as staging:
        fig.savefig(staging, format="png")
    plt.close(fig)
