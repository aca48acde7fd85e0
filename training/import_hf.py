"""Import a published BERT, DistilBERT or RoBERTa checkpoint into Gaze's own modules, exactly.

    python -m training.import_hf SRC OUT [--revision REV]

SRC is a local folder or a Hugging Face hub id (downloaded: config, safetensors weights and
tokenizer files only, never code). A bare encoder (`BertModel`, `*ForMaskedLM`, ...) becomes a
`GazeModel`; a `*ForSequenceClassification` becomes a `GazeForSequenceClassification` that keeps
its head and `id2label`. Every weight is mapped key by key with its shape checked, as nanoGPT's
`GPT.from_pretrained` does for GPT-2; a weight nobody maps, or a variant Gaze does not compute the
same way (another activation, relative positions), stops the import with one line. The source
tokenizer is kept as it is, so token ids and offsets are the original's.
"""

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from tokenizers import Tokenizer
from transformers import AutoTokenizer

from model import GazeConfig, GazeForSequenceClassification, GazeModel
from model.card import write_model_card
from model.folder import one_line
from model.tokenization import GAZE_TOKENS, ROLES, named_special_tokens, wrap
from training.checkpoints import staged
from training.config import RunError

HUB_FILES = [
    *("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"),
    *("vocab.txt", "vocab.json", "merges.txt"),  # older checkpoints have no tokenizer.json: transformers builds it
]
HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")
# What each family's tokenizer calls its special tokens when its files do not say.
DEFAULT_TOKENS = {
    "bert": GAZE_TOKENS,
    "distilbert": GAZE_TOKENS,
    "roberta": dict(zip(ROLES, ("<pad>", "<unk>", "<s>", "</s>", "<mask>"), strict=True)),
}


@dataclass(frozen=True)
class Family:
    """How one architecture family names its weights: (source pattern, Gaze name) pairs, per layer `{i}`."""

    prefix: str  # what a task model puts before the encoder's keys
    encoder: tuple[tuple[str, str], ...]
    head: tuple[tuple[str, str], ...]  # *ForSequenceClassification only
    dropped: tuple[str, ...]  # source keys that have no Gaze counterpart and change no output of the import


BERT_LAYER = (
    ("encoder.layer.{i}.attention.self.query", "layers.{i}.attention.query"),
    ("encoder.layer.{i}.attention.self.key", "layers.{i}.attention.key"),
    ("encoder.layer.{i}.attention.self.value", "layers.{i}.attention.value"),
    ("encoder.layer.{i}.attention.output.dense", "layers.{i}.attention.output"),
    ("encoder.layer.{i}.attention.output.LayerNorm", "layers.{i}.attention_norm"),
    ("encoder.layer.{i}.intermediate.dense", "layers.{i}.ffn.up"),
    ("encoder.layer.{i}.output.dense", "layers.{i}.ffn.down"),
    ("encoder.layer.{i}.output.LayerNorm", "layers.{i}.ffn_norm"),
)
BERT_EMBEDDINGS = tuple(
    (f"embeddings.{name}", f"embeddings.{name}")
    for name in ("word_embeddings", "position_embeddings", "token_type_embeddings", "LayerNorm")
)
# The pooler, masked-LM and next-sentence heads are pretraining heads: a bare encoder does not use them.
BERT_DROPPED = ("embeddings.position_ids", "embeddings.token_type_ids", "pooler.", "cls.", "lm_head.")
FAMILIES = {
    "bert": Family(
        "bert.",
        BERT_EMBEDDINGS + BERT_LAYER,
        (("pooler.dense", "pre_classifier"), ("classifier", "classifier")),
        BERT_DROPPED,
    ),
    "roberta": Family(
        "roberta.",
        BERT_EMBEDDINGS + BERT_LAYER,
        (("classifier.dense", "pre_classifier"), ("classifier.out_proj", "classifier")),
        BERT_DROPPED,
    ),
    "distilbert": Family(
        "distilbert.",
        (
            ("embeddings.word_embeddings", "embeddings.word_embeddings"),
            ("embeddings.position_embeddings", "embeddings.position_embeddings"),
            ("embeddings.LayerNorm", "embeddings.LayerNorm"),
            ("transformer.layer.{i}.attention.q_lin", "layers.{i}.attention.query"),
            ("transformer.layer.{i}.attention.k_lin", "layers.{i}.attention.key"),
            ("transformer.layer.{i}.attention.v_lin", "layers.{i}.attention.value"),
            ("transformer.layer.{i}.attention.out_lin", "layers.{i}.attention.output"),
            ("transformer.layer.{i}.sa_layer_norm", "layers.{i}.attention_norm"),
            ("transformer.layer.{i}.ffn.lin1", "layers.{i}.ffn.up"),
            ("transformer.layer.{i}.ffn.lin2", "layers.{i}.ffn.down"),
            ("transformer.layer.{i}.output_layer_norm", "layers.{i}.ffn_norm"),
        ),
        (("pre_classifier", "pre_classifier"), ("classifier", "classifier")),
        ("embeddings.position_ids", "vocab_transform.", "vocab_layer_norm.", "vocab_projector."),
    ),
}
NAMES = {"bert": "BERT", "roberta": "RoBERTa", "distilbert": "DistilBERT"}


