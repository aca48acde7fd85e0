"""training/train.py helpers in-process: metrics, best-model tracking and early stopping, the metrics log."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from accelerate import PartialState

from model import GazeConfig, GazeForSequenceClassification
from model.configuration_gaze import MAX_LABELS
from training import runtime
from training.checkpoints import claim_output_dir
from training.config import RunError, parse_args
from training.data import DataError, load_data
from training.loop import Progress, update_best
from training.metrics import macro_f1, multi_label_metrics
from training.pretrain import PretrainArgs
from training.records import keep_records
from training.runtime import make_accelerator
from training.sentences import split_file, split_sentences
from training.train import TrainArgs, evaluate


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
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        make_accelerator(seed=0)
        assert "pass `--num_cpu_threads_per_process 4`" in capsys.readouterr().out
        torch.set_num_threads(4)
        make_accelerator(seed=0)
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
    from_file = parse_args(TrainArgs, ["--config", str(root / "training/configs/own-data.yaml")])
    defaults = parse_args(TrainArgs, [])
    differ = {k for k, v in dataclasses.asdict(defaults).items() if getattr(from_file, k) != v}
    assert differ == {"init_from"}  # the file names the folder relative to the repository
    assert (root / from_file.init_from).resolve() == Path(defaults.init_from).resolve()


def test_training_help_describes_every_flag_with_its_type_and_default(capsys):
    with pytest.raises(SystemExit):
        parse_args(TrainArgs, ["--help"])
    text = capsys.readouterr().out
    assert "NONETYPE" not in text and "Fine-tune a Gaze text classifier" in text
    for spec in dataclasses.fields(TrainArgs):
        flag = "--" + spec.name.replace("_", "-")
        assert flag in text, flag
    assert "--learning-rate FLOAT, --learning_rate FLOAT" in text
    assert "--mixed-precision {auto,no,bf16,fp16}, --mixed_precision {auto,no,bf16,fp16}" in text
    assert "(default: checkpoints/gaze-base)" in " ".join(text.split())  # relative to the repository


def test_flags_take_both_spellings_repeated_list_values_and_paths_as_written():
    args = parse_args(
        TrainArgs,
        ["--train_file", "#train.csv", "--validation-file", "[dev].csv", "--label-names", "neg", "pos"]
        + ["--init-from", "none", "--learning_rate", "3e-5", "--group-by-length", "false"],
    )
    assert (args.train_file, args.validation_file) == ("#train.csv", "[dev].csv")  # not parsed as YAML
    assert args.label_names == ["neg", "pos"] and args.init_from is None
    assert args.learning_rate == 3e-5 and args.group_by_length is False
    with pytest.raises(dataclasses.FrozenInstanceError):  # derived values make a copy (dataclasses.replace)
        args.learning_rate = 1.0
    pretrain = parse_args(PretrainArgs, ["--train-files", "a.txt", "b.jsonl", "--max-steps", "7"])
    assert pretrain.train_files == ["a.txt", "b.jsonl"] and pretrain.max_steps == 7


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("max_steps: two", "max_steps should be an integer, got 'two'"),
        ("mixed_precision: fp8", "mixed_precision should be one of auto, no, bf16, fp16, got 'fp8'"),
        ("learning_rate: 5e-5\nlabel_names: [a, 3]", "label_names should be a list of strings or null"),
        ("num_epochs: 3", "unknown keys ['num_epochs']"),
        ("a: &a [x, x]\nlabel_names: [*a, *a]", ", line 2, column 15: aliases (*name) are not allowed"),
        ("learning_rate: [1,", ", line 2, column 1: expected the node content"),
    ],
)
def test_a_config_file_value_of_the_wrong_type_is_refused_naming_file_and_key(tmp_path, capsys, line, message):
    config = tmp_path / "run.yaml"
    config.write_text(line + "\n")
    with pytest.raises(SystemExit):
        parse_args(TrainArgs, ["--config", str(config)])
    last = capsys.readouterr().err.splitlines()[-1]  # the usage, then one line
    assert last.startswith("__main__.py: error: ") and f"{config}" in last and message in last


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--learning-rate", "nan"], "--learning-rate nan: expected a finite number at least 0"),
        (["--per-device-train-batch-size", "0"], "--per-device-train-batch-size 0: expected an integer at least 1"),
        (["--gradient-accumulation-steps", "0"], "--gradient-accumulation-steps 0: expected an integer at least 1"),
        (["--max-seq-length", "0"], "--max-seq-length 0: expected an integer at least 3"),
        (["--num-train-epochs", "0", "--max-steps", "0"], "--num-train-epochs 0: expected an integer at least 1"),
        (["--warmup-ratio", "-0.5"], "--warmup-ratio -0.5: expected a finite number at least 0 and below 1"),
        (["--eval-steps", "-3"], "--eval-steps -3: expected an integer at least 0"),
        (["--classifier-dropout", "inf"], "--classifier-dropout inf: expected a finite number at least 0 and below 1"),
    ],
)
def test_a_number_out_of_its_range_is_refused_in_one_line(capsys, flags, message):
    with pytest.raises(SystemExit):
        parse_args(TrainArgs, flags)
    assert capsys.readouterr().err.splitlines()[-1].endswith(message)


def test_help_gives_each_numbers_range_and_a_config_file_value_is_checked_too(tmp_path, capsys):
    with pytest.raises(SystemExit):
        parse_args(TrainArgs, ["--help"])
    assert "(default: 32; at least 1)" in " ".join(capsys.readouterr().out.split())
    config = tmp_path / "run.yaml"
    config.write_text("save_steps: 0\n")
    with pytest.raises(SystemExit):
        parse_args(TrainArgs, ["--config", str(config)])
    assert "--save-steps 0: expected an integer at least 1" in capsys.readouterr().err


def test_a_config_file_reads_numbers_yaml_leaves_as_strings_and_one_file_as_a_list(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("learning_rate: 5e-5\ntrain_files: corpus.txt\nmax_steps: 3\n")
    args = parse_args(PretrainArgs, ["--config", str(config), "--max-steps", "4"])
    assert args.learning_rate == 5e-5 and args.train_files == ["corpus.txt"] and args.max_steps == 4


@pytest.mark.parametrize(("fp32", "bf16", "chosen"), [(1.0, 0.5, "bf16"), (1.0, 0.95, "no"), (1.0, 3.0, "no")])
def test_auto_mixed_precision_keeps_bf16_only_where_the_probe_is_clearly_faster(
    monkeypatch, capsys, fp32, bf16, chosen
):
    monkeypatch.setattr(runtime, "probe_step_seconds", lambda: {"fp32": fp32, "bf16": bf16})
    assert runtime.choose_mixed_precision(PartialState(cpu=True)) == chosen
    assert (
        f"Mixed precision (auto): {chosen} (a probe training step: fp32 {fp32 * 1000:.0f} ms" in capsys.readouterr().out
    )


def test_the_precision_probe_times_both_precisions():
    seconds = runtime.probe_step_seconds(repeats=1)
    assert set(seconds) == {"fp32", "bf16"} and all(0 < value < 60 for value in seconds.values())


@pytest.mark.parametrize("multi_label", [False, True])
def test_evaluation_counts_batch_by_batch_and_matches_the_whole_split(multi_label):
    """Evaluation keeps counts, not logits (10^6 labels × 100k texts ran out of memory); same numbers."""
    torch.manual_seed(0)
    config = GazeConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, num_labels=5
    )
    model = GazeForSequenceClassification(config).eval()
    input_ids = torch.randint(5, 50, (23, 7))
    mask = torch.ones_like(input_ids)
    labels = torch.rand(23, 5).lt(0.3).long() if multi_label else torch.randint(0, 5, (23,))
    batches = [
        {"input_ids": input_ids[i : i + 4], "attention_mask": mask[i : i + 4], "labels": labels[i : i + 4]}
        for i in range(0, 23, 4)
    ]
    streamed = evaluate(model, batches, make_accelerator(0, "no", 1), multi_label=multi_label)

    with torch.no_grad():
        logits = model.eval()(input_ids=input_ids, attention_mask=mask).logits
    if multi_label:
        predicted = logits.sigmoid() >= 0.5
        expected = {"loss": F.binary_cross_entropy_with_logits(logits, labels.float()).item()}
        expected |= multi_label_metrics(predicted, labels.bool())
    else:
        predicted = logits.argmax(-1)
        accuracy = (predicted == labels).float().mean().item()
        expected = {"loss": F.cross_entropy(logits, labels).item(), "accuracy": accuracy}
        expected["macro_f1"] = macro_f1(predicted, labels)
    assert streamed == pytest.approx(expected, rel=1e-5)
    assert 0 < streamed.get("accuracy", streamed.get("micro_f1")) < 1  # the numbers are not trivial


def test_a_training_file_with_more_labels_than_a_model_may_have_is_refused(tmp_path):
    rows = "\n".join(f"text {i},label-{i}" for i in range(MAX_LABELS + 1))
    (tmp_path / "train.csv").write_text("text,label\n" + rows + "\n")
    with pytest.raises(DataError, match=r"train\.csv: 10,001 distinct labels; a Gaze classifier has at most 10,000"):
        load_data(train_file=tmp_path / "train.csv", cache_dir=tmp_path / "cache")


@pytest.mark.parametrize(
    ("folder", "message"),
    [("/dev/null", "--output-dir /dev/null is a file, not a folder"), ("/proc/self/x", "cannot create it")],
)
def test_an_output_dir_that_cannot_be_a_folder_is_refused_in_one_line(folder, message):
    with pytest.raises(RunError, match=message):
        claim_output_dir(PartialState(cpu=True), folder, overwrite_output_dir=False)
