"""training/data.py in-process: formats, labels, tokenization, and one clear error per malformed input."""

import json

import datasets
import pytest

from training.data import DataError, collator, load_data, tokenize


def write(path, text: str):
    path.write_text(text, encoding="utf-8")
    return path


def load(tmp_path, train: str, validation: str, suffix: str = ".csv", test: str | None = None, **kwargs):
    files = {
        "train_file": write(tmp_path / f"train{suffix}", train),
        "validation_file": write(tmp_path / f"dev{suffix}", validation),
    }
    if test is not None:
        files["test_file"] = write(tmp_path / f"test{suffix}", test)
    return load_data(**files, cache_dir=tmp_path / "cache", **kwargs)


def jsonl(*records) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def test_csv_string_labels_three_classes(tmp_path):
    train = 'text,label\ngood film,pos\n"bad, very bad",neg\nso-so,neutral\nfine,pos\n'
    data = load(tmp_path, train, "text,label\nawful,neg\n")
    assert data.label_names == ["neg", "neutral", "pos"]  # sorted: a stable id order
    assert data.id2label == {0: "neg", 1: "neutral", 2: "pos"}
    assert data.train["text"][1] == "bad, very bad"  # standard CSV quoting


def test_tsv_is_read_without_quoting(tmp_path):
    train = 'sentence\tlabel\nthe "best" film\t1\n" unbalanced quote\t0\nNA\t0\n'
    data = load(tmp_path, train, "sentence\tlabel\nnull\t1\n", suffix=".tsv")
    assert data.train["text"] == ['the "best" film', '" unbalanced quote', "NA"]  # no NA guessing either
    assert data.validation["text"] == ["null"]
    assert data.label_names == ["0", "1"] and data.label2id == {0: 0, 1: 1}


def test_integer_labels_keep_numeric_order_and_label_names_name_them(tmp_path):
    train = "text,label\na,10\nb,2\nc,1\n"
    assert load(tmp_path, train, "text,label\nd,2\n").label_names == ["1", "2", "10"]
    named = load(tmp_path, "text,label\na,0\nb,1\n", "text,label\nc,1\n", label_names=["negative", "positive"])
    assert named.id2label == {0: "negative", 1: "positive"}


def test_jsonl_with_custom_columns_and_a_test_split(tmp_path):
    train = jsonl({"review": "great", "stars": "5"}, {"review": "poor", "stars": "1"}, {"review": "ok", "stars": "3"})
    data = load(
        tmp_path,
        train + "\n",  # a trailing blank line is fine
        jsonl({"review": "meh", "stars": "3"}),
        suffix=".jsonl",
        test=jsonl({"review": "no label here"}),
        text_column="review",
        label_column="stars",
    )
    assert data.label_names == ["1", "3", "5"]
    assert data.test["text"] == ["no label here"] and "label" not in data.test.column_names


def test_jsonl_texts_may_hold_unicode_line_separators(tmp_path):
    """U+2028 / U+0085 inside a JSON string are not line breaks (IMDB's train.jsonl has them)."""
    records = [{"text": "fine\u2028film", "label": 1}, {"text": "bad\x85film", "label": 0}]
    train = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    assert "\u2028" in train
    data = load(tmp_path, train, jsonl({"text": "ok", "label": 1}), suffix=".jsonl")
    assert data.train["text"] == ["fine\u2028film", "bad\x85film"]


def test_columns_are_detected_per_file(tmp_path):
    """IMDB-style "text" for training, SST-2-style "sentence" for validation."""
    train = write(tmp_path / "train.jsonl", jsonl({"text": "great", "label": 1}, {"text": "poor", "label": 0}))
    dev = write(tmp_path / "dev.tsv", "sentence\tlabel\nfine\t1\n")
    data = load_data(train_file=train, validation_file=dev, cache_dir=tmp_path / "cache")
    assert data.validation["text"] == ["fine"] and data.label_names == ["0", "1"]


def test_tokenize_pads_dynamically_and_is_cached(tmp_path, tiny_tokenizer):
    train = "sentence\tlabel\na gripping film .\t1\nit 's a dull , lifeless mess that does n't work .\t0\n"
    data = load(tmp_path, train, "sentence\tlabel\na tedious film .\t0\n", suffix=".tsv")
    splits = tokenize(data, tiny_tokenizer, max_length=8)
    train_split = splits["train"]
    assert set(train_split.column_names) == {"input_ids", "attention_mask", "length", "labels"}
    assert train_split["length"] == [len(ids) for ids in train_split["input_ids"]]
    assert max(train_split["length"]) == 8  # truncated to max_length
    batch = collator(tiny_tokenizer)([splits["validation"].remove_columns("length")[0]])
    assert batch["input_ids"].shape == (1, splits["validation"]["length"][0])  # the longest in the batch, not 8
    again = tokenize(data, tiny_tokenizer, max_length=8)["train"]
    assert again.cache_files == train_split.cache_files  # the second map read the first one's cache


