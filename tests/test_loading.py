"""Saved Gaze folders: Auto-class registration, loading where this project is not importable,
clear errors for broken folders, and the model card."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import assert_refuses_to_start, tiny_config
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    BertConfig,
    BertForSequenceClassification,
)

import model as gaze_package
from benchmarks.harness import server_env
from inference.predictor import Predictor
from model import GazeConfig, GazeForMaskedLM, GazeForSequenceClassification, GazeModel
from model.card import write_model_card
from model.configuration_gaze import MAX_LABELS
from model.folder import ModelLoadError, check_model_folder

TEXTS = ["a gripping , funny and moving film .", "It DOESN'T work,<br />it's a dull mess."]

AUTO_MAP = {
    "AutoConfig": "configuration_gaze.GazeConfig",
    "AutoModel": "modeling_gaze.GazeModel",
    "AutoModelForSequenceClassification": "modeling_gaze.GazeForSequenceClassification",
    "AutoModelForMaskedLM": "modeling_gaze.GazeForMaskedLM",
}


@pytest.fixture(scope="module")
def mlm_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    folder = tmp_path_factory.mktemp("tiny-gaze-mlm")
    torch.manual_seed(1)
    GazeForMaskedLM(tiny_config(vocab_size=len(tiny_tokenizer))).save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    return folder


def copy_of(folder: Path, tmp_path: Path) -> Path:
    """A scratch copy of a saved folder (the session fixtures are shared and must stay intact)."""
    return Path(shutil.copytree(folder, tmp_path / folder.name))


# --- 5. Registration -----------------------------------------------------------------------------


def test_saved_folder_has_code_and_auto_map(tiny_model_dir):
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert config["model_type"] == "gaze"
    assert config["auto_map"] == AUTO_MAP
    package = Path(gaze_package.__file__).parent
    for name in ("configuration_gaze.py", "modeling_gaze.py"):
        assert (tiny_model_dir / name).read_bytes() == (package / name).read_bytes(), f"{name} is not current"
    assert (tiny_model_dir / "model.safetensors").exists()
    assert not (tiny_model_dir / "pytorch_model.bin").exists()


@pytest.mark.parametrize("with_code", [True, False], ids=["with-code", "without-code"])
def test_importing_model_registers_the_auto_classes(tiny_model_dir, mlm_dir, tmp_path, with_code):
    """In-process, the Auto classes load our own classes without trust_remote_code, with or without
    the copied .py files and auto_map in the folder."""
    classifier_dir, masked_dir = tiny_model_dir, mlm_dir
    if not with_code:
        classifier_dir, masked_dir = copy_of(tiny_model_dir, tmp_path), copy_of(mlm_dir, tmp_path)
        for folder in (classifier_dir, masked_dir):
            for name in ("configuration_gaze.py", "modeling_gaze.py"):
                (folder / name).unlink()
            config = json.loads((folder / "config.json").read_text())
            del config["auto_map"]
            (folder / "config.json").write_text(json.dumps(config))

    assert type(AutoConfig.from_pretrained(classifier_dir)) is GazeConfig
    assert type(AutoModel.from_pretrained(classifier_dir)) is GazeModel
    assert type(AutoModelForSequenceClassification.from_pretrained(classifier_dir)) is GazeForSequenceClassification
    assert type(AutoModelForMaskedLM.from_pretrained(masked_dir)) is GazeForMaskedLM


# --- 6. Round trip where the project cannot be imported ------------------------------------------

CHILD = r"""
import importlib.util
import json
import sys

assert importlib.util.find_spec("model") is None, "the project is importable: " + repr(sys.path)

import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    pipeline,
)

