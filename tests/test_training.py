"""training/train.py end to end: real `accelerate launch` runs on tiny data and a tiny model."""

import csv
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import require_shared_data
from safetensors.torch import load_file, save_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

from benchmarks.harness import free_port
from training.records import read_records

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--hidden-size", "32", "--num-hidden-layers", "2", "--num-attention-heads", "4", "--intermediate-size", "64",
    "--max-seq-length", "32", "--logging-steps", "2", "--init-from", "none",
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
        topology = ["--multi_gpu", "--num_processes", str(processes), "--main_process_port", str(free_port())]
        topology += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    else:  # as the README launches
        topology = ["--config_file", "training/configs/accelerate-cpu.yaml"]
    threads = max(1, len(os.sched_getaffinity(0)) // processes)
    command = [sys.executable, "-m", "accelerate.commands.launch", "--quiet", *topology]
    command += ["--num_cpu_threads_per_process", str(threads), "-m", module]
    command += ["--mixed-precision", "no", *args]  # not auto: runs that are compared must not measure
    if not wait:  # its own process group, so that a kill reaches the training process too
        output = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT}
        return subprocess.Popen(command, cwd=ROOT, env=environment(hf_home), start_new_session=True, **output)
    return subprocess.run(command, cwd=ROOT, env=environment(hf_home), capture_output=True, text=True, timeout=300)


def run_module(hf_home: Path, module: str, *args: str) -> subprocess.CompletedProcess:
    """`python -m <module> args...` (a script that is not launched with accelerate) from the repository root."""
    command = [sys.executable, "-m", module, *args]
    return subprocess.run(command, cwd=ROOT, env=environment(hf_home), capture_output=True, text=True, timeout=300)


def environment(hf_home: Path) -> dict[str, str]:
    """Offline, with its own HF_HOME, the repository importable."""
    env = os.environ | {"HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return env | {"TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(ROOT)}


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


def fine_tune_from(hf_home: Path, start: Path, out: Path, *flags: str) -> dict[str, torch.Tensor]:
    """One epoch of a small sentiment task from the Gaze folder `start` (then `flags`); the saved weights."""
    train, dev = sentiment_tsv(out.parent / "train.tsv", 32, 0), sentiment_tsv(out.parent / "dev.tsv", 8, 1)
    data = ["--train-file", str(train), "--validation-file", str(dev), "--num-train-epochs", "1"]
    ok(launch(hf_home, *data, "--init-from", str(start), "--output-dir", str(out), *flags))
    return weights(out)


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


def data_flags(module: str, tmp_path: Path) -> list[str]:
    """Each script's own data settings; every other flag is shared (training/config.py: RunArgs)."""
    if module == "training.train":
        train, dev = sentiment_tsv(tmp_path / "train.tsv", 96, 0), sentiment_tsv(tmp_path / "dev.tsv", 24, 1)
        return ["--train-file", str(train), "--validation-file", str(dev)]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join((POSITIVE + NEGATIVE) * 40) + "\n", encoding="utf-8")
    return ["--train-files", str(corpus), "--validation-documents", "20"]


@pytest.mark.parametrize("module", ["training.train", "training.pretrain"])
def test_kill_and_resume_gives_bit_identical_weights(tmp_path, hf_home, tokenizer_dir, module):
    """Both scripts, through the same shared flags: the same cadence, records, checkpoints and exact resume."""
    args = [
        *data_flags(module, tmp_path), "--tokenizer", str(tokenizer_dir), *TINY,
        "--per-device-train-batch-size", "4", "--gradient-accumulation-steps", "2", "--max-steps", "30",
        "--save-steps", "5", "--save-total-limit", "2", "--eval-steps", "10", "--seed", "7", "--learning-rate", "1e-3",
        "--hidden-dropout-prob", "0.1", "--attention-probs-dropout-prob", "0.1", "--metric-for-best-model", "loss",
    ]  # fmt: skip  # dropout on: the resumed run must replay the same dropout masks (and MLM masks)
    reference = tmp_path / "uninterrupted"
    ok(launch(hf_home, *args, "--output-dir", str(reference), module=module))

    killed = tmp_path / "killed"
    run = launch(hf_home, *args, "--output-dir", str(killed), module=module, wait=False)
    first = killed / "checkpoints" / "step-5" / "training_state.json"
    deadline = time.monotonic() + 240
    while not first.exists() and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    assert first.exists(), run.stdout.read().decode()[-3000:]
    assert not (killed / "results.json").exists(), "the run finished before it was killed"

    resumed = ok(launch(hf_home, *args, "--output-dir", str(killed), "--resume", module=module))
    assert "Resumed from" in resumed.stdout + resumed.stderr
    expected, got = weights(reference), weights(killed)
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected), "resumed weights differ"
    records = [json.loads(line) for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(2, 31, 2)), "logged every 2 steps, none twice after resume"
    assert [r["step"] for r in records if "eval_loss" in r] == [10, 20, 30]
    assert all(r["train_tokens_per_s"] > 0 and r["tokens_seen"] > 0 for r in records)
    assert sorted(p.name for p in (killed / "checkpoints").glob("step-*")) == ["step-25", "step-30"]  # and the end
    results = json.loads((killed / "results.json").read_text())
    assert results["steps"] == 30 and results["metric_for_best_model"] == "loss"
    assert results["model_step"] in (10, 20, 30) and results["tokens_seen"] == records[-1]["tokens_seen"]