@pytest.mark.parametrize(
    ("name", "train", "validation", "message"),
    [
        ("empty file", "", "text,label\na,0\n", "train.csv: the file is empty"),
        ("header only", "text,label\n", "text,label\na,0\n", "train.csv: no data rows"),
        ("missing column", "words,label\na,0\nb,1\n", "text,label\na,0\n", "train.csv: no text column found"),
        ("missing named column", "text,label\na,0\nb,1\n", "text,y\na,0\n", "dev.csv: no label column found"),
        ("extra field", "text,label\na,0\nb,1,2\nc,1\n", "text,label\na,0\n", "train.csv, line 3: expected 2 fields"),
        ("empty text", "text,label\na,0\n\n   ,1\n", "text,label\na,0\n", "train.csv, line 4: empty text in column"),
        (
            "empty text after a multi-line field",
            'text,label\n"two\nlines",0\n"",1\n',
            "text,label\na,0\n",
            "train.csv, line 4: empty text",
        ),
        ("missing label", "text,label\na,0\nb,\n", "text,label\na,0\n", "train.csv, line 3: missing label"),
        ("one label", "text,label\na,0\nb,0\n", "text,label\na,0\n", "train.csv: only one label"),
        (
            "unknown validation label",
            "text,label\na,neg\nb,pos\n",
            "text,label\nc,pos\nd,neutral\n",
            "dev.csv, line 3: label 'neutral' in column 'label' does not occur in the training data",
        ),
        ("unclosed quote", 'text,label\na,0\n"b,1\nc,0\n', "text,label\na,0\n", "train.csv, line 3: expected 2 fields"),
        (
            "header field over the csv module's limit",
            "text," + "x" * 140_000 + "\na,0\n",
            "text,label\na,0\n",
            "train.csv, line 1: field larger than field limit",
        ),
    ],
)
def test_malformed_csv_names_file_and_line(tmp_path, name, train, validation, message):
    with pytest.raises(DataError, match="^" + message.replace("(", r"\(")):
        load(tmp_path, train, validation)


@pytest.mark.parametrize(
    ("train", "message"),
    [
        ('{"text": "a", "label": 0}\n{"text": "b", "label": 1\n', "train.jsonl, line 2: not valid JSON"),
        ('{"text": "a", "label": 0}\n\n[1, 2]\n', "train.jsonl, line 3: expected a JSON object, found list"),
        ('{"text": "a", "label": 0}\n\n{"text": "", "label": 1}\n', "train.jsonl, line 3: empty text"),
        ('{"text": "a", "label": 0}\n{"text": null, "label": 1}\n', "train.jsonl, line 2: empty text"),
        ('{"text": "a", "label": 0}\n{"text": "b", "label": {"a": 0}}\n', "train.jsonl, line 2: the label in column"),
        (
            '{"text": "a", "label": 0}\n\n{"text": "b \\ud800", "label": 1}\n',
            "train.jsonl, line 3: a string holds a lone surrogate escape",
        ),
    ],
)
def test_malformed_jsonl_names_file_and_line(tmp_path, train, message):
    with pytest.raises(DataError, match="^" + message):
        load(tmp_path, train, jsonl({"text": "c", "label": 0}), suffix=".jsonl")


def test_bad_utf8_unknown_extension_and_missing_file(tmp_path):
    (tmp_path / "train.csv").write_bytes(b"text,label\na,0\n\xff\xfe,1\n")
    write(tmp_path / "dev.csv", "text,label\na,0\n")
    with pytest.raises(DataError, match=r"^train.csv, line 3: not valid UTF-8"):
        load_data(train_file=tmp_path / "train.csv", validation_file=tmp_path / "dev.csv", cache_dir=tmp_path)
    with pytest.raises(DataError, match=r"cannot tell the format"):
        load_data(train_file=tmp_path / "train.txt", validation_file=tmp_path / "dev.csv")
    with pytest.raises(DataError, match=r"missing.csv: no such file"):
        load_data(train_file=tmp_path / "missing.csv", validation_file=tmp_path / "dev.csv")
    with pytest.raises(DataError, match=r"the text and the label column are both 'label'"):
        load_data(train_file=tmp_path / "dev.csv", text_column="label", label_column="label")
    with pytest.raises(DataError, match=r"validation_fraction must be between 0 and 1"):
        load_data(train_file=tmp_path / "dev.csv", validation_fraction=1.0)


