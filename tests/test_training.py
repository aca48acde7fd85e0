"""training/train.py end to end: real `accelerate launch` runs on tiny data and a tiny model."""

import csv
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import require_shared_data
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--hidden-size", "32", "--num-hidden-layers", "2", "--num-attention-heads", "4", "--intermediate-size", "64",
    "--max-seq-length", "32", "--logging-steps", "2",
]  # fmt: skip
POSITIVE = ["a gripping , funny and moving film .", "one of the best movies of the year .", "the story is wonderful ."]
NEGATIVE = ["a tedious , boring two hours .", "it 's a dull , lifeless mess .", "the ending is terrible !"]


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory) -> Path:
    """An empty HF_HOME: no stray accelerate default config, a private datasets cache, offline."""
    return tmp_path_factory.mktemp("hf-home")


def launch(hf_home: Path, *args: str, processes: int = 1, module: str = "training.train", wait: bool = True):
    """`accelerate launch -m <module> args...` from the repository root; returns the CompletedProcess (or Popen)."""
    if processes > 1:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        topology = ["--multi_gpu", "--num_processes", str(processes), "--main_process_port", str(port)]
    else:
        topology = ["--num_processes", "1"]
    threads = max(1, len(os.sched_getaffinity(0)) // processes)
    command = [sys.executable, "-m", "accelerate.commands.launch", *topology, "--num_machines", "1"]
    command += ["--num_cpu_threads_per_process", str(threads)]
    command += ["--mixed_precision", "no", "--dynamo_backend", "no", "-m", module, *args]
    env = os.environ | {"HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env |= {"TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(ROOT)}
    if not wait:  # its own process group, so that a kill reaches the training process too
        output = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT}
        return subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True, **output)
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    return result


def sentiment_tsv(path: Path, n: int, seed: int) -> Path:
    rng = random.Random(seed)
    rows = ["sentence\tlabel"]
    for i in range(n):
        label = i % 2
        rows.append(f"{rng.choice(POSITIVE if label else NEGATIVE)}\t{label}")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    """One fixed tokenizer: trained ones differ from run to run (WordPiece ties), and runs compared must match."""
    folder = tmp_path_factory.mktemp("tokenizer")
    tiny_tokenizer.save_pretrained(folder)
    return folder


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def test_sst2_subset_gives_a_loadable_folder_clearly_above_chance(tmp_path, hf_home):
    train_tsv = require_shared_data("sst2", "train.tsv")
    dev_tsv = require_shared_data("sst2", "dev.tsv")
    subset = tmp_path / "train.tsv"
    subset.write_text("".join(train_tsv.open(encoding="utf-8").readlines()[:4001]), encoding="utf-8")
    out = tmp_path / "out"
    ok(
        launch(
            hf_home,
            "--config", "training/configs/sst2.yaml", "--train-file", str(subset), "--validation-file", str(dev_tsv),
            "--output-dir", str(out), "--hidden-size", "64", "--num-hidden-layers", "2", "--intermediate-size", "128",
            "--vocab-size", "1000", "--num-train-epochs", "2", "--learning-rate", "2e-3", "--eval-steps", "0",
            "--mixed-precision", "no",
        )
    )  # fmt: skip
    results = json.loads((out / "results.json").read_text())
    assert results["validation_examples"] == 872 and results["labels"] == ["negative", "positive"]
    assert results["eval_accuracy"] > 0.62, results  # chance is 0.51; this run reaches ~0.69
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if "eval_accuracy" in r] == [1.0, 2.0]
    assert (out / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    card = (out / "README.md").read_text()
    assert f"{results['eval_accuracy']:.4f}" in card and card.splitlines()[0] == "---" and "# out" in card

    # The folder loads as it is: Auto classes with remote code, and a pipeline with the label names.
    model = AutoModelForSequenceClassification.from_pretrained(out, trust_remote_code=True)
    assert model.config.id2label == {0: "negative", 1: "positive"}
    classify = pipeline("text-classification", model=str(out), trust_remote_code=True)
    predictions = classify(["a wonderful , moving film .", "a dull , boring mess ."])
    assert {p["label"] for p in predictions} <= {"negative", "positive"}
    inputs = AutoTokenizer.from_pretrained(out)(["a wonderful film"], return_tensors="pt")
    attentions = model(**inputs, output_attentions=True).attentions
    assert len(attentions) == 2 and attentions[0].shape[-1] == inputs["input_ids"].shape[1]


def test_kill_and_resume_gives_bit_identical_weights(tmp_path, hf_home, tokenizer_dir):
    train, dev = sentiment_tsv(tmp_path / "train.tsv", 96, 0), sentiment_tsv(tmp_path / "dev.tsv", 24, 1)
    args = [
        "--train-file", str(train), "--validation-file", str(dev), "--tokenizer", str(tokenizer_dir), *TINY,
        "--per-device-train-batch-size", "4", "--gradient-accumulation-steps", "2", "--num-train-epochs", "6",
        "--save-steps", "5", "--eval-steps", "10", "--seed", "7", "--learning-rate", "1e-3",
    ]  # fmt: skip  # dropout stays on (0.1): the resumed run must replay the same dropout masks
    reference = tmp_path / "uninterrupted"
    ok(launch(hf_home, *args, "--output-dir", str(reference)))

    killed = tmp_path / "killed"
    run = launch(hf_home, *args, "--output-dir", str(killed), wait=False)
    first = killed / "checkpoints" / "step-5" / "training_state.json"
    deadline = time.monotonic() + 240
    while not first.exists() and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    assert first.exists(), run.stdout.read().decode()[-3000:]
    assert not (killed / "results.json").exists(), "the run finished before it was killed"

    resumed = ok(launch(hf_home, *args, "--output-dir", str(killed), "--resume"))
    assert "Resumed from" in resumed.stdout + resumed.stderr
    expected, got = weights(reference), weights(killed)
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected), "resumed weights differ"
    steps = [json.loads(line)["step"] for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)), "metrics.jsonl repeats steps after resume"