args = json.loads(sys.argv[1])
classifier_dir, mlm_dir, texts = args["classifier_dir"], args["mlm_dir"], args["texts"]
tokenizer = AutoTokenizer.from_pretrained(classifier_dir, trust_remote_code=True)
inputs = tokenizer(texts, padding=True, return_tensors="pt")
config = AutoConfig.from_pretrained(classifier_dir, trust_remote_code=True)
base = AutoModel.from_pretrained(classifier_dir, trust_remote_code=True)
classifier = AutoModelForSequenceClassification.from_pretrained(classifier_dir, trust_remote_code=True)
mlm = AutoModelForMaskedLM.from_pretrained(mlm_dir, trust_remote_code=True)
classify = pipeline("text-classification", model=classifier_dir, trust_remote_code=True)
with torch.no_grad():
    classified = classifier(**inputs, output_attentions=True)
    encoded = base(**inputs)
    masked = mlm(**inputs)

# The model card's snippet, as a Hub user would run it (its folder path filled in).
card = {}
print("CARD-START")
exec(args["card_code"], card)
print("CARD-END")

print(json.dumps({
    "classes": [f"{type(o).__module__}.{type(o).__name__}" for o in (config, base, classifier, mlm, classify.model)],
    "tokenizer_class": type(tokenizer).__name__,
    "input_ids": inputs["input_ids"].tolist(),
    "attention_mask": inputs["attention_mask"].tolist(),
    "logits": classified.logits.tolist(),
    "attentions": [a.tolist() for a in classified.attentions],
    "last_hidden_state": encoded.last_hidden_state.tolist(),
    "mlm_logits": masked.logits.tolist(),
    "mlm_tied": mlm.lm_head.decoder.weight is mlm.gaze.embeddings.word_embeddings.weight,
    "id2label": {str(k): v for k, v in classifier.config.id2label.items()},
    "pipeline": classify(texts),
    "card_attentions": [list(a.shape) for a in card["outputs"].attentions],
}))
"""


def clean_env(tmp_path: Path) -> dict[str, str]:
    """The current environment without any PYTHON* variable (PYTHONPATH above all), offline, and with
    a private cache for the remote-code modules."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(
        HF_HUB_OFFLINE="1",
        HF_MODULES_CACHE=str(tmp_path / "modules"),
        TRANSFORMERS_VERBOSITY="error",
        TOKENIZERS_PARALLELISM="false",
    )
    return env


