"""The prediction core (inference/predictor.py) and its CLI (inference/predict.py), without a server."""

import json
import math
import random
import shutil

import pytest
import torch
from conftest import expected_shape, tiny_config
from tokenizers import Tokenizer
from transformers import PreTrainedTokenizerFast, pipeline

from benchmarks.loadgen import last_axis_rows
from inference import predict as cli
from inference.contract import FUNCTIONS, MODES, ContractError, Options, OverCostError, TooLongError
from inference.maps import rollout, token_importance
from inference.predictor import Item, Predictor
from model import GazeForSequenceClassification
from model.folder import ModelLoadError
from model.tokenization import LEGACY_NT_SPLIT, NT_SPLIT, realign

SENTENCES = [
    "a gripping , funny and moving film .",
    "dull",
    "it 's a dull , lifeless mess that does n't work , and the ending is terrible .",
    "I didn't like the café scene!",
]
UNICODE = [
    "😀🎬👍🏽 great film 🍿",  # emoji, skin-tone modifier
    "فيلم رائع جدا",  # right-to-left (Arabic)
    "סרט נהדר",  # right-to-left (Hebrew)
    "e\u0301 cafe\u0301 n\u0303",  # combining marks
    "zero\u200bwidth\u200c\u200d\ufeffjoin",  # zero-width characters, BOM
    "control \x00\x01\x07\x1b[31m chars \x7f",  # control characters, ANSI escape
    "\u202eright-to-left override\u202c",
    "lone \ud800 surrogate \udfff",  # valid JSON escapes, not valid Unicode
    "\U0010ffff\U000e0001 private and tag characters",
    "日本語のテキスト、中文文本",
    "\ufffd\ufffd and more",
]
# Texts of nothing but characters the tokenizer drops: the model would answer from [CLS] [SEP] alone.
NOTHING_TO_READ = ["\x00", "\u200b", "\ufffd\ufffd", "\ud800", "\x00\u200b\u200c\x7f"]


@pytest.fixture(scope="module")
def predictor(tiny_model_dir):
    return Predictor(tiny_model_dir, max_batch_size=2)  # small buckets: exercise the bucketing


@pytest.fixture(scope="module", params=["fp32", "bf16"])
def any_precision_predictor(request, tiny_model_dir):
    return Predictor(tiny_model_dir, max_batch_size=2, precision=request.param)


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_has_the_contract_shape_and_rows_sum_to_one(any_precision_predictor, tiny_tokenizer, mode):
    predictor = any_precision_predictor
    results = predictor.predict(SENTENCES, mode)
    assert len(results) == len(SENTENCES)
    for text, result in zip(SENTENCES, results, strict=True):
        assert result["tokens"] == tiny_tokenizer.convert_ids_to_tokens(tiny_tokenizer(text)["input_ids"])
        assert set(result["scores"]) == {"negative", "positive"}
        assert math.isclose(sum(result["scores"].values()), 1, abs_tol=1e-5)
        assert result["score"] == max(result["scores"].values())
        assert result["label"] == max(result["scores"], key=result["scores"].get)
        assert result["truncated"] is False
        if mode == "none":
            assert result["attention"] is None
            continue
        t = len(result["tokens"])
        attention = result["attention"]
        assert attention["mode"] == mode
        assert attention["shape"] == expected_shape(mode, t, predictor.num_layers, predictor.num_heads)
        tensor = torch.tensor(attention["values"])
        assert list(tensor.shape) == attention["shape"]
        for row in last_axis_rows(attention["values"]):
            assert math.isclose(sum(row), 1, abs_tol=1e-4 * len(row) + 1e-6)
            assert all(0 <= value <= 1 for value in row)