def test_two_processes_match_one_with_the_same_global_batch(tmp_path, hf_home, tokenizer_dir):
    train, dev = sentiment_tsv(tmp_path / "train.tsv", 64, 0), sentiment_tsv(tmp_path / "dev.tsv", 21, 1)
    args = [
        "--train-file", str(train), "--validation-file", str(dev), "--tokenizer", str(tokenizer_dir), *TINY,
        "--hidden-dropout-prob", "0", "--attention-probs-dropout-prob", "0", "--group-by-length", "false",
        "--num-train-epochs", "2", "--save-steps", "1000", "--learning-rate", "1e-3",
        "--per-device-eval-batch-size", "4",
    ]  # fmt: skip
    one, two = tmp_path / "one", tmp_path / "two"
    ok(launch(hf_home, *args, "--per-device-train-batch-size", "8", "--output-dir", str(one)))
    ok(launch(hf_home, *args, "--per-device-train-batch-size", "4", "--output-dir", str(two), processes=2))
    results_one = json.loads((one / "results.json").read_text())
    results_two = json.loads((two / "results.json").read_text())
    assert results_one["num_processes"] == 1 and results_two["num_processes"] == 2
    assert results_one["steps"] == results_two["steps"] == 16
    # 21 validation examples over 2 processes: gather_for_metrics drops the padding duplicates.
    assert results_two["eval_accuracy"] == results_one["eval_accuracy"]
    assert results_two["eval_loss"] == pytest.approx(results_one["eval_loss"], abs=1e-5)
    w1, w2 = weights(one), weights(two)
    for name in w1:
        torch.testing.assert_close(w2[name], w1[name], atol=1e-5, rtol=0, msg=f"{name} differs")