def test_a_run_shorter_than_save_steps_resumes_from_its_epoch_ends(tmp_path, hf_home, tokenizer_dir):
    """Checkpoints come every save_steps and at the end of every epoch: a short run can be continued."""
    train, dev = sentiment_tsv(tmp_path / "train.tsv", 32, 0), sentiment_tsv(tmp_path / "dev.tsv", 8, 1)
    args = ["--train-file", str(train), "--validation-file", str(dev), "--tokenizer", str(tokenizer_dir), *TINY]
    args += ["--per-device-train-batch-size", "8", "--output-dir", str(tmp_path / "run")]  # 4 steps per epoch
    ok(launch(hf_home, *args, "--num-train-epochs", "1"))
    assert [p.name for p in (tmp_path / "run" / "checkpoints").glob("step-*")] == ["step-4"]
    assert not (tmp_path / "run" / "checkpoints" / "best.safetensors").exists(), "a second copy of the model"
    first = weights(tmp_path / "run")
    more = ok(launch(hf_home, *args, "--num-train-epochs", "2", "--resume"))
    assert "Resumed from" in more.stdout and "at optimizer step 4" in more.stdout
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    # Epoch 2 does not beat epoch 1 here (seeded): the best weights come back from the folder the first run saved.
    assert (results["steps"], results["model_step"]) == (8, 4)
    assert all(torch.equal(first[k], v) for k, v in weights(tmp_path / "run").items())