def test_maps_are_the_models_own_attention_for_each_text_alone(predictor, tiny_model_dir):
    """Batched with padding and sorting, each text's maps equal a forward pass of that text alone."""
    model = GazeForSequenceClassification.from_pretrained(tiny_model_dir).eval()
    results = predictor.predict(SENTENCES, "all")
    for text, result in zip(SENTENCES, results, strict=True):
        ids = predictor.tokenizer(text, return_tensors="pt")
        with torch.no_grad():
            out = model(**ids, output_attentions=True)
        expected = torch.stack([a[0] for a in out.attentions])  # (L, H, T, T)
        got = torch.tensor(result["attention"]["values"], dtype=torch.float64)
        torch.testing.assert_close(got, expected.double(), atol=6e-5, rtol=0)
        probs = out.logits.softmax(-1)[0].tolist()
        assert result["scores"]["negative"] == pytest.approx(probs[0], abs=2e-6)


def test_cls_and_last_are_slices_of_all(predictor):
    full = predictor.predict(SENTENCES[:2], "all")
    cls = predictor.predict(SENTENCES[:2], "cls")
    last = predictor.predict(SENTENCES[:2], "last")
    for f, c, la in zip(full, cls, last, strict=True):
        values = f["attention"]["values"]
        assert c["attention"]["values"] == [[head[0] for head in layer] for layer in values]
        assert la["attention"]["values"] == values[-1]


def test_rollout_matches_the_textbook_definition(predictor):
    """Abnar & Zuidema: average heads, add identity, renormalize, multiply through layers, [CLS] row."""
    full = predictor.predict(SENTENCES, "all")
    rolled = predictor.predict(SENTENCES, "rollout")
    for f, r in zip(full, rolled, strict=True):
        layers = torch.tensor(f["attention"]["values"], dtype=torch.float64)  # (L, H, T, T)
        t = layers.shape[-1]
        product = torch.eye(t, dtype=torch.float64)
        for layer in layers:
            mixed = layer.mean(0) + torch.eye(t, dtype=torch.float64)
            mixed = mixed / mixed.sum(-1, keepdim=True)
            product = mixed @ product
        got = torch.tensor(r["attention"]["values"], dtype=torch.float64)
        torch.testing.assert_close(got, product[0], atol=3e-4, rtol=0)
        assert math.isclose(got.sum().item(), 1, abs_tol=1e-3)


def test_rollout_function_ignores_padding():
    torch.manual_seed(0)
    maps = [torch.rand(1, 2, 3, 3).softmax(-1) for _ in range(3)]
    padded = []
    for m in maps:  # pad to 5 positions: zero weight on the padded keys, junk rows for padded queries
        p = torch.rand(1, 2, 5, 5)
        p[..., :3] = 0
        p[:, :, :3, :3] = m
        p[:, :, :3, 3:] = 0
        padded.append(p)
    torch.testing.assert_close(rollout(padded)[:, :3], rollout(maps))


def test_input_order_is_kept_with_mixed_lengths_and_modes(predictor):
    texts = [f"{'a gripping film ' * (i % 7)} number {i}" for i in range(11)]
    alone = [predictor.predict([text], "none")[0] for text in texts]
    together = predictor.predict(texts, "none")
    for a, b in zip(alone, together, strict=True):
        assert a["tokens"] == b["tokens"]
        assert a["scores"] == pytest.approx(b["scores"], abs=2e-6)


def test_long_text_is_truncated_to_the_max_positions(predictor):
    long, short = "a gripping funny film " * 100, "a gripping funny film"
    results = predictor.predict([long, short], "cls")
    assert results[0]["truncated"] is True and results[1]["truncated"] is False
    assert len(results[0]["tokens"]) == predictor.max_length == 64
    assert results[0]["tokens"][-1] == "[SEP]"
    assert results[0]["attention"]["shape"] == [2, 4, 64]


@pytest.mark.parametrize("mode", MODES)
def test_unicode_of_every_kind_is_classified(predictor, mode):
    results = predictor.predict(UNICODE, mode)
    assert len(results) == len(UNICODE)
    for result in results:
        assert result["tokens"][0] == "[CLS]" and result["tokens"][-1] == "[SEP]"
        json.dumps(result, ensure_ascii=False).encode("utf-8")  # serializable, no lone surrogates left


