"""Build a Bento offline: put the model folder in the BentoML model store, then `bentoml build`.

    python -m service.bento                       # checkpoints/gaze-sst2 (or $GAZE_MODEL)
    python -m service.bento --model path/to/folder
    bentoml serve gaze:latest                     # serves the model the Bento carries

The model is stored as `gaze-sst2:<first 16 hex of the weights' sha256>`, so importing the same
weights twice reuses one entry. The service references that tag at class level (GAZE_MODEL is set
to it for the build), which is what makes the Bento record and carry the model.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from inference.predictor import DEFAULT_MODEL
from model.folder import ModelLoadError, check_model_folder

from .config import BENTO_MODEL_NAME, SOURCE_ROOT

MODEL_FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "README.md",
    "configuration_gaze.py",
    "modeling_gaze.py",
)


def weights_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    with open(folder / "model.safetensors", "rb") as weights:
        for chunk in iter(lambda: weights.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def import_model(folder: str | Path) -> str:
    """Copy a saved Gaze folder into the model store (once per weights); returns its tag."""
    import bentoml
    from bentoml.exceptions import NotFound

    folder = check_model_folder(folder)
    tag = f"{BENTO_MODEL_NAME}:{weights_digest(folder)}"
    try:
        return str(bentoml.models.get(tag).tag)
    except NotFound:
        pass
    with bentoml.models.create(tag, labels={"project": "gaze"}, metadata={"source": str(folder.resolve())}) as ref:
        for name in MODEL_FILES:
            if (folder / name).is_file():
                shutil.copy2(folder / name, Path(ref.path) / name)
    return tag


def build(tag: str) -> str:
    """`bentoml build` with the service bound to `tag`, without network (no image, no lock)."""
    env = {**os.environ, "GAZE_MODEL": tag, "BENTOML_ENABLE_FEATURES": "no_image", "BENTOML_DO_NOT_TRACK": "true"}
    result = subprocess.run(
        [sys.executable, "-m", "bentoml", "build", "--output", "tag", str(SOURCE_ROOT)],
        cwd=SOURCE_ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(f"bentoml build failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result.stdout.strip().splitlines()[-1].removeprefix("__tag__:")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service.bento", description=__doc__.split("\n")[0])
    default = os.environ.get("GAZE_MODEL") or str(DEFAULT_MODEL)
    parser.add_argument("--model", default=default, help="saved Gaze folder (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        tag = import_model(args.model)
    except ModelLoadError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"model: {tag}")
    bento = build(tag)
    print(f"bento: {bento}\nserve it with: bentoml serve {bento}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
