"""Multi-label classification end to end: JSON Lines with lists of labels → a sigmoid classifier
(problem_type "multi_label_classification") → Predictor, the CLI, a real `bentoml serve` and export."""

import json
import math
import random
from pathlib import Path

import httpx
import pytest
import torch
from conftest import tiny_config
from test_training import NEGATIVE, POSITIVE, launch, ok

from benchmarks.harness import served, server_env
from inference import predict as cli
from inference.predictor import Predictor
from model import GazeForSequenceClassification
from training.data import DataError, load_data, tokenize
from training.export import export
from training.metrics import multi_label_f1

GENRES = ["action", "comedy", "drama"]
BIAS = [2.0, -2.0, 0.5]  # the crafted models' classifier: zero weights, so every text gets these logits


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def crafted_classifier(folder: Path, tokenizer, problem_type: str) -> Path:
    """A tiny Gaze classifier over GENRES whose logits are BIAS for any text."""
    config = tiny_config(
        vocab_size=len(tokenizer),
        id2label=dict(enumerate(GENRES)),
        label2id={name: i for i, name in enumerate(GENRES)},
        problem_type=problem_type,
    )
    torch.manual_seed(0)
    model = GazeForSequenceClassification(config)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor(BIAS))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def multi_label_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    return crafted_classifier(tmp_path_factory.mktemp("multi-label"), tiny_tokenizer, "multi_label_classification")


# --- data -------------------------------------------------------------------------------------------


def test_lists_of_labels_become_multi_hot_targets_over_the_sorted_union(tmp_path, tiny_tokenizer):
    train = write_jsonl(
        tmp_path / "train.jsonl",
        [
            {"text": "a funny film", "labels": ["comedy"]},
            {"text": "a sad , funny film", "labels": ["drama", "comedy"]},
            {"text": "nothing", "labels": []},
            {"text": "fights", "labels": ["action"]},
        ],
    )
    dev = write_jsonl(tmp_path / "dev.jsonl", [{"text": "a duel", "labels": ["action", "drama"]}])
    data = load_data(train_file=train, validation_file=dev, cache_dir=tmp_path / "cache")
    assert data.multi_label and data.label_names == GENRES
    splits = tokenize(data, tiny_tokenizer, max_length=32)
    assert splits["train"]["labels"] == [[0, 1, 0], [0, 1, 1], [0, 0, 0], [1, 0, 0]]
    assert splits["validation"]["labels"] == [[1, 0, 1]]

    names = ["drama", "comedy", "action", "romance"]
    ordered = load_data(train_file=train, validation_file=dev, label_names=names, cache_dir=tmp_path / "cache")
    assert ordered.label_names == ["drama", "comedy", "action", "romance"]  # a name no row uses is still a class
    assert tokenize(ordered, tiny_tokenizer, max_length=32)["train"]["labels"][1] == [1, 1, 0, 0]

    everything = write_jsonl(tmp_path / "all.jsonl", [{"text": "x", "labels": ["a"]}] * 10)
    held_out = load_data(train_file=everything, cache_dir=tmp_path / "cache")
    assert held_out.multi_label and len(held_out.validation) == 1  # a seeded 10 % held out, as for single labels


TRAIN_LINES = [{"text": "one", "labels": ["x"]}, {"text": "two", "labels": ["y"]}]