@pytest.mark.parametrize("text", NOTHING_TO_READ)
def test_a_text_the_tokenizer_reads_nothing_in_is_refused(predictor, text):
    """Hostile review 2, Low: "\\u0000" was classified 0.71 positive from [CLS] [SEP]."""
    with pytest.raises(ContractError, match=r"^texts\[1\] \(.*\) has no tokens: it holds only characters"):
        predictor.predict(["a fine film", text], "none")


def test_unknown_mode_is_an_error(predictor):
    with pytest.raises(ValueError, match="unknown attention mode 'heads'"):
        predictor.predict(["x"], "heads")


def test_unknown_precision_is_an_error(tiny_model_dir):
    with pytest.raises(ValueError, match="unknown precision 'fp16'; expected one of auto, fp32, bf16"):
        Predictor(tiny_model_dir, precision="fp16")


def test_cls_response_for_a_shipped_size_model_is_a_few_kb(tmp_path, tiny_tokenizer):
    """4 layers × 4 heads (the shipped shape), a 20-token sentence: the "cls" JSON stays small."""
    torch.manual_seed(0)
    config = tiny_config(vocab_size=len(tiny_tokenizer), num_hidden_layers=4, num_attention_heads=4, hidden_size=64)
    GazeForSequenceClassification(config).save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    sentence = "it 's a charming and often affecting journey , and the acting is wonderful ."
    result = Predictor(tmp_path).predict([sentence], "cls")[0]
    size = len(json.dumps({"predictions": [result]}, separators=(",", ":")))
    assert len(result["tokens"]) >= 15
    # ≤ ~9 bytes per value (16 per token), ~60 per token for its offsets and word, plus the rest
    assert size < len(result["tokens"]) * (16 * 9 + 60) + 500
    assert size < 6000


def test_missing_corrupt_and_pickle_only_folders_fail_clearly(tmp_path, tiny_model_dir):
    with pytest.raises(ModelLoadError, match="does not exist"):
        Predictor(tmp_path / "nope")
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (broken / name).write_bytes((tiny_model_dir / name).read_bytes())
    with pytest.raises(ModelLoadError, match="missing model.safetensors"):
        Predictor(broken)
    (broken / "pytorch_model.bin").write_bytes(b"pickles are never loaded")
    with pytest.raises(ModelLoadError, match="missing model.safetensors"):
        Predictor(broken)
    (broken / "model.safetensors").write_bytes((tiny_model_dir / "model.safetensors").read_bytes()[:200])
    with pytest.raises(ModelLoadError, match="corrupt"):
        Predictor(broken)


def test_cli_prints_label_score_and_top_tokens(tiny_model_dir, capsys):
    assert cli.main(["a gripping , funny film", "--model", str(tiny_model_dir), "--attention", "rollout"]) == 0
    lines = capsys.readouterr().out.splitlines()
    label, score, *_ = lines[0].split()
    assert label in {"negative", "positive"} and 0.5 <= float(score) <= 1
    tokens = [line.split()[0] for line in lines[1:]]
    assert set(tokens) <= {"a", "gripping", ",", "funny", "film"} and len(tokens) == 5