def test_report_to_tensorboard_logs_what_metrics_jsonl_records(tmp_path, hf_home, tokenizer_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train, dev = sentiment_tsv(tmp_path / "train.tsv", 32, 0), sentiment_tsv(tmp_path / "dev.tsv", 8, 1)
    args = ["--train-file", str(train), "--validation-file", str(dev), "--tokenizer", str(tokenizer_dir), *TINY]
    args += ["--per-device-train-batch-size", "8", "--logging-steps", "2", "--output-dir", str(tmp_path / "run")]
    ok(launch(hf_home, *args, "--num-train-epochs", "2", "--report-to", "tensorboard"))
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard")).Reload()
    records = read_records(tmp_path / "run" / "metrics.jsonl")
    for name in ("train_loss", "eval_loss", "eval_accuracy"):
        logged = [(r["step"], r[name]) for r in records if name in r]
        scalars = [(e.step, e.value) for e in events.Scalars(name)]
        assert [step for step, _ in scalars] == [step for step, _ in logged] and logged, name
        assert [value for _, value in scalars] == pytest.approx([value for _, value in logged], rel=1e-6), name


def test_resume_falls_back_to_the_previous_checkpoint_when_the_newest_is_damaged(tmp_path, hf_home, tokenizer_dir):
    train, dev = sentiment_tsv(tmp_path / "train.tsv", 32, 0), sentiment_tsv(tmp_path / "dev.tsv", 8, 1)
    args = ["--train-file", str(train), "--validation-file", str(dev), "--tokenizer", str(tokenizer_dir), *TINY]
    args += ["--per-device-train-batch-size", "8", "--output-dir", str(tmp_path / "run")]  # 4 steps per epoch
    ok(launch(hf_home, *args, "--num-train-epochs", "2"))
    newest = tmp_path / "run" / "checkpoints" / "step-8" / "model.safetensors"
    newest.write_bytes(newest.read_bytes()[:1000])  # cut short, as by a full disk outside our staged writes
    more = ok(launch(hf_home, *args, "--num-train-epochs", "3", "--resume"))
    assert "checkpoint" in more.stdout and "step-8 cannot be read" in more.stdout
    assert "at optimizer step 4" in more.stdout
    assert json.loads((tmp_path / "run" / "results.json").read_text())["steps"] == 12


def test_output_dir_holding_anything_but_the_runs_own_checkpoints_is_refused(tmp_path, hf_home, tokenizer_dir):
    train, dev = sentiment_tsv(tmp_path / "train.tsv", 32, 0), sentiment_tsv(tmp_path / "dev.tsv", 8, 1)
    args = ["--train-file", str(train), "--validation-file", str(dev), "--tokenizer", str(tokenizer_dir), *TINY]
    saved = tmp_path / "saved-model"  # a model folder someone keeps, not a run's checkpoints
    ok(launch(hf_home, *args, "--max-steps", "2", "--output-dir", str(saved)))
    shutil.rmtree(saved / "checkpoints")
    before = {p.name: p.read_bytes() for p in saved.iterdir()}

    refused = launch(hf_home, *args, "--max-steps", "2", "--output-dir", str(saved))
    assert refused.returncode != 0 and "is not empty" in refused.stderr and "--overwrite-output-dir" in refused.stderr
    assert "Traceback" not in refused.stderr
    diverged = launch(hf_home, *args, "--learning-rate", "1e30", "--warmup-ratio", "0", "--output-dir", str(saved))
    assert diverged.returncode != 0 and "is not empty" in diverged.stderr
    assert {p.name: p.read_bytes() for p in saved.iterdir()} == before, "the saved model was touched"

    # With the flag the folder is replaced; a run that diverges keeps the old model files.
    diverged = launch(
        hf_home, *args, "--learning-rate", "1e30", "--warmup-ratio", "0", "--output-dir", str(saved),
        "--overwrite-output-dir",
    )  # fmt: skip
    assert diverged.returncode != 0 and "training diverged" in diverged.stderr
    assert (saved / "model.safetensors").read_bytes() == before["model.safetensors"]


def test_the_default_command_twice_gives_one_model(tmp_path, hf_home):
    """The own-data command as the README gives it (from gaze-base, its vocabulary, a held-out 10 %)."""
    train = sentiment_tsv(tmp_path / "train.tsv", 40, 0)
    outputs = [tmp_path / "first", tmp_path / "second"]
    for out in outputs:
        result = ok(launch(hf_home, "--train-file", str(train), "--output-dir", str(out), "--max-steps", "3"))
        assert "defaults used instead" not in result.stderr, "accelerate warns of values the command did not pass"
    first, second = (weights(out) for out in outputs)
    assert all(torch.equal(first[k], second[k]) for k in first)
    base = AutoTokenizer.from_pretrained(ROOT / "checkpoints" / "gaze-base")
    assert AutoTokenizer.from_pretrained(outputs[0]).get_vocab() == base.get_vocab()


def test_init_from_takes_any_gaze_folder_and_refuses_anything_else(tmp_path, hf_home, tiny_model_dir):
    """A classifier with other labels gives its encoder and a new head; a foreign folder is one line."""
    rows = [["text", "label"], *[[t, ["bad", "meh", "good"][i % 3]] for i, t in enumerate((POSITIVE + NEGATIVE) * 5)]]
    with (tmp_path / "train.csv").open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    out = tmp_path / "out"
    result = ok(
        launch(hf_home, "--train-file", str(tmp_path / "train.csv"), "--init-from", str(tiny_model_dir),
               "--output-dir", str(out), "--max-steps", "2", "--learning-rate", "0")
    )  # fmt: skip
    assert "its classifier for ['negative', 'positive'] is replaced" in result.stdout + result.stderr
    assert "held out 3 of 30 examples" in result.stdout + result.stderr  # no validation file: 10 %
    assert "Evaluation at step 2 (epoch " in result.stdout + result.stderr  # one line per evaluation
    source, trained = weights(tiny_model_dir), weights(out)
    assert all(torch.equal(source[k], trained[k]) for k in source if k.startswith("gaze."))
    assert trained["classifier.weight"].shape[0] == 3
    assert json.loads((out / "config.json").read_text())["id2label"] == {"0": "bad", "1": "good", "2": "meh"}

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "config.json").write_text(json.dumps({"model_type": "evil", "auto_map": {"AutoModel": "x.Y"}}))
    (foreign / "tokenizer.json").write_text((tiny_model_dir / "tokenizer.json").read_text())
    refused = launch(hf_home, "--train-file", str(tmp_path / "train.csv"), "--init-from", str(foreign))
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert f"--init-from {foreign}: model type 'evil' cannot be imported; Gaze imports BERT" in refused.stderr
    # Sizes no model needs are refused before anything is allocated: in a folder's config, or as settings.
    config = json.loads((tiny_model_dir / "config.json").read_text())
    (foreign / "config.json").write_text(json.dumps(config | {"num_hidden_layers": 10**6}))
    huge = launch(hf_home, "--train-file", str(tmp_path / "train.csv"), "--init-from", str(foreign))
    assert huge.returncode != 0 and "Traceback" not in huge.stderr
    assert "has an invalid config.json: ValueError: num_hidden_layers=1000000 is out of range (1 to 64)" in huge.stderr
    wide = launch(hf_home, "--train-file", str(tmp_path / "train.csv"), "--init-from", "none", "--hidden-size", "8192")
    assert wide.returncode != 0 and "Traceback" not in wide.stderr
    assert "model settings: ValueError: hidden_size=8192 is out of range (1 to 4,096)" in wide.stderr
    # Weights that do not fit their own config, or hold NaN, are refused by name before training starts.
    for name, change in [("misshapen", "config"), ("nan", "weights")]:
        broken = tmp_path / name
        shutil.copytree(tiny_model_dir, broken)
        if change == "config":
            wider = config | {"intermediate_size": 2 * config["intermediate_size"]}
            (broken / "config.json").write_text(json.dumps(wider))
        else:
            tensors = load_file(broken / "model.safetensors")
            tensors["gaze.embeddings.word_embeddings.weight"][3, 0] = float("nan")
            save_file(tensors, broken / "model.safetensors")
        refused = launch(hf_home, "--train-file", str(tmp_path / "train.csv"), "--init-from", str(broken))
        assert refused.returncode != 0 and "Traceback" not in refused.stderr, refused.stderr[-2000:]
        wanted = "its config.json makes it" if change == "config" else "holds NaN or infinite values"
        assert f"--init-from {broken}: " in refused.stderr and wanted in refused.stderr
    # A --tokenizer folder is read for its tokenizer.json only: no code of its own, no question on stdin.
    ok(
        launch(hf_home, "--train-file", str(tmp_path / "train.csv"), "--tokenizer", str(foreign), *TINY,
               "--max-steps", "1", "--output-dir", str(tmp_path / "own-tokenizer"))
    )  # fmt: skip


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
            "--output-dir", str(out), *TINY, "--tokenizer", "train", "--vocab-size", "120", "--num-train-epochs", "2",
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
    out = tmp_path / "out"
    # Learning rate 0: the classifier's encoder must come out exactly as the pretrained one went in.
    encoder, classifier = weights(pretrained), fine_tune_from(hf_home, pretrained, out, "--learning-rate", "0")
    shared = [k for k in encoder if k.startswith("gaze.")]
    assert len(shared) > 10 and all(torch.equal(encoder[k], classifier[k]) for k in shared)
    assert AutoTokenizer.from_pretrained(out).get_vocab() == AutoTokenizer.from_pretrained(pretrained).get_vocab()
    config = json.loads((out / "config.json").read_text())
    assert config["hidden_size"] == 32 and config["architectures"] == ["GazeForSequenceClassification"]


