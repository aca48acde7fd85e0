"""training.import_hf: BERT, DistilBERT and RoBERTa weights run in Gaze's modules with the original's outputs.

Each family's source is a randomly initialised `transformers` model built here from a small config (its
weights spread wide, so logits and attention maps differ from token to token), saved with its own
tokenizer; the hub path is the same code after a download, which tests do not make.
"""

import json
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import CORPUS
from test_training import NEGATIVE, POSITIVE, launch, ok, weights
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertModel,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    DistilBertModel,
    PreTrainedTokenizerFast,
    RobertaConfig,
    RobertaForSequenceClassification,
    RobertaModel,
)

from inference.contract import ContractError
from inference.predictor import Predictor
from model import GazeForSequenceClassification, GazeModel
from training import gaze_base
from training.config import RunError
from training.import_hf import convert, import_checkpoint

ROOT = gaze_base.GAZE_BASE.parents[1]
TEXTS = ["I didn't like the Café scene; the ending is terrible!", "a gripping , funny film .", "boring"]
SIZES = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 48}
LABELS = {"id2label": {0: "bad", 1: "fine", 2: "good"}, "label2id": {"bad": 0, "fine": 1, "good": 2}}
BERT_TOKENS = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}
ROBERTA_TOKENS = {"cls": "<s>", "pad": "<pad>", "sep": "</s>", "unk": "<unk>", "mask": "<mask>"}  # ids 0-4, its order
FAMILIES = {  # config, bare class, classifier class, special tokens
    "bert": (BertConfig, BertModel, BertForSequenceClassification, BERT_TOKENS),
    "distilbert": (DistilBertConfig, DistilBertModel, DistilBertForSequenceClassification, BERT_TOKENS),
    "roberta": (RobertaConfig, RobertaModel, RobertaForSequenceClassification, ROBERTA_TOKENS),
}


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory):
    return tmp_path_factory.mktemp("hf-home")


def source_tokenizer(special: dict[str, str]) -> PreTrainedTokenizerFast:
    """A cased WordPiece tokenizer without Gaze's normaliser: the import must keep it as it is."""
    tokenizer = Tokenizer(models.WordPiece(unk_token=special["unk"]))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=120, special_tokens=list(special.values()))
    tokenizer.train_from_iterator(CORPUS, trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{special['cls']} $A {special['sep']}",
        pair=f"{special['cls']} $A {special['sep']} $B:1 {special['sep']}:1",  # BERT's
        special_tokens=[(special[role], tokenizer.token_to_id(special[role])) for role in ("cls", "sep")],
    )
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, **{f"{role}_token": t for role, t in special.items()})


def build_source(tmp_path, family: str, classifier: bool):
    """A saved random `transformers` model of `family` with its tokenizer; returns (folder, model, tokenizer)."""
    config_class, bare_class, classifier_class, special = FAMILIES[family]
    tokenizer = source_tokenizer(special)
    if family == "distilbert":
        sizes = {"dim": 32, "n_layers": 2, "n_heads": 4, "hidden_dim": 48}
    else:
        sizes = SIZES | {"type_vocab_size": 2 if family == "bert" else 1}
    config = config_class(
        vocab_size=len(tokenizer),
        max_position_embeddings=40,
        pad_token_id=tokenizer.pad_token_id,
        **sizes,
        **(LABELS if classifier else {}),
    )
    torch.manual_seed(0)
    model = (classifier_class if classifier else bare_class)(config)
    with torch.no_grad():  # wide weights, non-trivial LayerNorms: outputs that depend on every weight
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.3)
    folder = tmp_path / f"{family}-{'classifier' if classifier else 'encoder'}"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder, model.eval(), tokenizer


def reference(model, tokenizer, texts=TEXTS):
    inputs = tokenizer(texts, padding=True, return_tensors="pt", return_token_type_ids=False)
    model.set_attn_implementation("eager")
    with torch.no_grad():
        output = model(**inputs, output_attentions=True)
    return inputs, output