def test_cli_json_and_errors(tiny_model_dir, tmp_path, capsys):
    assert cli.main(["one", "two", "--model", str(tiny_model_dir), "--attention", "cls", "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["attention"]["mode"] for line in lines] == ["cls", "cls"]
    assert cli.main(["x", "--model", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


# -- scores, top_k, offsets and words ----------------------------------------------------------


def hf_pipeline(folder):
    """HF's own TextClassificationPipeline on a saved folder (local files only): the reference for scores."""
    model = GazeForSequenceClassification.from_pretrained(folder).eval()
    return pipeline("text-classification", model=model, tokenizer=PreTrainedTokenizerFast.from_pretrained(folder))


@pytest.mark.parametrize("function", [None, *FUNCTIONS])
def test_scores_and_top_k_mean_what_they_mean_in_hf_pipeline(predictor, tiny_model_dir, function):
    reference = hf_pipeline(tiny_model_dir)
    options = {} if function is None else {"function_to_apply": function}
    expected = reference(SENTENCES, top_k=None, **options)  # every label, best first
    ours = predictor.predict(SENTENCES, "none", function_to_apply=function, top_k=2)
    for want, got in zip(expected, ours, strict=True):
        assert [entry["label"] for entry in got["top"]] == [entry["label"] for entry in want]
        assert [entry["score"] for entry in got["top"]] == pytest.approx([e["score"] for e in want], abs=2e-6)
        assert got["scores"] == {entry["label"]: entry["score"] for entry in got["top"]}
        assert (got["label"], got["score"]) == (got["top"][0]["label"], got["top"][0]["score"])
    if function in (None, "softmax"):
        assert all(math.isclose(sum(p["scores"].values()), 1, abs_tol=1e-5) for p in ours)
    if function == "none":  # raw logits: not probabilities, some negative
        assert any(score < 0 for p in ours for score in p["scores"].values())


def test_top_k_lists_at_most_every_label_and_is_absent_by_default(predictor):
    assert predictor.predict(["a gripping film"], "none")[0]["top"] is None
    one, many = (predictor.predict(["a gripping film"], "none", top_k=k)[0] for k in (1, 10))
    assert one["top"] == [{"label": one["label"], "score": one["score"]}]
    assert len(many["top"]) == 2 and many["top"][0] == one["top"][0]
    assert many["top"][0]["score"] >= many["top"][1]["score"]


@pytest.mark.parametrize(
    ("overrides", "function"),
    [
        ({}, "softmax"),
        ({"problem_type": "multi_label_classification"}, "sigmoid"),
        ({"id2label": {0: "score"}, "label2id": {"score": 0}}, "sigmoid"),
    ],
    ids=["two labels", "multi-label", "one label"],
)
def test_the_default_function_is_hf_pipelines(tmp_path, tiny_tokenizer, overrides, function):
    torch.manual_seed(0)
    GazeForSequenceClassification(tiny_config(vocab_size=len(tiny_tokenizer), **overrides)).save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    predictor = Predictor(tmp_path)
    assert predictor.default_function == function
    expected = hf_pipeline(tmp_path)(SENTENCES[:2], top_k=None)
    ours = predictor.predict(SENTENCES[:2], "none", top_k=5)
    for want, got in zip(expected, ours, strict=True):
        assert [e["score"] for e in got["top"]] == pytest.approx([e["score"] for e in want], abs=2e-6)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"function_to_apply": "tanh"}, "unknown function_to_apply 'tanh'; expected one of softmax, sigmoid, none"),
        ({"top_k": 0}, "top_k must be an integer of at least 1 (or null), got 0"),
        ({"top_k": -3}, "top_k must be an integer of at least 1"),
        ({"top_k": 1.0}, "top_k must be an integer of at least 1"),
        ({"top_k": True}, "top_k must be an integer of at least 1"),
    ],
)
def test_invalid_function_or_top_k_is_an_error(predictor, options, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        predictor.predict(["x"], "none", **options)


# Accents (composed and decomposed), HTML breaks, clitics the normalizer splits, case that changes length
# (İ), emoji, CJK, full-width, zero-width and control characters, an unpaired surrogate, extra spaces.
TRICKY = [
    "I didn't like the Café scene<br />but CAN'T stop.",
    "The acting wasn't great<br /><br />but the story is wonderful!",
    "😀🎬👍🏽 great film 🍿, isn't it?",
    "e\u0301 cafe\u0301 İstanbul ǅ ß ﬁlm",
    "日本語のテキスト and a film",
    "ＦＵＬＬ width\u200b and  \t spaces \x00\x07 here",
    "lone \ud800 surrogate: a dull film",
    "n'tn't won't,don't",
    "gr\u200beat \u200bfilm\u200b",  # a dropped character inside a word is inside its span; at its edges, outside
]


@pytest.mark.parametrize("text", TRICKY, ids=[repr(t[:14]) for t in TRICKY])
def test_offsets_index_the_text_as_sent(predictor, tiny_tokenizer, text):
    """text[start:end] is each token's surface form: normalized, it is the token (less "##")."""
    normalize = tiny_tokenizer.backend_tokenizer.normalizer.normalize_str
    result = predictor.predict([text], "none")[0]
    assert len(result["offsets"]) == len(result["tokens"])
    assert result["offsets"][0] is None and result["offsets"][-1] is None  # [CLS], [SEP]
    previous_end = 0
    for token, (start, end) in zip(result["tokens"][1:-1], result["offsets"][1:-1], strict=True):
        assert previous_end <= start < end <= len(text), (token, start, end)
        if token != "[UNK]":
            assert normalize(text[start:end]).strip() == token.removeprefix("##"), (token, text[start:end])
        previous_end = end


def test_a_dropped_character_is_in_a_span_only_inside_a_word(predictor):
    result = predictor.predict(["gr\u200beat \u200bfilm\u200b"], "none")[0]
    assert result["tokens"][1:-1] == ["great", "film"]
    assert result["offsets"] == [None, [0, 6], [8, 12], None]


def test_offsets_of_a_clitic_and_an_html_break(predictor):
    text = "I didn't<br />LIKE it"
    result = predictor.predict([text], "none")[0]
    spans = [text[start:end] for start, end in result["offsets"][1:-1]]
    assert result["tokens"][1:-1] == ["i", "did", "n", "'", "t", "like", "it"]
    assert spans == ["I", "did", "n", "'", "t", "LIKE", "it"]


def test_folders_saved_with_the_old_nt_rule_get_right_offsets(tmp_path, tiny_model_dir, predictor):
    """The shipped checkpoints' tokenizer.json has the rule that gave "n", "'" and "t" the span of the "t"."""
    saved = json.loads((tiny_model_dir / "tokenizer.json").read_text())
    steps = saved["normalizer"]["normalizers"]
    legacy = json.dumps({**saved, "normalizer": {**saved["normalizer"], "normalizers": steps[:-1] + [LEGACY_NT_SPLIT]}})
    assert steps[-1] == NT_SPLIT and json.loads(realign(legacy)) == saved
    text = "it doesn't work"
    old, new = Tokenizer.from_str(legacy).encode(text), Tokenizer.from_str(realign(legacy)).encode(text)
    assert old.ids == new.ids  # the same tokens...
    assert [text[s:e] for s, e in old.offsets[3:6]] == ["t", "t", "t"]  # ...where the old rule's spans were wrong
    for name in ("config.json", "model.safetensors", "tokenizer_config.json"):
        (tmp_path / name).write_bytes((tiny_model_dir / name).read_bytes())
    (tmp_path / "tokenizer.json").write_text(legacy)
    result = Predictor(tmp_path).predict([text], "none")[0]
    assert [text[s:e] for s, e in result["offsets"][1:-1]] == ["it", "does", "n", "'", "t", "work"]
    assert result["tokens"] == predictor.predict([text], "none")[0]["tokens"]


@pytest.mark.parametrize("mode", sorted(MODES))
def test_words_sum_their_pieces_weights(predictor, mode):
    text = "A LIFELESS, tedious café scene: it doesn't work for filmgoers"
    result = predictor.predict([text], mode)[0]
    if mode == "none":
        assert result["words"] is None
        return
    weights = token_importance(result)
    assert len(weights) == len(result["tokens"])
    covered = [i for word in result["words"] for i in word["tokens"]]
    assert covered == list(range(1, len(result["tokens"]) - 1))  # every token but [CLS] and [SEP], in order
    for word in result["words"]:
        first, *rest = word["tokens"]
        assert all(result["tokens"][i].startswith("##") for i in rest)
        assert not result["tokens"][first].startswith("##")
        assert (word["start"], word["end"]) == (result["offsets"][first][0], result["offsets"][word["tokens"][-1]][1])
        assert word["weight"] == pytest.approx(sum(weights[i] for i in word["tokens"]), abs=1e-4)
        assert word["attribution"] is None  # none asked for
    assert any(len(word["tokens"]) > 1 for word in result["words"])  # some word is several pieces
    spans = [text[word["start"] : word["end"]] for word in result["words"]]
    assert "café" in spans and ":" in spans and "filmgoers" in spans  # film ##g ##o ##er ##s: one word
    if mode == "rollout":  # the rollout sums to 1: the words hold all of it but [CLS]'s and [SEP]'s
        total = sum(word["weight"] for word in result["words"]) + weights[0] + weights[-1]
        assert total == pytest.approx(1, abs=1e-3)


@pytest.mark.parametrize("mode", ["none", "rollout"])
def test_words_sum_their_pieces_attribution_with_or_without_maps(predictor, mode):
    text = "A LIFELESS, tedious café scene: it doesn't work for filmgoers"
    result = predictor.predict([text], mode, attribution="gradient_x_input")[0]
    values = result["attribution"]["values"]
    assert [i for word in result["words"] for i in word["tokens"]] == list(range(1, len(values) - 1))
    for word in result["words"]:
        assert word["attribution"] == pytest.approx(sum(values[i] for i in word["tokens"]), abs=1e-4)
        assert (word["weight"] is None) == (mode == "none")
    assert any(len(word["tokens"]) > 1 for word in result["words"])  # pieces summed, not copied


def test_cli_lists_the_top_k_labels_with_the_chosen_function(tiny_model_dir, predictor, capsys):
    text = "a gripping , funny film"
    args = [text, "--model", str(tiny_model_dir), "--top-k", "2", "--function-to-apply", "none"]
    assert cli.main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    expected = predictor.predict([text], "none", function_to_apply="none", top_k=2)[0]["top"]
    assert lines[1] == "  top: " + ", ".join(f"{e['label']} {e['score']:.4f}" for e in expected)
    assert cli.main([text, "--model", str(tiny_model_dir), "--top-k", "0"]) == 2
    assert "top_k must be an integer of at least 1" in capsys.readouterr().err


# Pieces that stress word boundaries: CJK runs (a word per character), accents and combining marks, a
# zero-width space and controls (dropped by BERT's normaliser), contractions, punctuation, long words
# (one [UNK]), runs of whitespace.
PIECES = [
    "日本語",
    "漢",
    " ",
    "  \n",
    "\t",
    "the ",
    "don't ",
    "café ",
    "e\u0301",
    "\u200b",
    "\x1c",
    "?!",
    "x" * 120,
    "a",
]


@pytest.mark.parametrize("folder", ["tiny", "shipped"])
def test_long_texts_are_tokenized_from_their_head_with_the_whole_texts_tokens(folder, tiny_model_dir):
    """Only a head of a long text is tokenized (64 texts of 10,000 CJK characters took 2.6 s; hostile review 2,
    H2), and its tokens, offsets and truncation are exactly those of the whole text."""
    predictor = Predictor(tiny_model_dir if folder == "tiny" else "checkpoints/gaze-sst2")
    rng = random.Random(0)
    texts = ["".join(rng.choices(PIECES, k=rng.randint(1, 2500))) for _ in range(200)]
    texts += ["漢" * 10_000, "a " * 5_000, " " * 9_000 + "end", "word" * 2_500]
    # The whole text just fits: BERT drops the zero-width space, joining "filmfilm" and the long word into one [UNK].
    # A head cut at the zero-width space would overflow; the cut must come at the spaces before it.
    assert len(predictor.encode(["the"])[0].ids) == 3 and len(predictor.encode(["filmfilm"])[0].ids) > 3
    texts.append("the  " * (predictor.max_length - 3) + "filmfilm\u200b" + "x" * predictor.head_chars)
    encodings = predictor.encode(texts)
    for text, ours, whole in zip(texts, encodings, predictor._tokenizer.encode_batch(texts), strict=True):
        assert ours.ids == whole.ids and ours.offsets == whole.offsets, text[:80]
        assert bool(ours.overflowing) == bool(whole.overflowing)
    for chars, at_least in zip(predictor.head_sizes, (40, 100), strict=True):  # each head size is exercised
        assert sum(len(predictor.head(text, chars)) < len(text) for text in texts) > at_least
    short_heads = predictor._tokenizer.encode_batch([predictor.head(text, predictor.head_sizes[0]) for text in texts])
    assert sum(bool(encoding.overflowing) for encoding in short_heads) > 20  # the first head often suffices
    chunks = []
    tokenize = predictor._tokenizer
    predictor._tokenizer = type(
        "Spy", (), {"encode_batch": lambda _, texts: chunks.append(texts) or tokenize.encode_batch(texts)}
    )()
    predictor.encode(["漢" * 10_000, "a gripping funny film " * 500])
    predictor._tokenizer = tokenize
    # CJK overflows its first, short head; the English text only its second; neither is tokenized whole.
    assert [len(chunk) for chunk in chunks] == [2, 1] and len(chunks[0][0]) <= predictor.head_sizes[0]


def test_the_cost_of_a_text_grows_with_the_models_blocks_and_labels(tmp_path, tiny_tokenizer, tiny_model_dir):
    """The cost model counts the work of this model: 6 blocks cost nearly 3 times 2 per token, 1,000 labels more
    than 2, and tokenizing counts the head of a long text only."""

    def cost(**overrides) -> float:
        folder = tmp_path / str(len(list(tmp_path.iterdir())))
        config = tiny_config(vocab_size=len(tiny_tokenizer), hidden_size=384, intermediate_size=1536, **overrides)
        GazeForSequenceClassification(config).save_pretrained(folder)
        tiny_tokenizer.save_pretrained(folder)
        predictor = Predictor(folder)
        return predictor.cost_ms(Item(predictor.encode(["a gripping , funny film"])[0], Options("none")))

    two, six = cost(num_hidden_layers=2), cost(num_hidden_layers=6)
    assert 2 < six / two < 3  # the blocks dominate; the work outside them (embeddings, norms) is the rest
    labels = {i: f"label-{i}" for i in range(1000)}
    assert cost(id2label=labels, label2id={v: k for k, v in labels.items()}) > two + 1
    predictor = Predictor(tiny_model_dir)
    assert predictor.encode_cost_ms(["漢" * 10_000]) == predictor.encode_cost_ms(["漢" * predictor.head_chars])
    assert predictor.encode_cost_ms(["漢" * 10]) < predictor.encode_cost_ms(["漢" * 100])


def test_a_request_over_its_cost_limit_stops_tokenizing_once_it_is_passed(predictor):
    """`items` tokenizes 1, 2, 4, ... texts at a time and stops at the chunk that passes `max_cost_ms`: 64 costly
    texts are refused after 7, and the error says it; within the limit all are tokenized, as `encode` does."""
    texts = ["a gripping funny film " * 20] * 64
    one = predictor.encode_cost_ms(texts[:1]) + predictor.cost_ms(Item(predictor.encode(texts[:1])[0], Options("all")))
    with pytest.raises(OverCostError, match=r"more than \d+ ms of a worker \(its first 7 of 64 texts: 448 tokens"):
        predictor.items(texts, Options("all"), max_cost_ms=5 * one)  # passed by the third chunk: 1 + 2 + 4 texts
    with pytest.raises(OverCostError, match=r"take about \d+ ms of a worker \(64 texts: 4096 tokens"):
        predictor.items(texts, Options("all"), max_cost_ms=63.5 * one)  # the last text passes it
    items = predictor.items(texts, Options("all"), max_cost_ms=64.5 * one)
    assert [item.encoding.ids for item in items] == [encoding.ids for encoding in predictor.encode(texts)]
    with pytest.raises(ContractError, match=r"texts\[5\] \('\\u200b'\) has no tokens"):
        predictor.items(["a film"] * 5 + ["\u200b"], Options("none"))  # its index counts from the first text
    # Tokenizing's own cost is known before it is done: a chunk that would pass the limit is not tokenized.
    tokenize_two = predictor.encode_cost_ms(texts[:3])
    with pytest.raises(OverCostError, match=r"more than \d+ ms of a worker to tokenize \(its first 3 of 64 texts\)"):
        predictor.items(texts, Options("none"), max_cost_ms=tokenize_two - 0.01)


def test_pairs_are_tokenized_whole_and_each_text_must_have_tokens(predictor, tiny_model_dir):
    """[CLS] a [SEP] b [SEP] as the tokenizer's pair template joins them (a model without token types gets the
    tokens alone); each text's words are its own; an empty side is named; a pair of long texts is cut as the
    tokenizer cuts it, with its whole length in the tokenizing cost."""
    tokenizer = PreTrainedTokenizerFast.from_pretrained(tiny_model_dir)
    pair = ("a gripping film", "boring")
    (prediction,) = predictor.predict([pair], "cls")
    assert prediction["tokens"] == tokenizer.convert_ids_to_tokens(tokenizer(*pair)["input_ids"])
    assert prediction["tokens"].count("[SEP]") == 2
    assert [(w["start"], w["end"]) for w in prediction["words"]] == [(0, 1), (2, 10), (11, 15), (0, 6)]
    model = GazeForSequenceClassification.from_pretrained(tiny_model_dir).eval()
    with torch.no_grad():
        logits = model(**tokenizer(*pair, return_tensors="pt")).logits
    assert list(prediction["scores"].values()) == pytest.approx(logits.softmax(-1)[0].tolist(), abs=1e-5)
    with pytest.raises(ContractError, match=r"^inputs\[1\]\[1\] \('\\u200b'\) has no tokens"):
        predictor.encode(["fine", ("a film", "\u200b")], "inputs")
    long = ("a gripping funny film " * 200, "boring " * 300)
    (encoding,) = predictor.encode([long])
    assert encoding.ids == tokenizer(*long, truncation=True)["input_ids"] and encoding.overflowing
    assert predictor.encode_cost_ms([long]) > predictor.encode_cost_ms([long[0]]) + predictor.encode_cost_ms([long[1]])


def test_a_tokenizer_without_a_pair_template_refuses_pairs(tmp_path, tiny_model_dir):
    """Its pairs would reach the model as two texts run together, without [CLS] or [SEP]."""
    folder = tmp_path / "single-only"
    shutil.copytree(tiny_model_dir, folder)
    spec = json.loads((folder / "tokenizer.json").read_text())
    spec["post_processor"]["pair"] = spec["post_processor"]["pair"][1:2]  # $A alone: no specials
    (folder / "tokenizer.json").write_text(json.dumps(spec))
    predictor = Predictor(folder)
    with pytest.raises(ContractError, match="this model's tokenizer has no template for text pairs"):
        predictor.predict(["a fine film", ("a film", "fine")])
    assert predictor.predict(["a fine film"])[0]["tokens"][0] == "[CLS]"


def test_without_truncation_the_first_text_that_overflows_ends_tokenizing(predictor, monkeypatch):
    """TEI's `truncate: false`: refused at the chunk holding the first over-long text (hostile review 2 H2: a
    /predict of long texts took 3.0 s to say 413), not after every text is tokenized."""
    texts = ["a fine film"] * 5 + ["a gripping funny film " * 40] * 59
    tokenized = []
    encode = predictor.encode
    monkeypatch.setattr(
        predictor,
        "encode",
        lambda chunk, *args, **kwargs: tokenized.append(len(chunk)) or encode(chunk, *args, **kwargs),
    )
    with pytest.raises(TooLongError, match=r"^inputs\[5\] has more than 64 tokens, the model's limit$") as refused:
        predictor.items(texts, Options("none"), "inputs", truncate=False)
    assert refused.value.index == 5 and refused.value.kind == "too_large"
    assert tokenized == [1, 2, 4]  # the chunk of texts 3 to 6 held it
    monkeypatch.undo()
    assert len(predictor.items(texts, Options("none"), "inputs")) == 64  # truncate=True: cut, as before
