"""training/distill.py end to end: a real `accelerate launch` distils a tiny teacher into a student."""

import json
from pathlib import Path

import pytest
import torch
from conftest import CORPUS
from test_training import TINY, hf_home, launch, ok  # noqa: F401  (hf_home: the module's fixture)

from inference.predictor import Predictor


@pytest.fixture(scope="module")
def teacher(wide_model_dir) -> Path:
    """A classifier whose probabilities depend on the text (the tiny one, drawn wide)."""
    return wide_model_dir


def texts_and_dev(folder: Path, teacher: Path) -> list[str]:
    """Unlabeled texts, and a validation file labeled by the teacher (accuracy = agreement with it)."""
    (folder / "texts.txt").write_text("\n".join(CORPUS) + "\n", encoding="utf-8")
    texts = sorted(set(CORPUS))
    labels = [p["label"] for p in Predictor(teacher).predict(texts, attention="none")]
    rows = ["sentence\tlabel"] + [f"{text}\t{label}" for text, label in zip(texts, labels, strict=True)]
    (folder / "dev.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return ["--train-files", str(folder / "texts.txt"), "--validation-file", str(folder / "dev.tsv")]


def probabilities(folder: Path, texts: list[str]) -> torch.Tensor:
    return torch.tensor([p["scores"]["positive"] for p in Predictor(folder).predict(texts, attention="none")])


def test_the_student_learns_the_teachers_probabilities(tmp_path, hf_home, teacher):  # noqa: F811
    data = texts_and_dev(tmp_path, teacher)
    out = tmp_path / "student"
    common = [*data, "--teacher", str(teacher), "--tokenizer", str(teacher), *TINY, "--output-dir", str(out)]
    steps = ["--max-steps", "100", "--learning-rate", "3e-3", "--load-best-model-at-end", "false"]
    run = ok(launch(hf_home, *common, *steps, module="training.distill"))
    assert "texts labeled by" in run.stdout + run.stderr

    texts = sorted(set(CORPUS))
    wanted, got = probabilities(teacher, texts), probabilities(out, texts)
    assert wanted.std() > 0.05, "the teacher must tell the texts apart, or the test could not fail"
    # A fresh student says ~0.5 for everything; a trained one follows the teacher text by text.
    assert (got - wanted).abs().mean() < 0.3 * (wanted - 0.5).abs().mean()
    assert torch.corrcoef(torch.stack([got, wanted]))[0, 1] > 0.9

    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    results = json.loads((out / "results.json").read_text())
    assert results["train_examples"] == len(CORPUS) and "eval_accuracy" in results
    card = (out / "README.md").read_text()
    assert f"from the teacher `{teacher.name}`" in card and "texts.txt" in card
    assert (out / "checkpoints" / "teacher-probabilities.safetensors").is_file()


def test_distill_refuses_in_one_line(tmp_path, hf_home, teacher, tiny_model_dir):  # noqa: F811
    data = texts_and_dev(tmp_path, teacher)
    no_dev = launch(hf_home, *data[:2], "--teacher", str(teacher), *TINY, module="training.distill")
    assert no_dev.returncode != 0 and "error: give --validation-file" in no_dev.stderr
    not_a_classifier = tmp_path / "empty"
    not_a_classifier.mkdir()
    refused = launch(hf_home, *data, "--teacher", str(not_a_classifier), *TINY, module="training.distill")
    assert refused.returncode != 0 and f"error: --teacher {not_a_classifier}:" in refused.stderr
    assert "Traceback" not in refused.stderr