def assert_same_outputs(gaze_output, source_output, mask: torch.Tensor, classifier: bool) -> None:
    if classifier:
        assert source_output.logits.std() > 0.1  # a comparison of near-zero logits could not fail
        torch.testing.assert_close(gaze_output.logits, source_output.logits, atol=1e-5, rtol=0)
    else:
        real = mask.bool()
        torch.testing.assert_close(
            gaze_output.last_hidden_state[real], source_output.last_hidden_state[real], atol=1e-5, rtol=0
        )
    assert len(gaze_output.attentions) == len(source_output.attentions) > 1
    for ours, theirs in zip(gaze_output.attentions, source_output.attentions, strict=True):
        for row, length in enumerate(mask.sum(1).tolist()):  # real tokens only: padded rows are never read
            torch.testing.assert_close(
                ours[row, :, :length, :length], theirs[row, :, :length, :length], atol=1e-5, rtol=0
            )
            assert ours[row, :, :, length:].abs().sum() == 0  # padded keys get exactly 0


@pytest.mark.parametrize("classifier", [False, True], ids=["encoder", "classifier"])
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_imports_give_the_originals_logits_and_attention_maps(tmp_path, family, classifier):
    """Within 1e-5 on both attention paths, after a save_pretrained round trip, with padding in the batch."""
    source, model, tokenizer = build_source(tmp_path, family, classifier)
    target = import_checkpoint(str(source), tmp_path / "gaze")
    inputs, expected = reference(model, tokenizer)
    assert inputs["attention_mask"].sum(1).unique().numel() == len(TEXTS)  # every row padded differently
    gaze_class = GazeForSequenceClassification if classifier else GazeModel
    for implementation in ("eager", "sdpa"):
        gaze = gaze_class.from_pretrained(target, attn_implementation=implementation).eval()
        with torch.no_grad():
            output = gaze(inputs["input_ids"], inputs["attention_mask"], output_attentions=True)
            fused = gaze(inputs["input_ids"], inputs["attention_mask"])  # sdpa: no maps asked, the fused kernel
        assert_same_outputs(output, expected, inputs["attention_mask"], classifier)
        if classifier:
            torch.testing.assert_close(fused.logits, expected.logits, atol=1e-5, rtol=0)
    config = json.loads((target / "config.json").read_text())
    assert config["norm_placement"] == "post" and config["model_type"] == "gaze"
    if classifier:
        assert config["id2label"] == {"0": "bad", "1": "fine", "2": "good"}
    # The source tokenizer, unchanged: cased, no "n't" split, the same ids and special tokens.
    imported = PreTrainedTokenizerFast.from_pretrained(target)
    assert imported(TEXTS)["input_ids"] == tokenizer(TEXTS)["input_ids"]
    assert imported.pad_token == tokenizer.pad_token and imported.cls_token == tokenizer.cls_token


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_an_imported_classifier_is_served_by_the_predictor_with_the_originals_scores(tmp_path, family):
    source, model, tokenizer = build_source(tmp_path, family, classifier=True)
    target = import_checkpoint(str(source), tmp_path / "gaze")
    _, expected = reference(model, tokenizer)
    predictions = Predictor(target).predict(TEXTS, attention="all")
    pieces = []
    for prediction, probabilities, text in zip(predictions, expected.logits.softmax(-1), TEXTS, strict=True):
        assert list(prediction["scores"]) == ["bad", "fine", "good"]
        assert list(prediction["scores"].values()) == pytest.approx(probabilities.tolist(), abs=1e-5)
        # Offsets point into the text as typed, piece by piece: the cased source tokenizer, not Gaze's normaliser.
        pieces += [
            (token.removeprefix("##"), text[span[0] : span[1]])
            for token, span in zip(prediction["tokens"], prediction["offsets"], strict=True)
            if span is not None and token != tokenizer.unk_token
        ]
        assert prediction["attention"]["shape"][:2] == [2, 4]
    assert len(pieces) > 10 and all(token == typed for token, typed in pieces), pieces
    assert ("I", "I") in pieces  # cased, as the source tokenizer is


PAIRS = [("a gripping , funny film .", "boring"), ("boring", "a gripping , funny film ."), ("I didn't like it", "it")]