@pytest.fixture(scope="module")
def remote_code_run(tiny_model_dir, mlm_dir, tmp_path_factory) -> dict:
    """Everything loaded once, in a Python whose cwd and sys.path cannot reach this project.

    Also runs the model card's code snippet there, on a copy of the classifier folder with its card.
    """
    workdir = tmp_path_factory.mktemp("clean-python")
    card_folder = copy_of(tiny_model_dir, tmp_path_factory.mktemp("card"))
    card = write_model_card(
        card_folder, GazeConfig.from_pretrained(card_folder), task="text-classification", datasets=[]
    )
    card_code = card.read_text().split("```python\n", 1)[1].split("```", 1)[0]
    args = {
        "classifier_dir": str(tiny_model_dir),
        "mlm_dir": str(mlm_dir),
        "texts": TEXTS,
        "card_code": card_code.replace("path/to/this/folder", str(card_folder)),
    }
    (workdir / "child.py").write_text(CHILD)
    result = subprocess.run(
        [sys.executable, "child.py", json.dumps(args)],
        cwd=workdir,
        env=clean_env(workdir),
        stdin=subprocess.DEVNULL,  # a trust_remote_code prompt must never wait for an answer
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"the clean subprocess failed:\n{result.stderr[-4000:]}"
    before_card, rest = result.stdout.split("CARD-START\n", 1)
    card_stdout, after_card = rest.split("CARD-END\n", 1)
    *other_lines, last_line = after_card.strip().splitlines()
    output = json.loads(last_line)
    output["card_stdout"] = card_stdout
    output["other_stdout"] = before_card + "\n".join(other_lines)
    return output


def test_clean_process_loads_remote_code_classes(remote_code_run):
    assert remote_code_run["other_stdout"].strip() == "", "no prompt, no stray output"
    modules = [name.rsplit(".", 1)[0] for name in remote_code_run["classes"]]
    assert all(m.startswith("transformers_modules.") for m in modules), remote_code_run["classes"]
    assert [name.rsplit(".", 1)[1] for name in remote_code_run["classes"]] == [
        "GazeConfig",
        "GazeModel",
        "GazeForSequenceClassification",
        "GazeForMaskedLM",
        "GazeForSequenceClassification",
    ]
    assert remote_code_run["mlm_tied"]


def test_clean_process_gives_the_same_outputs(remote_code_run, tiny_model_dir, mlm_dir, tiny_tokenizer):
    inputs = tiny_tokenizer(TEXTS, padding=True, return_tensors="pt")
    assert remote_code_run["input_ids"] == inputs["input_ids"].tolist()
    assert remote_code_run["attention_mask"] == inputs["attention_mask"].tolist()
    classifier = GazeForSequenceClassification.from_pretrained(tiny_model_dir)
    base = GazeModel.from_pretrained(tiny_model_dir)
    mlm = GazeForMaskedLM.from_pretrained(mlm_dir)
    with torch.no_grad():
        classified = classifier(**inputs, output_attentions=True)
        encoded = base(**inputs)
        masked = mlm(**inputs)

    def close(got, want):
        torch.testing.assert_close(torch.tensor(got), want, rtol=0, atol=1e-5)

    close(remote_code_run["logits"], classified.logits)
    for got, want in zip(remote_code_run["attentions"], classified.attentions, strict=True):
        close(got, want)
    close(remote_code_run["last_hidden_state"], encoded.last_hidden_state)
    close(remote_code_run["mlm_logits"], masked.logits)


def test_clean_process_pipeline_returns_named_labels(remote_code_run, tiny_model_dir):
    classifier = GazeForSequenceClassification.from_pretrained(tiny_model_dir)
    assert remote_code_run["id2label"] == {"0": "negative", "1": "positive"}
    predictions = remote_code_run["pipeline"]
    assert len(predictions) == len(TEXTS)
    for prediction, text in zip(predictions, TEXTS, strict=True):
        assert prediction["label"] in {"negative", "positive"}
        assert 0.5 <= prediction["score"] <= 1.0
        # The same top label and probability as the in-process model on that text alone.
        with torch.no_grad():
            probs = classifier(**classifier_inputs(tiny_model_dir, text)).logits.softmax(-1)[0]
        assert prediction["label"] == classifier.config.id2label[int(probs.argmax())]
        assert prediction["score"] == pytest.approx(float(probs.max()), abs=1e-5)


def classifier_inputs(folder: Path, text: str) -> dict:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)(text, return_tensors="pt")


# --- 7. Clear errors for broken folders ----------------------------------------------------------


def test_corrupted_safetensors_raises(tiny_model_dir, tmp_path):
    folder = copy_of(tiny_model_dir, tmp_path)
    (folder / "model.safetensors").write_bytes(bytes(range(256)) * 64)
    with pytest.raises(SafetensorError, match="Error while deserializing header"):
        GazeForSequenceClassification.from_pretrained(folder)


@pytest.mark.parametrize("keep", [0.5, 0.001], ids=["half", "inside-header"])
def test_truncated_safetensors_raises(tiny_model_dir, tmp_path, keep):
    folder = copy_of(tiny_model_dir, tmp_path)
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(SafetensorError, match="Error while deserializing header"):
        GazeForSequenceClassification.from_pretrained(folder)


def test_missing_safetensors_raises(tiny_model_dir, tmp_path):
    folder = copy_of(tiny_model_dir, tmp_path)
    (folder / "model.safetensors").unlink()
    with pytest.raises(OSError, match="no file named model.safetensors"):
        GazeForSequenceClassification.from_pretrained(folder)


