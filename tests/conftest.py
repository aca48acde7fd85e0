"""Shared fixtures: small Gaze models built in seconds, without the shipped checkpoint or any data,
and real `bentoml serve` servers of them."""

import contextlib
import os
import subprocess
from pathlib import Path

import httpx
import pytest
import torch

from benchmarks.harness import ROOT, bentoml_serve, free_port, served, server_env, stop
from model import GazeConfig, GazeForSequenceClassification
from model.tokenization import train_tokenizer

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# A tiny corpus that exercises the normalizer: PTB-style and raw clitics, HTML breaks, accents.
CORPUS = [
    "a gripping , funny and moving film .",
    "it 's a dull , lifeless mess that does n't work .",
    "The acting wasn't great<br /><br />but the story is wonderful.",
    "one of the best movies of the year , and it ca n't be missed .",
    "I didn't like the café scene; the ending is terrible!",
    "a tedious , boring two hours .",
] * 20


def tiny_config(**overrides) -> GazeConfig:
    values = dict(
        vocab_size=200,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        id2label={0: "negative", 1: "positive"},
        label2id={"negative": 0, "positive": 1},
    )
    values.update(overrides)
    return GazeConfig(**values)


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return train_tokenizer(CORPUS, vocab_size=200, model_max_length=64, show_progress=False)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    """A saved, randomly initialised classifier folder with its tokenizer (2 layers, hidden 32)."""
    folder = tmp_path_factory.mktemp("tiny-gaze")
    torch.manual_seed(0)
    model = GazeForSequenceClassification(tiny_config(vocab_size=len(tiny_tokenizer)))
    model.save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def wide_model_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    """The tiny classifier with weights drawn 10 times wider (initializer_range 0.2), so that its output
    depends on its input: with the usual 0.02 every token attribution rounds to about 0, and a test that
    compares them could not fail. A module serves it by overriding `tiny_model_dir` with it."""
    folder = tmp_path_factory.mktemp("wide-gaze")
    torch.manual_seed(0)
    config = tiny_config(vocab_size=len(tiny_tokenizer), initializer_range=0.2)
    GazeForSequenceClassification(config).save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    return folder


def require_shared_data(*relative: str) -> Path:
    """The path of a file under ../shared/data; a test skips without it, but fails in CI (CI=true)."""
    path = SHARED_DATA.joinpath(*relative)
    if not path.exists():
        message = f"data file {path} is missing"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def start_server(tiny_model_dir, tmp_path_factory):
    """`start_server(**GAZE_settings)` runs a real `bentoml serve` of the tiny model (or of GAZE_MODEL) and returns
    its URL.

    Every server it started stops when the test module is done.
    """
    with contextlib.ExitStack() as servers:

        def start(**settings: str | int) -> str:
            home = tmp_path_factory.mktemp("bentoml-home")
            env = server_env(home, **({"GAZE_MODEL": tiny_model_dir} | settings))
            return servers.enter_context(served(env=env, log_path=home / "server.log"))

        yield start


@pytest.fixture(scope="module")
def server_settings() -> dict[str, str | int]:
    """The GAZE_* settings of the module's `server`: none; a test module overrides this fixture to set some."""
    return {}


@pytest.fixture(scope="module")
def server(start_server, server_settings) -> str:
    """The base URL of a real `bentoml serve` of the tiny model, one per test module."""
    return start_server(**server_settings)


@pytest.fixture(scope="module")
def client(server):
    """An HTTP client for `server`, with relative URLs ("/classify")."""
    with httpx.Client(base_url=server, timeout=120) as client:
        yield client


def expected_shape(mode: str, tokens: int, layers: int = 2, heads: int = 4) -> list[int]:
    """The contract's shape of a text's attention in `mode` (by default for the tiny model)."""
    return {
        "cls": [layers, heads, tokens],
        "last": [heads, tokens, tokens],
        "all": [layers, heads, tokens, tokens],
        "rollout": [tokens],
    }[mode]


def assert_refuses_to_start(env: dict[str, str], log: Path, message: str) -> None:
    """`bentoml serve` with `env` exits 2 with exactly one `gaze: cannot start:` line holding `message`, and
    no traceback (the server is stopped, workers included, if it starts at all)."""
    with open(log, "wb") as output:
        process = subprocess.Popen(
            bentoml_serve(free_port()),
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        returncode = process.wait(timeout=180)
    except subprocess.TimeoutExpired:
        returncode = None
    finally:
        stop(process)
    text = log.read_text(errors="replace")
    refusals = [line for line in text.splitlines() if line.startswith("gaze: cannot start:")]
    assert returncode == 2, f"exit status {returncode} (None: it started and served)\n{text[-3000:]}"
    assert len(refusals) == 1 and message in refusals[0], text[-3000:]
    assert "Traceback" not in text