@pytest.mark.parametrize(
    ("train", "dev", "options", "error"),
    [
        (
            [*TRAIN_LINES, {"text": "three", "labels": ["x", 3]}],
            None,
            {},
            "train.jsonl, line 3: the label list in column 'labels' holds 3 (int); every label in a list must be",
        ),
        (
            [*TRAIN_LINES, {"text": "three", "labels": ["x", " "]}],
            None,
            {},
            "train.jsonl, line 3: the label list in column 'labels' holds an empty string",
        ),
        (
            [*TRAIN_LINES, {"text": "three", "labels": "x"}],
            None,
            {},
            "train.jsonl, line 3: a single label in column 'labels', but line 1 has a list of labels (multi-label)",
        ),
        (
            [{"text": "one", "label": "x"}, {"text": "two", "label": ["x", "y"]}],
            None,
            {},
            "train.jsonl, line 2: a list of labels (multi-label) in column 'label', but line 1 has a single label",
        ),
        (
            TRAIN_LINES,
            None,
            {"label_names": ["x"]},
            "train.jsonl, line 2: label 'y' in column 'labels' is not in label_names ['x']",
        ),
        (
            TRAIN_LINES,
            [{"text": "a", "labels": []}, {"text": "b", "labels": ["x", "z"]}],
            {},
            "dev.jsonl, line 2: label 'z' in column 'labels' does not occur in the training data",
        ),
        (
            TRAIN_LINES,
            [{"text": "a", "labels": "x"}],
            {},
            "dev.jsonl, line 1: a single label in column 'labels', but the training file (train.jsonl) has a list of "
            "labels (multi-label) per text",
        ),
        (
            [{"text": "one", "labels": []}, {"text": "two", "labels": []}],
            None,
            {},
            "train.jsonl: every label list is empty",
        ),
    ],
    ids=["non-string", "empty-name", "list-then-scalar", "scalar-then-list", "label-names", "unknown", "dev", "none"],
)
def test_malformed_multi_label_files_fail_with_file_and_line(tmp_path, train, dev, options, error):
    files = {"train_file": write_jsonl(tmp_path / "train.jsonl", train)}
    files["validation_file"] = write_jsonl(tmp_path / "dev.jsonl", dev or train)
    with pytest.raises(DataError) as raised:
        load_data(**files, cache_dir=tmp_path / "cache", **options)
    assert error in str(raised.value)


def test_multi_label_f1_micro_counts_every_decision_macro_averages_occurring_classes():
    predicted = torch.tensor([[1, 0, 1, 0], [0, 1, 0, 0]], dtype=torch.bool)
    expected = torch.tensor([[1, 1, 0, 0], [0, 1, 0, 0]], dtype=torch.bool)
    micro, macro = multi_label_f1(predicted, expected)
    assert micro == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))  # 2 true positives, 1 false positive, 1 false negative
    assert macro == pytest.approx((1 + 2 / 3 + 0) / 3)  # the 4th class never occurs: not averaged
    assert multi_label_f1(expected, expected) == (1.0, 1.0)


# --- prediction: the core, the CLI, a real server ----------------------------------------------------


def test_predictor_gives_a_multi_label_model_sigmoid_scores_and_the_labels_above_one_half(
    multi_label_dir, tmp_path, tiny_tokenizer
):
    predictor = Predictor(multi_label_dir)
    assert predictor.multi_label
    for prediction in predictor.predict(["a gripping , funny film .", "dull"], attention="none"):
        assert prediction["scores"] == {name: round(sigmoid(b), 6) for name, b in zip(GENRES, BIAS, strict=True)}
        assert prediction["labels"] == ["action", "drama"]  # 0.88 and 0.62; comedy 0.12 stays out
        assert (prediction["label"], prediction["score"]) == ("action", round(sigmoid(2.0), 6))
    # The same weights as a single-label model: a softmax over the labels, and no `labels`.
    single = Predictor(crafted_classifier(tmp_path / "single", tiny_tokenizer, "single_label_classification"))
    (prediction,) = single.predict(["dull"], attention="none")
    assert "labels" not in prediction and sum(prediction["scores"].values()) == pytest.approx(1, abs=1e-5)