def test_pickle_checkpoint_is_refused_with_use_safetensors(tiny_model_dir, tmp_path, monkeypatch):
    """A folder with only pytorch_model.bin: with use_safetensors=True the pickle is never opened.
    (Without it, transformers 5.23 falls back to loading the .bin.)"""
    folder = copy_of(tiny_model_dir, tmp_path)
    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()

    def no_unpickling(*args, **kwargs):
        raise AssertionError("torch.load was called on a pickle checkpoint")

    monkeypatch.setattr(torch, "load", no_unpickling)
    with pytest.raises(OSError, match="no file named model.safetensors"):
        GazeForSequenceClassification.from_pretrained(folder, use_safetensors=True)


def test_missing_config_raises_through_auto_class(tiny_model_dir, tmp_path):
    folder = copy_of(tiny_model_dir, tmp_path)
    (folder / "config.json").unlink()
    with pytest.raises(ValueError, match="config.json"):
        AutoModelForSequenceClassification.from_pretrained(folder)


@pytest.mark.parametrize("size", ["tiny", "default-size"])
def test_missing_config_raises_clearly(tiny_model_dir, tmp_path, size):
    if size == "tiny":
        folder = copy_of(tiny_model_dir, tmp_path)
    else:
        folder = tmp_path / "default-size"
        config = GazeConfig(id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1})
        GazeForSequenceClassification(config).save_pretrained(folder)
    (folder / "config.json").unlink()
    with pytest.raises((OSError, ValueError), match="config.json"):
        GazeForSequenceClassification.from_pretrained(folder)


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-bert")
    config = BertConfig(
        vocab_size=200, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    return folder


def test_config_of_another_model_type_raises_clearly(bert_dir):
    with pytest.raises(ValueError, match="bert"):
        GazeForSequenceClassification.from_pretrained(bert_dir)


def test_auto_class_loads_another_model_type_as_itself(bert_dir):
    """The Auto classes dispatch on model_type: a BERT folder gives a BERT, not a Gaze."""
    assert type(AutoModelForSequenceClassification.from_pretrained(bert_dir)) is BertForSequenceClassification


# --- 9. Model card -------------------------------------------------------------------------------


def front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    end = text.index("\n---\n", 4)
    return yaml.safe_load(text[4:end])


def test_model_card_front_matter_parses(tmp_path):
    config = tiny_config()
    path = write_model_card(
        tmp_path,
        config,
        task="text-classification",
        datasets=["stanfordnlp/sst2", "stanfordnlp/imdb"],
        metrics={"accuracy": 0.8312, "f1": 0.84},
        details="Trained on 2 CPU cores.",
    )
    assert path == tmp_path / "README.md"
    text = path.read_text(encoding="utf-8")
    metadata = front_matter(text)
    assert metadata["library_name"] == "transformers"
    assert metadata["pipeline_tag"] == "text-classification"
    assert metadata["datasets"] == ["stanfordnlp/sst2", "stanfordnlp/imdb"]
    assert metadata["metrics"] == ["accuracy", "f1"]
    assert "| accuracy | 0.8312 |" in text
    assert "0 = `negative`, 1 = `positive`" in text
    assert "Trained on 2 CPU cores." in text
    assert "AutoModelForSequenceClassification" in text


def test_model_card_for_fill_mask_without_metrics(tmp_path):
    text = write_model_card(tmp_path, tiny_config(), task="fill-mask", datasets=["stanfordnlp/imdb"]).read_text()
    metadata = front_matter(text)
    assert metadata["pipeline_tag"] == "fill-mask"
    assert metadata["metrics"] == []
    assert "AutoModelForMaskedLM" in text and "## Results" not in text


def test_model_card_code_runs_where_the_project_is_not_importable(remote_code_run, tiny_tokenizer):
    """The card's snippet loads the folder and returns maps, without a trust_remote_code prompt."""
    n = len(tiny_tokenizer("a gripping, funny film")["input_ids"])  # the card's example sentence
    assert remote_code_run["card_attentions"] == [[1, 4, n, n]] * 2
    assert "Do you wish to run the custom code" not in remote_code_run["card_stdout"]


# --- 8. Folders that would load but must never be served -----------------------------------------
# Each of these once started a server: random scores from missing tensors, bare NaN in the JSON, a
# KeyError traceback, a prompt to run the folder's own code, or a model of 10^6 layers allocated.


def rewrite_weights(folder: Path, change) -> None:
    tensors = change(load_file(folder / "model.safetensors"))
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})


