"""training/train.py helpers in-process: metrics, best-model tracking and early stopping, the metrics log."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from training.config import parse_config
from training.loop import Progress, update_best
from training.metrics import macro_f1
from training.records import keep_records
from training.runtime import make_accelerator
from training.sentences import split_file, split_sentences
from training.train import DEFAULTS


def test_macro_f1_averages_the_classes_that_occur():
    predictions, labels = torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 1, 1])
    assert macro_f1(predictions, labels) == pytest.approx((2 / 3 + 4 / 5) / 2)
    assert macro_f1(torch.tensor([2, 2]), torch.tensor([2, 2])) == 1.0  # class 0 and 1 never occur: not averaged


@pytest.mark.parametrize(
    ("metric", "values", "best_steps", "stops_at"),
    [
        ("accuracy", [0.6, 0.7, 0.7, 0.65], [1, 2, 2, 2], 4),  # a tie is no improvement
        ("loss", [0.9, 0.8, 0.85, 0.7], [1, 2, 2, 4], None),
    ],
)
def test_track_best_and_early_stopping(metric, values, best_steps, stops_at):
    progress, patience, stopped = Progress(), 2, None
    for step, (value, best_step) in enumerate(zip(values, best_steps, strict=True), 1):
        progress.step = step
        update_best(progress, value, metric)
        if progress.evals_without_improvement >= patience:
            stopped = stopped or step
        assert progress.best_step == best_step
    assert stopped == stops_at


def test_keep_records_drops_what_a_killed_run_logged_after_its_checkpoint(tmp_path):
    log = tmp_path / "metrics.jsonl"
    log.write_text("".join(json.dumps({"step": s}) + "\n" for s in (5, 10, 15, 20)))
    keep_records(log, up_to_step=10)
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [5, 10]


def test_cpu_training_on_fewer_threads_than_cores_warns_with_the_fix(capsys, monkeypatch):
    """Plain `accelerate launch` on CPU sets OMP_NUM_THREADS=1: the run must say so and how to fix it."""
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2, 3})
    cfg = SimpleNamespace(mixed_precision="no", gradient_accumulation_steps=1, seed=0)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        make_accelerator(cfg)
        assert "pass `--num_cpu_threads_per_process 4`" in capsys.readouterr().out
        torch.set_num_threads(4)
        make_accelerator(cfg)
        assert "warning" not in capsys.readouterr().out
    finally:
        torch.set_num_threads(threads)


def test_split_sentences_ends_sentences_at_punctuation_and_html_breaks():
    review = 'A gem. "Truly great!" Bad? no.<br /><br />Go see it (twice) now'
    assert split_sentences(review, min_words=1) == ["A gem.", '"Truly great!', "Bad?", "no.", "Go see it (twice) now"]
    assert split_sentences(review, min_words=3) == ["Go see it (twice) now"]


def test_split_file_labels_each_sentence_with_its_document_and_names_a_bad_row(tmp_path):
    source, target = tmp_path / "docs.jsonl", tmp_path / "sentences.jsonl"
    source.write_text(json.dumps({"text": "Loved it all. Would watch again.", "label": 1}) + "\n\n")
    assert split_file(source, target) == (1, 2)
    rows = [json.loads(line) for line in target.read_text().splitlines()]
    assert rows == [{"text": "Loved it all.", "label": 1}, {"text": "Would watch again.", "label": 1}]

    source.write_text(json.dumps({"text": "Fine film here."}) + "\n")
    with pytest.raises(ValueError, match=r"docs\.jsonl:1: not a JSON object with 'text' and 'label'"):
        split_file(source, target)
    assert len(target.read_text().splitlines()) == 2  # the earlier output is untouched
    assert not (tmp_path / "sentences.jsonl.tmp").exists()


def test_the_own_data_config_is_the_default_recipe():
    """training/configs/own-data.yaml writes the defaults out; it must not drift from them."""
    root = Path(__file__).resolve().parents[1]
    from_file = parse_config("x", DEFAULTS, ["--config", str(root / "training/configs/own-data.yaml")])
    defaults = parse_config("x", DEFAULTS, [])
    assert vars(from_file).keys() == vars(defaults).keys()
    differ = {k for k in vars(defaults) if getattr(from_file, k) != getattr(defaults, k)}
    assert differ == {"init_from"}  # the file names the folder relative to the repository
    assert (root / from_file.init_from).resolve() == Path(defaults.init_from).resolve()
