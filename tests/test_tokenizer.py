"""Gaze's WordPiece tokenizer (model/tokenization.py): loading, special tokens, one normalization for
PTB-style SST-2 text and raw review text, robustness to odd characters, outputs and truncation."""

import pytest
import torch
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from model import GazeConfig, GazeForSequenceClassification
from model.tokenization import SPECIAL_TOKENS

# (SST-2 / PTB style, raw text as users and IMDB write it): each pair must give the same tokens.
SAME_TOKENS = [
    ("it does n't work , it 's a mess .", "It doesn't work, it's a mess."),
    ("i ca n't believe it wo n't end", "I can't believe it won't end"),
    ("they 're great and i 'm happy", "They're GREAT and I'm happy"),
    (
        "the acting is n't great but the story is wonderful .",
        "The acting isn't great<br /><br />but the story is wonderful.",
    ),
    ("a funny film . a moving film .", "A funny film.<br/>A moving film.<br>"),
    ("a gripping , funny and moving film", "A   gripping,\tfunny and\nmoving film"),
    ("the cafe scene was naive", "The café scene was naïve"),
    ("uber resume", "Über résumé"),
]

# Characters that must never crash the tokenizer (control, zero-width, bidi, odd code points).
ODD_TEXTS = [
    "",
    " ",
    "\t\n\r",
    "\x00\x01\x02 nul and friends",
    "\x1b[31mred\x1b[0m",
    "\x7f\x80\x9f",
    "zero\u200bwidth\u200cnon\u200djoiner\ufeffbom",
    "\u202eright-to-left\u202c \u2066isolate\u2069",
    "line\u2028separator\u2029paragraph",
    "\u0301 lone combining accent",
    "\ufffd replacement",
    "emoji 😀🤖 and \U0010ffff",
    "\U000e0001 tag character",
    "x" * 500,
    "汉字 and Ελληνικά and العربية",
]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_auto_tokenizer_loads_the_saved_tokenizer(tokenizer, tiny_tokenizer):
    assert isinstance(tokenizer, PreTrainedTokenizerFast)
    assert tokenizer.get_vocab() == tiny_tokenizer.get_vocab()
    text = "It doesn't work, it's a café.<br />"
    assert tokenizer(text)["input_ids"] == tiny_tokenizer(text)["input_ids"]


def test_auto_tokenizer_loads_a_tokenizer_only_folder(tiny_tokenizer, tmp_path):
    tiny_tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded.get_vocab() == tiny_tokenizer.get_vocab()


def test_special_tokens_have_the_ids_the_config_expects(tokenizer):
    assert SPECIAL_TOKENS == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS) == [0, 1, 2, 3, 4]
    ids = (
        tokenizer.pad_token_id,
        tokenizer.unk_token_id,
        tokenizer.cls_token_id,
        tokenizer.sep_token_id,
        tokenizer.mask_token_id,
    )
    assert ids == (0, 1, 2, 3, 4)
    config = GazeConfig()
    assert ids == (
        config.pad_token_id,
        config.unk_token_id,
        config.cls_token_id,
        config.sep_token_id,
        config.mask_token_id,
    )


def test_special_tokens_frame_every_sequence(tokenizer):
    single = tokenizer("a funny film")["input_ids"]
    assert single[0] == 2 and single[-1] == 3
    pair = tokenizer("a funny film", "a dull one")["input_ids"]
    assert pair[0] == 2 and pair.count(3) == 2 and pair[-1] == 3
    assert tokenizer("[MASK] film", add_special_tokens=False)["input_ids"][0] == 4


@pytest.mark.parametrize(("ptb", "raw"), SAME_TOKENS, ids=[raw[:24] for _, raw in SAME_TOKENS])
def test_sst2_style_and_raw_text_give_the_same_tokens(tokenizer, ptb, raw):
    assert tokenizer.tokenize(ptb) == tokenizer.tokenize(raw)
    assert tokenizer(ptb)["input_ids"] == tokenizer(raw)["input_ids"]


def test_normalization_details(tokenizer):
    # Lower-cased, accents stripped, HTML breaks and clitics split the PTB way.
    normalize = tokenizer.backend_tokenizer.normalizer.normalize_str
    assert normalize("Café NAÏVE") == "cafe naive"
    assert normalize("doesn't") == "does n't"
    assert normalize("a<br />b<br/>c<br>d") == "a b c d"  # (only lower-case tags: IMDB writes "<br />")
    # "n't" is split only at the end of a word.
    assert normalize("n'tx") == "n'tx"


@pytest.mark.parametrize("text", ODD_TEXTS, ids=[repr(t[:12]) for t in ODD_TEXTS])
def test_odd_characters_never_crash(tokenizer, text):
    ids = tokenizer(text, truncation=True)["input_ids"]
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
    assert all(0 <= i < len(tokenizer) for i in ids)
    assert isinstance(tokenizer.decode(ids, skip_special_tokens=True), str)


def test_control_and_zero_width_characters_are_dropped(tokenizer):
    assert tokenizer.tokenize("good\x00 \u200bfilm\ufeff") == tokenizer.tokenize("good film")
    assert tokenizer("\x00\u200b\ufeff\u202e")["input_ids"] == [2, 3]


def test_odd_texts_run_through_the_model(tokenizer, tiny_model_dir):
    model = GazeForSequenceClassification.from_pretrained(tiny_model_dir)
    batch = tokenizer(ODD_TEXTS, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**batch, output_attentions=True)
    assert torch.isfinite(out.logits).all()
    assert all(torch.isfinite(a).all() for a in out.attentions)


def test_no_token_type_ids(tokenizer):
    assert tokenizer.model_input_names == ["input_ids", "attention_mask"]
    for encoded in (
        tokenizer("a funny film"),
        tokenizer("a funny film", "a dull one"),
        tokenizer(["a funny film", "dull"], padding=True, return_tensors="pt"),
    ):
        assert set(encoded.keys()) == {"input_ids", "attention_mask"}


def test_padding_is_on_the_right_with_pad_id_0(tokenizer):
    batch = tokenizer(["a funny and moving film", "dull"], padding=True)
    short, mask = batch["input_ids"][1], batch["attention_mask"][1]
    n = sum(mask)
    assert mask == [1] * n + [0] * (len(mask) - n)
    assert short[n:] == [0] * (len(short) - n) and short[n - 1] == 3


def test_truncation_to_model_max_length(tokenizer, tiny_model_dir):
    long_text = "a gripping film " * 200
    assert tokenizer.model_max_length == 64
    truncated = tokenizer(long_text, truncation=True)["input_ids"]
    assert len(truncated) == tokenizer.model_max_length
    assert truncated[0] == 2 and truncated[-1] == 3
    assert len(tokenizer(long_text, truncation=True, max_length=10)["input_ids"]) == 10
    pair = tokenizer(long_text, long_text, truncation=True)["input_ids"]
    assert len(pair) == tokenizer.model_max_length and pair.count(3) == 2

    # What the tokenizer truncates to, the model accepts.
    model = GazeForSequenceClassification.from_pretrained(tiny_model_dir)
    assert model.config.max_position_embeddings == tokenizer.model_max_length
    batch = tokenizer([long_text, "short"], truncation=True, padding=True, return_tensors="pt")
    with torch.no_grad():
        assert model(**batch).logits.shape == (2, 2)