def test_string_labels_and_three_classes_from_csv(tmp_path, hf_home):
    neutral = ['"so-so", really', "an average film .", "it is fine ."]
    rows = [[[NEGATIVE, neutral, POSITIVE][i % 3][i // 3 % 3], ["bad", "meh", "good"][i % 3]] for i in range(60)]
    for name, part in (("train.csv", rows), ("dev.csv", rows[:12])):
        with (tmp_path / name).open("w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([["text", "label"], *part])  # quotes the commas and quotes in the texts
    out = tmp_path / "out"
    ok(
        launch(
            hf_home, "--train-file", str(tmp_path / "train.csv"), "--validation-file", str(tmp_path / "dev.csv"),
            "--output-dir", str(out), *TINY, "--vocab-size", "120", "--num-train-epochs", "2",
        )
    )  # fmt: skip
    model = AutoModelForSequenceClassification.from_pretrained(out, trust_remote_code=True)
    assert model.config.id2label == {0: "bad", 1: "good", 2: "meh"}
    assert model.config.label2id == {"bad": 0, "good": 1, "meh": 2}
    labels = {p["label"] for p in pipeline("text-classification", model=str(out), trust_remote_code=True)(POSITIVE)}
    assert labels <= {"bad", "good", "meh"}
    assert (out / "checkpoints" / "tokenizer" / "tokenizer.json").exists()  # trained here, kept for --resume


def test_jsonl_with_named_columns_and_a_test_file(tmp_path, hf_home, tokenizer_dir):
    def write(name: str, n: int) -> Path:
        lines = [
            json.dumps({"review": (POSITIVE if i % 2 else NEGATIVE)[i % 3], "stars": i % 2 * 4 + 1}) for i in range(n)
        ]
        (tmp_path / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
        return tmp_path / name

    out = tmp_path / "out"
    ok(
        launch(
            hf_home, "--train-file", str(write("train.jsonl", 40)), "--validation-file", str(write("dev.jsonl", 10)),
            "--test-file", str(write("test.jsonl", 6)), "--text-column", "review", "--label-column", "stars",
            "--tokenizer", str(tokenizer_dir), "--output-dir", str(out), *TINY, "--num-train-epochs", "1",
        )
    )  # fmt: skip
    results = json.loads((out / "results.json").read_text())
    assert results["labels"] == ["1", "5"] and 0 <= results["test_accuracy"] <= 1


def test_malformed_file_fails_with_file_and_line(tmp_path, hf_home):
    (tmp_path / "train.csv").write_text("text,label\ngood,1\n  ,0\nbad,0\n", encoding="utf-8")
    (tmp_path / "dev.csv").write_text("text,label\nfine,1\n", encoding="utf-8")
    result = launch(
        hf_home, "--train-file", str(tmp_path / "train.csv"), "--validation-file", str(tmp_path / "dev.csv")
    )
    assert result.returncode != 0
    assert "error: train.csv, line 3: empty text in column 'text'" in result.stderr


def test_diverging_loss_stops_with_a_clear_message(tmp_path, hf_home, tokenizer_dir):
    train, dev = sentiment_tsv(tmp_path / "train.tsv", 64, 0), sentiment_tsv(tmp_path / "dev.tsv", 8, 1)
    result = launch(
        hf_home, "--train-file", str(train), "--validation-file", str(dev), "--tokenizer", str(tokenizer_dir), *TINY,
        "--learning-rate", "1e30", "--warmup-ratio", "0", "--output-dir", str(tmp_path / "out"),
    )  # fmt: skip
    assert result.returncode != 0
    assert "training diverged" in result.stderr


def test_mlm_pretraining_then_init_from(tmp_path, hf_home):
    text = tmp_path / "corpus.txt"
    text.write_text("\n".join((POSITIVE + NEGATIVE) * 40) + "\n", encoding="utf-8")
    pretrained = tmp_path / "mlm"
    ok(
        launch(
            hf_home, "--train-files", str(text), "--output-dir", str(pretrained), "--vocab-size", "150",
            "--max-seq-length", "32", "--hidden-size", "32", "--num-hidden-layers", "2", "--intermediate-size", "64",
            "--per-device-train-batch-size", "8", "--max-steps", "6", "--eval-steps", "3", "--save-steps", "100",
            "--validation-documents", "20", module="training.pretrain",
        )
    )  # fmt: skip
    train, dev = sentiment_tsv(tmp_path / "train.tsv", 32, 0), sentiment_tsv(tmp_path / "dev.tsv", 8, 1)
    out = tmp_path / "out"
    # Learning rate 0: the classifier's encoder must come out exactly as the pretrained one went in.
    ok(
        launch(
            hf_home, "--train-file", str(train), "--validation-file", str(dev), "--init-from", str(pretrained),
            "--output-dir", str(out), "--learning-rate", "0", "--num-train-epochs", "1",
        )
    )  # fmt: skip
    encoder, classifier = weights(pretrained), weights(out)
    shared = [k for k in encoder if k.startswith("gaze.")]
    assert len(shared) > 10 and all(torch.equal(encoder[k], classifier[k]) for k in shared)
    assert AutoTokenizer.from_pretrained(out).get_vocab() == AutoTokenizer.from_pretrained(pretrained).get_vocab()
    config = json.loads((out / "config.json").read_text())
    assert config["hidden_size"] == 32 and config["architectures"] == ["GazeForSequenceClassification"]