def rewrite_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


def without_classifier(folder: Path) -> None:
    rewrite_weights(folder, lambda t: {k: v for k, v in t.items() if not k.startswith("classifier.")})


def one_tensor_left(folder: Path) -> None:
    rewrite_weights(
        folder, lambda t: {"gaze.embeddings.word_embeddings.weight": t["gaze.embeddings.word_embeddings.weight"]}
    )


def all_nan(folder: Path) -> None:
    rewrite_weights(folder, lambda t: {k: torch.full_like(v, float("nan")) for k, v in t.items()})


def id2label_with_a_gap(folder: Path) -> None:
    rewrite_config(folder, id2label={"0": "negative", "2": "positive"}, label2id={"negative": 0, "positive": 2})


def huge_depth(folder: Path) -> None:
    rewrite_config(folder, num_hidden_layers=10**6)


def too_many_labels(folder: Path) -> None:
    """A 10^6-label model answered 15 MB per text (hostile review 2, M3)."""
    names = {str(i): f"label-{i}" for i in range(MAX_LABELS + 1)}
    rewrite_config(folder, id2label=names, label2id={name: int(i) for i, name in names.items()})


EVIL_CODE = "import pathlib\npathlib.Path({marker!r}).write_text('the folder ran its own code')\n"


def foreign_code(folder: Path) -> None:
    """An unknown model type whose auto_map points at code shipped in the folder (which leaves a marker)."""
    rewrite_config(
        folder,
        model_type="evil-bert",
        auto_map={
            "AutoConfig": "configuration_evil.EvilConfig",
            "AutoModelForSequenceClassification": "modeling_evil.EvilForSequenceClassification",
        },
    )
    for name in ("configuration_evil.py", "modeling_evil.py"):
        (folder / name).write_text(EVIL_CODE.format(marker=str(folder / "MARKER")))


def rewrite_vocabulary(folder: Path, change) -> None:
    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    change(tokenizer["model"]["vocab"])
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer))


def token_beyond_the_embeddings(folder: Path) -> None:
    size = json.loads((folder / "config.json").read_text())["vocab_size"]
    rewrite_vocabulary(folder, lambda vocab: vocab.update(zzzz=size + 5))


def no_cls_token(folder: Path) -> None:
    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    tokenizer["model"]["vocab"]["[XLS]"] = tokenizer["model"]["vocab"].pop("[CLS]")
    for token in tokenizer["added_tokens"]:
        token["content"] = "[XLS]" if token["content"] == "[CLS]" else token["content"]
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer))


def overflowing_weights(folder: Path) -> None:
    """Finite weights whose logits overflow float32: every score would be NaN or infinite."""
    rewrite_weights(folder, lambda t: t | {"classifier.weight": torch.full_like(t["classifier.weight"], 3e38)})


def nan_layer_norm_eps(folder: Path) -> None:
    rewrite_config(folder, layer_norm_eps=float("nan"))