def test_cli_prints_every_label_above_the_threshold(multi_label_dir, capsys):
    assert cli.main(["dull", "--model", str(multi_label_dir), "--attention", "none"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "action 0.8808, drama 0.6225  dull"


@pytest.fixture(scope="module")
def multi_label_server(multi_label_dir, tmp_path_factory):
    home = tmp_path_factory.mktemp("bentoml-home")
    with served(env=server_env(home, GAZE_MODEL=multi_label_dir), log_path=home / "server.log") as url:
        yield url


def test_http_service_returns_sigmoid_scores_and_labels(multi_label_server):
    response = httpx.post(
        f"{multi_label_server}/classify",
        json={"texts": ["a gripping film", "dull"], "attention": "rollout"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    for prediction in response.json()["predictions"]:
        assert prediction["labels"] == ["action", "drama"]
        assert prediction["scores"]["comedy"] == round(sigmoid(-2.0), 6)
        assert prediction["attention"]["shape"] == [len(prediction["tokens"])]
    spec = httpx.get(f"{multi_label_server}/docs.json", timeout=30).json()
    assert "labels" in json.dumps(spec["components"]["schemas"]["Prediction"]["properties"])


# --- training and export ----------------------------------------------------------------------------


def review_labels(i: int) -> tuple[str, list[str]]:
    """A text and its labels: positive, negative, both (a mixed review) or neither (a plain statement)."""
    good, bad = POSITIVE[i % 3], NEGATIVE[i // 3 % 3]
    return [(good, ["positive"]), (bad, ["negative"]), (f"{good} but {bad}", ["negative", "positive"]),
            ("it is a film .", [])][i % 4]  # fmt: skip


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hf-home")


@pytest.fixture(scope="module")
def multi_label_run(tmp_path_factory, hf_home, tiny_model_dir) -> tuple[Path, Path, object]:
    """A real `accelerate launch` run on lists of labels, from the single-label tiny classifier (same label names)."""
    folder = tmp_path_factory.mktemp("multi-label-run")
    rows = [dict(zip(("text", "labels"), review_labels(i), strict=True)) for i in range(120)]
    train, test = write_jsonl(folder / "train.jsonl", rows), write_jsonl(folder / "test.jsonl", rows[:24])
    out = folder / "out"
    result = ok(
        launch(
            hf_home, "--train-file", str(train), "--test-file", str(test), "--init-from", str(tiny_model_dir),
            "--output-dir", str(out), "--max-steps", "60", "--eval-steps", "20", "--per-device-train-batch-size", "8",
            "--learning-rate", "3e-3", "--warmup-ratio", "0", "--logging-steps", "10",
        )
    )  # fmt: skip
    return out, test, result


def test_training_on_lists_of_labels_gives_a_multi_label_folder(multi_label_run, tiny_model_dir):
    out, _, result = multi_label_run
    log = result.stdout + result.stderr
    # Same label names, another kind of head: the single-label classifier is not kept.
    assert (
        "its classifier for ['negative', 'positive'] is replaced; it was single-label, this model is multi-label" in log
    )
    config = json.loads((out / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification"
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evaluations = [r for r in records if "eval_loss" in r]
    assert [r["step"] for r in evaluations] == [20, 40, 60]
    assert all({"eval_micro_f1", "eval_macro_f1", "eval_subset_accuracy"} <= set(r) for r in evaluations)
    results = json.loads((out / "results.json").read_text())
    assert results["metric_for_best_model"] == "micro_f1" and "test_micro_f1" in results
    assert "Multi-label: each label's score is its own sigmoid" in (out / "README.md").read_text()


def test_the_trained_folder_serves_what_training_evaluated(multi_label_run):
    """Sigmoid scores of the saved model's logits; `labels` at 0.5, which give the run's own test metrics."""
    out, test_file, _ = multi_label_run
    rows = [json.loads(line) for line in test_file.read_text().splitlines()]
    predictor = Predictor(out)
    predictions = predictor.predict([row["text"] for row in rows], attention="none")
    model = GazeForSequenceClassification.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        inputs = predictor.tokenizer([row["text"] for row in rows], return_tensors="pt", padding=True)
        logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
    for prediction, row in zip(predictions, logits.sigmoid().tolist(), strict=True):
        assert list(prediction["scores"].values()) == pytest.approx(row, abs=1e-5)
        assert prediction["labels"] == [name for name, p in prediction["scores"].items() if p >= 0.5]
    predicted = torch.tensor([[name in p["labels"] for name in predictor.labels] for p in predictions])
    expected = torch.tensor([[name in row["labels"] for name in predictor.labels] for row in rows])
    results = json.loads((out / "results.json").read_text())
    assert predicted.any(), "the model predicts no label at all: nothing is compared"
    assert multi_label_f1(predicted, expected)[0] == pytest.approx(results["test_micro_f1"])
    assert (predicted == expected).all(-1).float().mean().item() == pytest.approx(results["test_subset_accuracy"])


def test_export_keeps_the_problem_type_and_measures_micro_f1(multi_label_run, tmp_path):
    run, test_file, _ = multi_label_run
    target = tmp_path / "exported"
    metrics = export(run, target, test_file, [], ["reviews"])
    assert json.loads((target / "config.json").read_text())["problem_type"] == "multi_label_classification"
    assert Predictor(target).multi_label and set(metrics) >= {"eval_micro_f1", "eval_subset_accuracy"}
    card = (target / "README.md").read_text()
    assert (
        "Micro-F1 of this folder on `test.jsonl` (24 sentences)" in card and f"{metrics['eval_micro_f1']:.4f}" in card
    )
    assert "Multi-label" in card


def test_a_single_label_metric_is_refused_for_multi_label_data(tmp_path, hf_home, tiny_model_dir):
    train = write_jsonl(tmp_path / "train.jsonl", [{"text": t, "labels": ["x"]} for t in POSITIVE * 4])
    result = launch(hf_home, "--train-file", str(train), "--init-from", str(tiny_model_dir),
                    "--metric-for-best-model", "accuracy", "--output-dir", str(tmp_path / "out"))  # fmt: skip
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert (
        "error: metric_for_best_model 'accuracy' is not evaluated for multi-label data; choose one of loss, micro_f1,"
        " macro_f1, subset_accuracy" in result.stderr
    )


# --- the defaults on a multi-label file of the README's kind ------------------------------------------------------

CUES = {  # phrases that signal each genre; a text has 0 to 3 genres, among neutral words
    "action": ["car chases", "gunfights", "martial arts", "a heist", "explosions", "stunts"],
    "animation": ["a cartoon", "hand-drawn frames", "cgi characters", "anime", "talking animals", "animated"],
    "comedy": ["hilarious", "goofy gags", "a witty farce", "laughs galore", "slapstick", "comic timing"],
    "documentary": ["interviews", "archival footage", "real events", "narration", "witnesses", "a filmmaker follows"],
    "drama": ["a family in crisis", "grief", "heartbreaking", "tearful", "a character study", "melodrama"],
    "horror": ["terrifying", "gory", "a haunted house", "a slasher", "jump scares", "a demon"],
    "romance": ["a love story", "lovers", "a wedding", "kisses", "falling in love", "a couple"],
    "scifi": ["aliens", "a spaceship", "time travel", "robots", "a distant planet", "cyborgs"],
}
NEUTRAL = ["the director", "the cast", "the score", "two hours", "the ending", "the sequel", "the studio", "critics"]


def genre_rows(count: int, seed: int) -> list[dict]:
    """Texts with 0 to 3 of 8 genres (each label on about 1 text in 6), cue phrases among neutral ones."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        labels = sorted(rng.sample(sorted(CUES), rng.choice([0, 1, 1, 1, 2, 2, 3])))
        words = [rng.choice(CUES[label]) for label in labels] + rng.sample(NEUTRAL, 3)
        rng.shuffle(words)
        rows.append({"text": "a film with " + ", ".join(words) + ".", "labels": labels})
    return rows


def test_a_small_multi_label_file_trains_with_the_defaults(tmp_path, hf_home):
    """The README's own-data command, no flags but the files: from gaze-base, 270 training texts. With 3 epochs
    (27 steps) and the plain head it learned nothing (micro-F1 0.0); see MIN_STEPS in training/train.py."""
    train = write_jsonl(tmp_path / "train.jsonl", genre_rows(300, seed=0))
    test = write_jsonl(tmp_path / "test.jsonl", genre_rows(200, seed=1))
    out = tmp_path / "out"
    result = ok(launch(hf_home, "--train-file", str(train), "--test-file", str(test), "--output-dir", str(out)))
    assert "12 epochs: a small training set gets at least 100 optimizer steps" in result.stdout
    results = json.loads((out / "results.json").read_text())
    assert results["steps"] == 108 and results["test_micro_f1"] >= 0.8, results
    assert results["test_predicted_labels_per_text"] > 0.5 and "assigns no label" not in result.stdout


def test_a_model_that_predicts_no_label_is_reported_loudly(tmp_path, hf_home, tiny_model_dir):
    train = write_jsonl(tmp_path / "train.jsonl", genre_rows(60, seed=2))
    result = ok(launch(hf_home, "--train-file", str(train), "--init-from", str(tiny_model_dir),
                       "--learning-rate", "0", "--output-dir", str(tmp_path / "out")))  # fmt: skip
    # Weights unchanged: every label stays at its training rate (below 1/2), the head's starting point.
    assert "warning: the saved model assigns no label to any of the 6 validation texts" in result.stdout
    assert json.loads((tmp_path / "out" / "results.json").read_text())["eval_predicted_labels_per_text"] == 0
