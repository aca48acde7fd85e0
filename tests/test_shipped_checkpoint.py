"""The shipped folders: the classifier checkpoints/gaze-sst2, the word-vector encoder checkpoints/gaze-imdb-vectors
(both committed) and the default start checkpoints/gaze-base (built from the pinned package). They load, fit the
size budget, carry the project's code, and their model cards tell the truth."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import require_shared_data

from inference.predictor import DEFAULT_MODEL, Predictor
from training.start import GAZE_BASE, GAZE_IMDB_VECTORS
from training.train import TrainArgs

MAX_FILE_BYTES = 50 * 1000 * 1000  # a committed folder: float16 weights of a 6-layer, 384-wide model are 45 MB
COMMITTED = [DEFAULT_MODEL, GAZE_IMDB_VECTORS]
SHIPPED = [*COMMITTED, GAZE_BASE]
ROOT = Path(__file__).resolve().parents[1]


def card_metadata(folder: Path) -> dict:
    text = (folder / "README.md").read_text(encoding="utf-8")
    _, front_matter, _ = text.split("---\n", 2)
    return yaml.safe_load(front_matter)


def stated_dev_accuracy(folder: Path) -> float:
    (entry,) = card_metadata(folder)["model-index"]
    (validation,) = [r for r in entry["results"] if r["dataset"]["split"] == "validation"]
    return next(m["value"] for m in validation["metrics"] if m["type"] == "accuracy")


@pytest.mark.parametrize("folder", COMMITTED, ids=lambda folder: folder.name)
def test_weights_fit_the_size_budget(folder):
    assert (folder / "model.safetensors").stat().st_size <= MAX_FILE_BYTES


def dev_rows() -> list[dict]:
    dev = require_shared_data("sst2", "dev.tsv")
    with dev.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    assert len(rows) == 872
    return rows


def test_dev_accuracy_matches_the_model_card():
    """SST-2 GLUE dev (872 sentences), through the same prediction core the service uses."""
    rows = dev_rows()
    predictor = Predictor(DEFAULT_MODEL)
    predictions = predictor.predict([row["sentence"] for row in rows], attention="none")
    id2label = predictor.model.config.id2label
    correct = sum(p["label"] == id2label[int(row["label"])] for p, row in zip(predictions, rows, strict=True))
    accuracy = correct / len(rows)
    stated = stated_dev_accuracy(DEFAULT_MODEL)
    print(f"dev accuracy {accuracy:.4f}, model card states {stated:.4f}")
    assert accuracy >= stated - 0.005


def test_bf16_gives_the_fp32_labels_on_dev():
    """GAZE_PRECISION=bf16 is offered because it does not change answers: at most 2 of 872 labels may differ."""
    texts = [row["sentence"] for row in dev_rows()]
    fp32 = Predictor(DEFAULT_MODEL).predict(texts, attention="none")
    bf16 = Predictor(DEFAULT_MODEL, precision="bf16").predict(texts, attention="none")
    differ = sum(a["label"] != b["label"] for a, b in zip(fp32, bf16, strict=True))
    print(f"bf16 vs fp32: {differ} of {len(texts)} labels differ")
    assert differ <= 2


@pytest.mark.parametrize("folder", SHIPPED, ids=lambda folder: folder.name)
def test_the_shipped_code_is_the_projects(folder):
    """The remote code users run with trust_remote_code is the code the tests check."""
    for name in ("configuration_gaze.py", "modeling_gaze.py"):
        assert (folder / name).read_text() == (ROOT / "model" / name).read_text(), name


def load_encoder_in_a_clean_python(folder: Path, tmp_path: Path) -> list[str]:
    """AutoModel with remote code, in a Python that cannot import this project: its class, layers and output shape."""
    script = (
        "import importlib.util, sys\n"
        "assert importlib.util.find_spec('model') is None\n"
        "from transformers import AutoModel, AutoTokenizer\n"
        "model = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True)\n"
        "inputs = AutoTokenizer.from_pretrained(sys.argv[1])(['a gripping film'], return_tensors='pt')\n"
        "out = model(**inputs, output_attentions=True)\n"
        "print(type(model).__name__, len(out.attentions), tuple(out.last_hidden_state.shape))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(folder)],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_gaze_base_is_all_minilm_l6_v2_and_the_default_start(tmp_path):
    """A bare 6-layer encoder that loads anywhere; its card names the published weights it holds."""
    assert load_encoder_in_a_clean_python(GAZE_BASE, tmp_path)[-5:-2] == ["GazeModel", "6", "(1,"]
    metadata = card_metadata(GAZE_BASE)
    assert metadata["pipeline_tag"] == "feature-extraction" and metadata["license"] == "apache-2.0"
    assert metadata["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    config = json.loads((GAZE_BASE / "config.json").read_text())
    assert config["architectures"] == ["GazeModel"] and config["norm_placement"] == "post"
    assert TrainArgs().init_from == str(GAZE_BASE)


def test_gaze_imdb_vectors_is_an_encoder_that_saw_no_labels(tmp_path):
    """The start for users who want no outside weights: its card names unlabeled IMDB text only."""
    assert load_encoder_in_a_clean_python(GAZE_IMDB_VECTORS, tmp_path)[-5:-3] == ["GazeModel", "4"]
    metadata = card_metadata(GAZE_IMDB_VECTORS)
    assert metadata["pipeline_tag"] == "feature-extraction" and metadata["datasets"] == ["stanfordnlp/imdb"]
    assert "license" not in metadata and "base_model" not in metadata


def test_loads_with_remote_code_in_a_clean_python(tmp_path):
    """Users `from_pretrained` the folder with trust_remote_code in a Python without this project."""
    script = (
        "import importlib.util, json, sys\n"
        "assert importlib.util.find_spec('model') is None\n"
        "from transformers import pipeline\n"
        "classify = pipeline('text-classification', model=sys.argv[1], trust_remote_code=True)\n"
        "print(json.dumps(classify(['a gripping , funny and moving film .', 'a dull , lifeless mess .'])))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(DEFAULT_MODEL)],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    positive, negative = json.loads(result.stdout.strip().splitlines()[-1])
    assert (positive["label"], negative["label"]) == ("positive", "negative")


@pytest.mark.parametrize("folder", SHIPPED, ids=lambda folder: folder.name)
def test_each_card_is_titled_with_its_folders_name(folder):
    """Not the name of the staging folder it was written in."""
    text = (folder / "README.md").read_text(encoding="utf-8")
    assert f"\n# {folder.name}\n" in text
    assert all(entry["name"] == folder.name for entry in card_metadata(folder).get("model-index", []))