def test_word_vectors_make_a_bare_encoder_that_exports_and_fine_tunes(tmp_path, hf_home):
    """`make gaze-base` in small: word2vec embeddings at `vector_std`, exported as a feature-extraction folder
    that AutoModel loads and that a fine-tune starts from unchanged (learning rate 0)."""
    text = tmp_path / "corpus.txt"
    text.write_text("\n".join((POSITIVE + NEGATIVE) * 40) + "\n", encoding="utf-8")
    vectors, exported = tmp_path / "vectors", tmp_path / "exported"
    sizes = ["--vocab-size", "150", "--max-seq-length", "32", "--hidden-size", "32", "--num-hidden-layers", "2"]
    sizes += ["--intermediate-size", "64", "--epochs", "2"]
    ok(run_module(hf_home, "training.word_vectors", "--train-files", str(text), "--output-dir", str(vectors), *sizes))
    assert json.loads((vectors / "config.json").read_text())["architectures"] == ["GazeModel"]
    embeddings = weights(vectors)["embeddings.word_embeddings.weight"]
    assert abs(embeddings[5:].std().item() - 0.2) < 0.02  # vector_std; row 0 is [PAD] (zeros), 1-4 the others
    ok(run_module(hf_home, "training.export", str(vectors), str(exported), "--datasets", "corpus.txt"))
    card = (exported / "README.md").read_text(encoding="utf-8")
    assert "pipeline_tag: feature-extraction" in card and "AutoModel.from_pretrained" in card
    assert "scaled to std 0.2" in card

    encoder, classifier = weights(exported), fine_tune_from(hf_home, exported, tmp_path / "out", "--learning-rate", "0")
    assert len(encoder) > 10 and all(torch.equal(v.float(), classifier[f"gaze.{k}"]) for k, v in encoder.items())

    # --freeze-embeddings keeps the word vectors as they came (CNN-static's way) while the rest learns.
    flags = ["--learning-rate", "1e-2", "--num-train-epochs", "2", "--warmup-ratio", "0", "--freeze-embeddings", "true"]
    trained, name = fine_tune_from(hf_home, exported, tmp_path / "frozen", *flags), "embeddings.word_embeddings.weight"
    assert torch.equal(encoder[name].float(), trained[f"gaze.{name}"])
    assert not torch.equal(
        encoder["layers.0.attention.query.weight"].float(), trained["gaze.layers.0.attention.query.weight"]
    )