def test_text_pairs_get_bert_token_types_as_in_transformers(tmp_path):
    """A pair is [CLS] a [SEP] b [SEP] with b's tokens of type 1: the imported BERT gives the original's logits
    through the model and through the Predictor, which differ from the logits of the same tokens all of type 0."""
    source, model, tokenizer = build_source(tmp_path, "bert", classifier=True)
    target = import_checkpoint(str(source), tmp_path / "gaze")
    firsts, seconds = zip(*PAIRS, strict=True)
    inputs = tokenizer(list(firsts), list(seconds), padding=True, return_tensors="pt", return_token_type_ids=True)
    assert inputs["token_type_ids"].any()
    with torch.no_grad():
        expected = model(**inputs).logits
        untyped = model(inputs["input_ids"], inputs["attention_mask"]).logits
    assert (expected - untyped).abs().max() > 0.1  # types matter here: a test that ignored them would fail
    gaze = GazeForSequenceClassification.from_pretrained(target).eval()
    imported = PreTrainedTokenizerFast.from_pretrained(target)
    assert imported(list(firsts), list(seconds), padding=True, return_tensors="pt").keys() == inputs.keys()
    with torch.no_grad():
        torch.testing.assert_close(gaze(**inputs).logits, expected, atol=1e-5, rtol=0)
    predictions = Predictor(target).predict([*PAIRS, TEXTS[0]], attention="cls", attribution="gradient_x_input")
    for prediction, probabilities in zip(predictions, expected.softmax(-1), strict=False):
        assert list(prediction["scores"].values()) == pytest.approx(probabilities.tolist(), abs=1e-5)
    single = predictions[-1]  # a single text beside pairs in one batch: still the original's scores
    _, alone = reference(model, tokenizer, TEXTS[:1])
    assert list(single["scores"].values()) == pytest.approx(alone.logits.softmax(-1)[0].tolist(), abs=1e-5)
    # Each text of a pair has its own words and offsets into itself.
    first = predictions[0]
    (boring,) = [word for word in first["words"] if first["tokens"][word["tokens"][0]] == "bor"]
    assert (boring["start"], boring["end"]) == (0, 6) and first["tokens"][boring["tokens"][0] - 1] == "[SEP]"
    assert [word["start"] for word in first["words"]] == [0, 2, 11, 13, 19, 24, 0]


def test_a_model_without_pair_types_refuses_pairs_in_one_line(tmp_path):
    """RoBERTa's single token type: a tokenizer that gives a pair's second text type 1 cannot be served pairs."""
    source, _, _ = build_source(tmp_path, "roberta", classifier=True)
    predictor = Predictor(import_checkpoint(str(source), tmp_path / "gaze"))
    with pytest.raises(ContractError, match="token type 1, which the model .type_vocab_size 1. does not have"):
        predictor.predict([PAIRS[0]])
    assert predictor.predict(TEXTS[:1])[0]["label"] in {"bad", "fine", "good"}


def test_the_real_all_minilm_l6_v2_matches_transformers_bert(tmp_path):
    """The pinned package's weights (sha256-checked) through Gaze and through transformers' own BertModel."""
    folder = gaze_base.package_files()
    gaze, tokenizer = convert(folder)
    bert = BertModel.from_pretrained(folder, attn_implementation="eager").eval()
    inputs = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        ours = gaze(inputs["input_ids"], inputs["attention_mask"], output_attentions=True)
        theirs = bert(**inputs, output_attentions=True)
    assert_same_outputs(ours, theirs, inputs["attention_mask"], classifier=False)
    assert len(ours.attentions) == 6 and ours.attentions[0].shape[1] == 12


def test_a_changed_byte_in_the_package_stops_the_build(tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(gaze_base.package_files(), copy)
    assert gaze_base.checked(copy) == copy
    vocab = (copy / "vocab.txt").read_bytes()
    (copy / "vocab.txt").write_bytes(vocab.replace(b"the\n", b"thE\n", 1))
    with pytest.raises(RunError, match=r"vocab\.txt: sha256 [0-9a-f]{64} is not revision 1110a243fdf4's"):
        gaze_base.checked(copy)


def test_gaze_base_card_names_source_revision_licence_and_citation():
    card = (gaze_base.GAZE_BASE / "README.md").read_text(encoding="utf-8")
    for fact in ("license: apache-2.0", "base_model: sentence-transformers/all-MiniLM-L6-v2", gaze_base.REVISION):
        assert fact in card
    assert "Reimers and Iryna Gurevych. 2019. Sentence-BERT" in card and "2020. MiniLM: Deep Self-Attention" in card


def variant(tmp_path, family: str, **changes) -> str:
    folder, _, _ = build_source(tmp_path, family, classifier=False)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | changes))
    return str(folder)