def held_out(tmp_path, seed: int, rows: int = 200, **kwargs):
    """Load a training file of `rows` rows, 3/4 label "pos", without a validation file."""
    lines = "".join(f"text {i},{'neg' if i % 4 == 0 else 'pos'}\n" for i in range(rows))
    train = write(tmp_path / "train.csv", "text,label\n" + lines)
    logged = []
    data = load_data(train_file=train, cache_dir=tmp_path / "cache", seed=seed, log=logged.append, **kwargs)
    return data, logged


def test_without_a_validation_file_a_seeded_stratified_tenth_is_held_out(tmp_path):
    data, logged = held_out(tmp_path, seed=1)
    train, validation = set(data.train["text"]), set(data.validation["text"])
    assert len(validation) == 20 and len(train) == 180  # 10 %, no duplicates
    assert not train & validation and len(train | validation) == 200  # disjoint, nothing lost
    assert data.validation["label"].count("neg") == 5  # stratified: 1/4 "neg", as in the file
    assert data.train["text"] == sorted(train, key=lambda t: int(t.split()[1]))  # file order kept
    assert data.label_names == ["neg", "pos"] and data.sources["validation"].name == "train.csv (held out)"
    assert logged == [
        f"No validation file: held out 20 of 200 examples of {tmp_path / 'train.csv'} "
        "(10%, stratified by label, seed 1) as the validation split"
    ]

    again, _ = held_out(tmp_path, seed=1)
    assert again.validation["text"] == data.validation["text"]  # deterministic for a seed
    other, _ = held_out(tmp_path, seed=2)
    assert set(other.validation["text"]) != validation and other.validation["label"].count("neg") == 5


def test_held_out_share_edge_cases(tmp_path):
    small, _ = held_out(tmp_path, seed=0, rows=4)  # 10 % of 4 rounds to 0: still one row
    assert len(small.validation) == 1 and len(small.train) == 3
    half, logged = held_out(tmp_path, seed=0, rows=10, validation_fraction=0.5)
    assert len(half.validation) == 5 and "(50%," in logged[0]
    with_file = load(tmp_path, "text,label\na,0\nb,1\n", "text,label\nc,1\n", validation_fraction=0.5)
    assert with_file.validation["text"] == ["c"] and len(with_file.train) == 2  # a file wins; nothing held out


def test_hub_dataset_class_label_names_and_an_unlabeled_test_split(monkeypatch):
    """The hub path, with `datasets.load_dataset` replaced by an in-memory SST-2 look-alike (tests are offline)."""
    features = datasets.Features(
        {
            "idx": datasets.Value("int32"),
            "sentence": datasets.Value("string"),
            "label": datasets.ClassLabel(names=["negative", "positive"]),
        }
    )

    def split(sentences, labels):
        return datasets.Dataset.from_dict(
            {"idx": list(range(len(sentences))), "sentence": sentences, "label": labels}, features=features
        )

    hub = datasets.DatasetDict(
        train=split(["a gripping film", "a dull mess"], [1, 0]),
        validation=split(["wonderful"], [1]),
        test=split(["unlabeled"], [-1]),  # GLUE hides the test labels as -1
    )
    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *args, **kwargs: calls.append(args) or hub)
    data = load_data(dataset_name="stanfordnlp/sst2")
    assert calls == [("stanfordnlp/sst2", None)]
    assert data.id2label == {0: "negative", 1: "positive"}
    assert data.train.column_names == ["text", "label"] and data.test.column_names == ["text"]

    hub["train"] = split(["a gripping film", " "], [1, 0])
    with pytest.raises(DataError, match=r"^stanfordnlp/sst2 \(train\), row 2: empty text in column 'sentence'"):
        load_data(dataset_name="stanfordnlp/sst2")


HUGE = "1" * 5000  # past Python's 4,300-digit limit for int(str)