def source_folder(src: str, revision: str | None = None) -> Path:
    """A local folder as it is; a hub id is downloaded (weights, config and tokenizer files only)."""
    if Path(src).is_dir():
        return Path(src)
    if not HUB_ID.match(src) or Path(src).exists():
        raise RunError(f"{src}: no such folder, and not a hub id (owner/name)")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(src, revision=revision, allow_patterns=HUB_FILES))
    except Exception as error:  # offline, a private or missing repository, a bad revision
        raise RunError(f"{src}: cannot download it from the hub ({one_line(error)})") from None


def gaze_config(source: dict, tokens: dict[str, int], where: str) -> GazeConfig:
    """The GazeConfig that computes what `source` (a BERT-family config.json) computes, or a one-line refusal."""
    family = source["model_type"]
    distil = family == "distilbert"
    activation = source.get("activation" if distil else "hidden_act")
    if activation != "gelu":
        raise RunError(f"{where}: activation {activation!r:.40} is not Gaze's (exact) gelu")
    positions = source.get("position_embedding_type", "absolute")
    if positions != "absolute":
        raise RunError(f"{where}: position_embedding_type {positions!r:.40}; Gaze has absolute positions only")
    if distil and source.get("sinusoidal_pos_embds"):
        raise RunError(f"{where}: sinusoidal position embeddings; Gaze learns its positions")
    try:
        settings = _settings(source, tokens, family)
    except KeyError as error:
        raise RunError(f"{where}: config.json lacks {error}") from None
    labels = source.get("id2label")
    if is_classifier(source) and labels:
        settings["id2label"] = {int(i): name for i, name in labels.items()}
        settings["label2id"] = {name: int(i) for i, name in labels.items()}
    if source.get("problem_type"):
        settings["problem_type"] = source["problem_type"]
    try:
        return GazeConfig(**settings)
    except Exception as error:
        raise RunError(f"{where}: its sizes do not make a Gaze model ({one_line(error)})") from None