UNSERVABLE = {  # how to break a folder → what the one-line refusal must name
    "no-classifier": (
        without_classifier,
        "lacks 2 of the 42 tensors its config describes: classifier.bias, classifier.weight",
    ),
    "one-tensor-left": (one_tensor_left, "lacks 41 of the 42 tensors its config describes"),
    "all-nan": (all_nan, "hold NaN or infinite values: classifier.bias, classifier.weight"),
    "id2label-gap": (id2label_with_a_gap, "id2label must name every class 0 to 1 exactly once; it has 0, 2"),
    "huge-depth": (huge_depth, "num_hidden_layers=1000000"),
    "too-many-labels": (too_many_labels, "num_labels=10,001 is out of range (1 to 10,000)"),
    "foreign-code": (foreign_code, "holds a model of type 'evil-bert'"),
    "token-beyond-embeddings": (token_beyond_the_embeddings, "tokenizer.json gives token id"),
    "no-cls-token": (no_cls_token, "a tokenizer without the special tokens [CLS]"),
    # Found only by running the model once (hostile review 2, M7: these once started, then failed every request).
    "overflowing-weights": (overflowing_weights, "gives non-finite scores"),
    "nan-layer-norm-eps": (nan_layer_norm_eps, "gives non-finite scores"),
}
FOUND_BY_RUNNING = {"overflowing-weights", "nan-layer-norm-eps"}
# What a file check finds, without building the model (NaN is in the values, found when loading).
FOUND_BY_THE_FILE_CHECK = sorted(set(UNSERVABLE) - {"all-nan"} - FOUND_BY_RUNNING)


def unservable(name: str, tiny_model_dir: Path, tmp_path: Path) -> tuple[Path, str]:
    folder = copy_of(tiny_model_dir, tmp_path)
    breaker, message = UNSERVABLE[name]
    breaker(folder)
    return folder, message


def never_prompt(monkeypatch) -> list:
    """Answer "y" to any trust_remote_code prompt (as a careless operator would), and record that it came."""
    prompts = []
    monkeypatch.setattr("builtins.input", lambda *args: prompts.append(args) or "y")
    return prompts


@pytest.mark.parametrize("name", FOUND_BY_THE_FILE_CHECK)
def test_file_check_refuses_folders_that_must_not_be_served(name, tiny_model_dir, tmp_path, monkeypatch):
    """check_model_folder reads config.json and the safetensors header only: it refuses these before any
    model is built (10^6 layers would take all the memory) and before any code could run."""
    prompts = never_prompt(monkeypatch)
    folder, message = unservable(name, tiny_model_dir, tmp_path)
    with pytest.raises(ModelLoadError, match=re.escape(message)) as refused:
        check_model_folder(folder)
    assert "\n" not in str(refused.value)
    assert prompts == [] and not (folder / "MARKER").exists()


@pytest.mark.parametrize("name", sorted(set(UNSERVABLE) - {"huge-depth"} - FOUND_BY_RUNNING))
def test_predictor_and_cli_refuse_folders_that_must_not_be_served(name, tiny_model_dir, tmp_path, monkeypatch, capsys):
    from inference import predict as cli

    prompts = never_prompt(monkeypatch)
    folder, message = unservable(name, tiny_model_dir, tmp_path)
    with pytest.raises(ModelLoadError, match=re.escape(message)):
        Predictor(folder)
    assert cli.main(["a fine film", "--model", str(folder)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert prompts == [] and not (folder / "MARKER").exists(), "the folder's own code ran"


def test_a_sound_folder_passes_every_check(tiny_model_dir):
    assert check_model_folder(tiny_model_dir) == tiny_model_dir
    assert Predictor(tiny_model_dir).labels == ["negative", "positive"]


@pytest.mark.parametrize(
    "name",
    ["no-classifier", "all-nan", "id2label-gap", "foreign-code", "huge-depth", "no-cls-token", *FOUND_BY_RUNNING],
)
def test_service_refuses_to_start_on_folders_that_must_not_be_served(name, tiny_model_dir, tmp_path):
    """`bentoml serve` exits 2 with one line naming the problem (it once served such folders: the
    server is stopped, workers included, if it starts at all)."""
    folder, message = unservable(name, tiny_model_dir, tmp_path)
    assert_refuses_to_start(server_env(tmp_path / "home", GAZE_MODEL=folder), tmp_path / "serve.log", message)
    assert not (folder / "MARKER").exists()