@pytest.mark.parametrize(
    ("train", "message"),
    [
        pytest.param(
            '{"text": "a", "label": 0}\n{"text": "b", "label": ' + HUGE + "}\n",
            "train.jsonl, line 2: a number of 5,000 digits is too large",
            id="5000-digit label",
        ),
        pytest.param(
            '{"text": "a", "label": 0}\n\n{"text": "b", "label": 1, "id": -' + HUGE + "}\n",
            "train.jsonl, line 3: a number of 5,000 digits is too large",
            id="5000-digit integer in another field",
        ),
        pytest.param(
            '{"text": "a", "label": 0}\n{"text": "b", "label": 1, "score": 1e400}\n',
            "train.jsonl, line 2: the number 1e400 is too large",
            id="float overflow",
        ),
        pytest.param(
            '{"text": "a", "label": 0}\n{"text": "b", "label": ' + "[" * 10**5 + "]" * 10**5 + "}\n",
            "train.jsonl, line 2: nested too deeply",
            id="nested 10^5 deep",
        ),
        pytest.param(
            '{"text": "a", "label": 0}\n{"text": "b", "label": 1, "meta": ' + "[" * 63 + "]" * 63 + "}\n",
            "train.jsonl, line 2: nested too deeply",
            id="nested 64 levels",  # the record and 63 lists: past Arrow's limit, though json.loads takes it
        ),
        pytest.param(
            '{"text": "a", "label": 0}\n{"text": 5, "label": 1}\n',
            "train.jsonl, line 2: the text in column 'text' is int, not a string",
            id="text a number",
        ),
        pytest.param(
            '{"text": "a", "label": 0}\n\n{"text": ["b", "c"], "label": 1}\n',
            "train.jsonl, line 3: the text in column 'text' is list, not a string",
            id="text a list",
        ),
        pytest.param(
            '{"text": "a", "label": 0}\n\n{"text": "b", "label": 1}\n{"text": "c", "label": 1, "label": 0}\n',
            "train.jsonl, line 4: the key 'label' appears twice",
            id="duplicate key",
        ),
        pytest.param(
            '{"text": "a", "label": 0}\n{"text": "b", "meta": {"x": 1, "x": 2}, "label": 1}\n',
            "train.jsonl, line 2: the key 'x' appears twice",
            id="duplicate nested key",
        ),
        pytest.param(
            '{"text": "a", "label": 0}\n{"text": "b", "label": NaN}\n',
            "train.jsonl, line 2: label nan in column 'label' is not a finite number",
            id="NaN label",
        ),
        pytest.param(
            '{"text": "a", "label": "pos"}\n{"text": "b", "label": -Infinity}\n',
            "train.jsonl, line 2: label -inf in column 'label' is not a finite number",
            id="-Infinity label among string labels",
        ),
    ],
)
def test_hostile_jsonl_names_file_and_line(tmp_path, train, message):
    with pytest.raises(DataError, match="^" + message):
        load(tmp_path, train, jsonl({"text": "c", "label": 0}), suffix=".jsonl")


def test_jsonl_nested_63_levels_loads(tmp_path):
    train = jsonl({"text": "a", "label": 0}) + '{"text": "b", "label": 1, "meta": ' + "[" * 62 + "]" * 62 + "}\n"
    assert load(tmp_path, train, jsonl({"text": "c", "label": 0}), suffix=".jsonl").train["text"] == ["a", "b"]


@pytest.mark.parametrize(
    ("train", "validation", "message"),
    [
        pytest.param(
            f"text,label\na,0\nb,{HUGE}\n",
            "text,label\nc,0\n",
            "train.csv, line 3: label in column 'label' is a number of 5,000 digits",
            id="5000-digit label",
        ),
        pytest.param(
            "text,label\na,pos\nb,neg\n",
            f"text,label\nc,{HUGE}\n",
            "dev.csv, line 2: label in column 'label' is a number of 5,000 digits",
            id="5000-digit validation label",
        ),
        pytest.param(
            "text,label\na,0\nb,1\nc,NaN\n",
            "text,label\nd,0\n",
            "train.csv, line 4: label 'NaN' in column 'label' is not a finite number",
            id="NaN among integer labels",
        ),
        pytest.param(
            "text,label\na,0\nb,-inf\nc,1\n",
            "text,label\nd,0\n",
            "train.csv, line 3: label '-inf' in column 'label' is not a finite number",
            id="-inf among integer labels",
        ),
    ],
)
def test_hostile_csv_labels_name_file_and_line(tmp_path, train, validation, message):
    with pytest.raises(DataError, match="^" + message):
        load(tmp_path, train, validation)


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl"])
def test_a_byte_order_mark_is_ignored(tmp_path, suffix):
    sep = "\t" if suffix == ".tsv" else ","
    if suffix == ".jsonl":
        train, dev = jsonl({"text": "a", "label": 0}, {"text": "b", "label": 1}), jsonl({"text": "c", "label": 1})
    else:
        train, dev = f"text{sep}label\na{sep}0\nb{sep}1\n", f"text{sep}label\nc{sep}1\n"
    data = load(tmp_path, "\ufeff" + train, "\ufeff" + dev, suffix=suffix)
    assert data.train["text"] == ["a", "b"] and data.validation["text"] == ["c"]
    assert data.label_names == ["0", "1"]


def test_header_columns_without_a_name_are_ignored(tmp_path):
    """`text,label,` (a trailing comma, as spreadsheets write): the unnamed column is not data."""
    data = load(tmp_path, "text,label,\na,0,\nb,1,x\n", "text,,label,,\nc,,1,,\n")
    assert data.train["text"] == ["a", "b"] and data.validation["label"] == ["1"]
    with pytest.raises(DataError, match=r"^train.csv, line 3: expected 3 fields"):
        load(tmp_path, "text,label,\na,0,\nb,1\n", "text,label\nc,1\n")