def _settings(source: dict, tokens: dict[str, int], family: str) -> dict:
    """GazeConfig keyword arguments from a config.json (DistilBERT names its sizes its own way)."""
    distil = family == "distilbert"
    sizes = ("dim", "n_layers", "n_heads", "hidden_dim") if distil else None
    names = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
    values = {name: source[key] for name, key in zip(names, sizes or names, strict=True)}
    dropout = ("dropout", "attention_dropout") if distil else ("hidden_dropout_prob", "attention_probs_dropout_prob")
    pad = source.get("pad_token_id", tokens["pad"])
    return {
        **values,
        "vocab_size": source["vocab_size"],
        "max_position_embeddings": source["max_position_embeddings"],
        "hidden_dropout_prob": source[dropout[0]],
        "attention_probs_dropout_prob": source[dropout[1]],
        "classifier_dropout": source.get("seq_classif_dropout" if distil else "classifier_dropout"),
        "layer_norm_eps": 1e-12 if distil else source["layer_norm_eps"],  # DistilBERT's is fixed in its code
        "initializer_range": source.get("initializer_range", 0.02),
        "norm_placement": "post",
        "type_vocab_size": 0 if distil else source.get("type_vocab_size", 2),
        "position_offset": pad + 1 if family == "roberta" else 0,  # RoBERTa counts positions from padding_idx + 1
        "classifier_activation": "relu" if distil else "tanh",
        **{f"{name}_token_id": tokens[name] for name in ROLES},
        "pad_token_id": pad,
    }


def is_classifier(source: dict) -> bool:
    return any(name.endswith("ForSequenceClassification") for name in source.get("architectures") or [])


def map_weights(
    weights: dict[str, torch.Tensor], family: Family, num_layers: int, classifier: bool, where: str
) -> dict[str, torch.Tensor]:
    """Gaze's state dict from the source's, key by key; a source weight that is neither mapped nor a
    known pretraining-only weight is refused."""
    bare = {key.removeprefix(family.prefix): value for key, value in weights.items()}
    names = {}
    for source_name, gaze_name in family.encoder:
        for i in range(num_layers) if "{i}" in source_name else [0]:
            names[source_name.format(i=i)] = ("gaze." if classifier else "") + gaze_name.format(i=i)
    names |= dict(family.head) if classifier else {}
    state, used = {}, set()
    for source_name, gaze_name in names.items():
        for suffix in (".weight", ".bias"):
            if source_name + suffix in bare:
                state[gaze_name + suffix] = bare[source_name + suffix]
                used.add(source_name + suffix)
    leftover = sorted(k for k in bare if k not in used and not k.startswith(family.dropped))
    if leftover:
        raise RunError(f"{where}: model.safetensors has weights Gaze does not know: {', '.join(leftover[:3])}")
    return state


def load_tokenizer_and_ids(folder: Path, family: str) -> tuple[Tokenizer, dict[str, str], dict[str, int]]:
    """The folder's tokenizer.json (else the one transformers builds from its vocab.txt or vocab.json and
    merges.txt), unchanged but for any fixed truncation or padding (Gaze sets its own); the special tokens
    its files name (else the family's usual ones) and their ids."""
    named = dict(DEFAULT_TOKENS[family])
    try:
        if (folder / "tokenizer.json").is_file():
            tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        else:  # transformers' own BERT and RoBERTa tokenizer classes; never code from the folder
            built = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
            tokenizer = Tokenizer.from_str(built.backend_tokenizer.to_str())
            named |= {role: getattr(built, f"{role}_token") for role in ROLES if getattr(built, f"{role}_token")}
    except Exception as error:
        raise RunError(f"{folder}: no readable tokenizer ({one_line(error)})") from None
    tokenizer.no_truncation()
    tokenizer.no_padding()
    named = named_special_tokens(folder, named)
    ids = {role: tokenizer.token_to_id(named[role]) for role in ROLES}
    missing = [role for role, i in ids.items() if i is None]
    if missing:
        raise RunError(f"{folder}: the tokenizer names no {', '.join(missing)} token in its vocabulary")
    return tokenizer, named, ids