@pytest.mark.parametrize(
    ("family", "changes", "message"),
    [
        ("bert", {"hidden_act": "relu"}, "activation 'relu' is not Gaze's (exact) gelu"),
        ("distilbert", {"activation": "gelu_new"}, "activation 'gelu_new' is not Gaze's (exact) gelu"),
        ("bert", {"position_embedding_type": "relative_key"}, "Gaze has absolute positions only"),
        (
            "bert",
            {"model_type": "gpt2"},
            "model type 'gpt2' cannot be imported; Gaze imports BERT, RoBERTa, DistilBERT",
        ),
    ],
    ids=["activation", "distilbert-activation", "relative-positions", "architecture"],
)
def test_what_gaze_cannot_compute_the_same_is_refused_in_one_line(tmp_path, family, changes, message):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "training.import_hf", variant(tmp_path, family, **changes), str(out)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_unknown_weights_are_refused_not_dropped(tmp_path):
    from safetensors.torch import load_file, save_file

    folder, _, _ = build_source(tmp_path, "bert", classifier=False)
    weights = load_file(folder / "model.safetensors")
    save_file(weights | {"encoder.layer.0.adapter.weight": torch.zeros(2)}, folder / "model.safetensors")
    with pytest.raises(RunError, match="weights Gaze does not know: encoder.layer.0.adapter.weight"):
        convert(folder)


def test_init_from_takes_a_bert_folder_as_it_is(tmp_path, hf_home):
    """A BERT-family folder is imported on the way in: the classifier starts from exactly its encoder, keeps its
    tokenizer, and its card names where the weights came from."""
    source, _, tokenizer = build_source(tmp_path, "bert", classifier=False)
    train = tmp_path / "train.tsv"
    rows = [f"{text}\t{label}" for label, texts in enumerate((NEGATIVE, POSITIVE)) for text in texts * 4]
    train.write_text("sentence\tlabel\n" + "\n".join(rows) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    args = ["--train-file", str(train), "--init-from", str(source), "--output-dir", str(out), "--max-steps", "2"]
    result = ok(launch(hf_home, *args, "--learning-rate", "0", "--max-seq-length", "32"))
    assert f"Imported {source}" in result.stdout + result.stderr
    encoder, trained = convert(source)[0].state_dict(), weights(out)
    assert len(encoder) > 20 and all(torch.equal(value, trained[f"gaze.{key}"]) for key, value in encoder.items())
    assert PreTrainedTokenizerFast.from_pretrained(out)(TEXTS)["input_ids"] == tokenizer(TEXTS)["input_ids"]
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "## Source" in card and f"Imported with `python -m training.import_hf` from `{source}`" in card


def test_the_default_learning_rate_follows_the_start(tmp_path, tiny_model_dir):
    """1e-4 at gaze-base's width from a published post-norm encoder, as 1/width for others (BERT-base: 5e-5);
    5e-4 from scratch or from a Gaze (pre-norm) folder."""
    from training.train import default_learning_rate

    source, _, _ = build_source(tmp_path, "roberta", classifier=False)
    imported = import_checkpoint(str(source), tmp_path / "gaze")  # hidden size 32
    assert default_learning_rate(str(imported)) == pytest.approx(1e-4 * 384 / 32)
    assert default_learning_rate(str(gaze_base.GAZE_BASE)) == pytest.approx(1e-4)
    assert default_learning_rate(str(tiny_model_dir)) == default_learning_rate(None) == 5e-4


def test_a_folder_with_only_vocab_txt_gets_transformers_bert_tokenizer(tmp_path):
    """Older hub checkpoints have no tokenizer.json (and name no special tokens): transformers' BertTokenizer is
    built from vocab.txt, with BERT's usual special tokens."""
    source, _, tokenizer = build_source(tmp_path, "bert", classifier=True)
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda pair: pair[1])
    (source / "vocab.txt").write_text("".join(f"{token}\n" for token, _ in vocab), encoding="utf-8")
    (source / "tokenizer.json").unlink()
    config = {"tokenizer_class": "BertTokenizer", "do_lower_case": False}
    (source / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    target = import_checkpoint(str(source), tmp_path / "gaze")
    imported = PreTrainedTokenizerFast.from_pretrained(target)
    assert imported(TEXTS)["input_ids"] == tokenizer(TEXTS)["input_ids"]
    assert (imported.cls_token, imported.pad_token_id) == ("[CLS]", tokenizer.pad_token_id)