def convert(folder: Path, where: str | None = None) -> tuple[GazeModel | GazeForSequenceClassification, object]:
    """(model, tokenizer) in Gaze's classes from a BERT-family folder, weights as the source stored them."""
    where = where or str(folder)
    try:
        source = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise RunError(f"{where}: no readable config.json ({error})") from None
    if not isinstance(source, dict):
        raise RunError(f"{where}: config.json is not a JSON object")
    family = source.get("model_type")
    if family not in FAMILIES:
        raise RunError(
            f"{where}: model type {family!r:.80} cannot be imported; Gaze imports {', '.join(NAMES.values())}"
        )
    backend, named, tokens = load_tokenizer_and_ids(folder, family)
    config = gaze_config(source, tokens, where)
    positions = config.max_position_embeddings - config.position_offset
    tokenizer = wrap(backend, positions, **named, token_types=config.type_vocab_size > 1)
    classifier = is_classifier(source)
    if classifier and not source.get("id2label"):
        raise RunError(f"{where}: a sequence classifier without id2label")
    try:
        weights = load_file(folder / "model.safetensors")
    except (OSError, SafetensorError) as error:
        raise RunError(f"{where}: no readable model.safetensors ({error}); pickled weights are not read") from None
    model_class = GazeForSequenceClassification if classifier else GazeModel
    with torch.device("meta"):
        model = model_class(config)
    state = map_weights(weights, FAMILIES[family], config.num_hidden_layers, classifier, where)
    expected = model.state_dict()
    missing = sorted(k for k in expected if k not in state)
    if missing:
        raise RunError(f"{where}: model.safetensors lacks {', '.join(missing[:3])} (as Gaze names them)")
    shapes = {k: (list(v.shape), list(expected[k].shape)) for k, v in state.items()}
    wrong = [f"{k} {found} (config: {wanted})" for k, (found, wanted) in shapes.items() if found != wanted]
    if wrong:
        raise RunError(f"{where}: weights of another shape than config.json implies: {', '.join(wrong[:3])}")
    model.load_state_dict(state, strict=True, assign=True)
    return model.float().eval(), tokenizer


def describe(source_name: str, folder: Path) -> str:
    """The card's account of where the weights came from."""
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    kind = NAMES[config["model_type"]]
    return (
        f"Imported with `python -m training.import_hf` from `{source_name}` ({kind}, "
        f"`{(config.get('architectures') or ['?'])[0]}`): every weight mapped key by key into Gaze's modules "
        f"(`norm_placement: post`), the tokenizer kept as it is. Gaze computes the same logits and attention "
        "maps as the original (tests/test_import_hf.py)."
    )


def import_checkpoint(
    src: str,
    target: Path,
    revision: str | None = None,
    *,
    hub_id: str | None = None,
    provenance: str = "",
    license: str | None = None,
) -> Path:
    """Convert `src` (a folder or a hub id) and save it as a Gaze folder at `target`, staged. `hub_id` names
    the hub model a local folder is a copy of; `provenance` (revision, licence, citation) joins the card's
    Source section, which the cards of models trained from the folder repeat."""
    folder = source_folder(src, revision)
    model, tokenizer = convert(folder, src)
    task = "text-classification" if isinstance(model, GazeForSequenceClassification) else "feature-extraction"
    hub_id = hub_id or (None if Path(src).is_dir() else src)
    lineage = {"source": describe(hub_id or src, folder) + (f"\n\n{provenance}" if provenance else "")}
    lineage |= {"base_model": hub_id} if hub_id else {}
    lineage |= {"license": license} if license else {}
    with staged(target) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        write_model_card(staging, model.config, task=task, datasets=[], title=target.name, lineage=lineage)
    return target


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", help="a local folder or a hub id, e.g. distilbert-base-uncased-finetuned-sst-2-english")
    parser.add_argument("out", type=Path, help="the Gaze folder to write (replaced only once complete)")
    parser.add_argument("--revision", help="a hub revision (branch, tag or commit) to download")
    args = parser.parse_args(argv)
    try:
        target = import_checkpoint(args.src, args.out, args.revision)
    except RunError as error:
        sys.exit(f"error: {error}")
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
