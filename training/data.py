"""Text-classification data: load a hub dataset or local CSV/TSV/JSON Lines files, check them, tokenize.

Loading goes through `datasets` (`load_dataset`), so raw files are cached as Arrow and tokenization
(`Dataset.map`) is cached by fingerprint: a second run on the same files and tokenizer reuses both.

Local files are read as follows:
- `.csv`: comma-separated, standard `"` quoting, one header line.
- `.tsv`: tab-separated, one header line, NO quoting (GLUE style: a `"` is an ordinary character).
- `.jsonl` / `.json`: one JSON object per line.

Without a validation file, a seeded, label-stratified `validation_fraction` (10 %) of the training
file is held out as the validation split, and a line says so.

Every malformed input raises `DataError` with the file and the line (1-based, header included):
a missing column, an empty file, an unparseable row, an empty text or one that is no string, a
missing label, a NaN or infinite label, or a label in the validation/test file that the training
file never uses. A JSON line is also refused for a duplicate key, a number past a float's range or
nesting deeper than pyarrow reads (63 levels). A leading byte-order mark is ignored, and so is a
CSV/TSV header column without a name (`text,label,`).

Labels may be integers or strings. Integer labels keep their order (0, 1, ... → ids 0, 1, ...);
string labels are sorted alphabetically unless `label_names` fixes the order. The names become the
model's `id2label`.

Multi-label data (JSON Lines): each label is a list of strings, `{"text": "...", "labels": ["a", "b"]}`, an
empty list meaning none applies. The classes are the union of the training file's labels (sorted, or in
`label_names` order), each row becomes a multi-hot vector, and every file of a run holds lists or none
does. Refused with the line: a list holding anything but non-empty strings, a label not in `label_names`,
and a file mixing lists with single labels.
"""

from __future__ import annotations

import csv
import io
import json
import math
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import datasets
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase

from model.configuration_gaze import MAX_LABELS
from training.config import RunError

TEXT_COLUMNS = ("sentence", "text")
LABEL_COLUMNS = ("label", "labels")
FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl"}
_INT = re.compile(r"[+-]?\d+")
_MAX_DEPTH = 63  # lists and objects inside each other in a JSON line: pyarrow refuses more (Arrow's 64 levels)
_TOO_DEEP = f"nested too deeply (over {_MAX_DEPTH} levels of lists and objects)"
_NON_FINITE = re.compile(r"[+-]?(nan|inf|infinity)", re.IGNORECASE)  # how float() spells NaN and infinity


class DataError(RunError, ValueError):
    """Malformed training data; the message names the file and the line."""


@dataclass
class Source:
    """Where a split comes from: a local file (with its format) or a split of a hub dataset."""

    name: str
    path: Path | None = None
    format: str | None = None

    def where(self, row: int | None = None) -> str:
        """'train.csv, line 17' for the 0-based data row `row` ('train.csv' when row is None)."""
        if row is None:
            return self.name
        if self.path is None:
            return f"{self.name}, row {row + 1}"
        return f"{self.name}, line {_line_of_row(self.path, self.format, row)}"


@dataclass
class ClassificationData:
    """Checked splits with columns `text` and (except maybe `test`) `label` (the raw label values)."""

    train: datasets.Dataset
    validation: datasets.Dataset
    test: datasets.Dataset | None
    label_names: list[str]
    label2id: dict[int | str, int]  # raw label value (multi-label: each name in a list) → class id
    sources: dict[str, Source]
    multi_label: bool = False  # every label is a list of names (any number of classes per text)

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.label_names))


def file_format(path: str | Path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise DataError(f"{path}: cannot tell the format from the extension {suffix!r}; use .csv, .tsv or .jsonl")
    return FORMATS[suffix]


def load_data(
    *,
    dataset_name: str | None = None,
    dataset_config: str | None = None,
    train_file: str | Path | None = None,
    validation_file: str | Path | None = None,
    test_file: str | Path | None = None,
    text_column: str | None = None,
    label_column: str | None = None,
    label_names: list[str] | None = None,
    cache_dir: str | Path | None = None,
    validation_fraction: float = 0.1,
    seed: int = 42,
    log: Callable[[str], None] = print,
) -> ClassificationData:
    """Load and check the splits. Local files take precedence over `dataset_name` (a hub id).

    Without `validation_file`, a `validation_fraction` of `train_file` (stratified by label, chosen by
    `seed`) becomes the validation split; `log` gets one line saying how many rows were held out.
    """
    if train_file is not None and validation_file is None and not 0 < validation_fraction < 1:
        raise DataError(f"validation_fraction must be between 0 and 1, not {validation_fraction}")
    if text_column is not None and text_column == label_column:
        raise DataError(f"the text and the label column are both {text_column!r}; give each its own")
    files = {"train": train_file, "validation": validation_file, "test": test_file}
    raw, sources, class_names = _load_splits(files, dataset_name, dataset_config, cache_dir, text_column, label_column)

    # Columns are detected per file, so e.g. IMDB's "text" trains and SST-2's "sentence" validates.
    text_columns, label_columns = {}, {}
    for split, ds in raw.items():
        raw[split], text_columns[split], label_columns[split] = _standard_columns(
            ds, split, sources[split], text_column, label_column
        )

    if "test" in raw and "label" in raw["test"].column_names and all(v == -1 for v in raw["test"]["label"]):
        raw["test"] = raw["test"].remove_columns("label")  # hub convention: -1 marks an unlabeled test set

    for split, ds in raw.items():
        _check_texts(ds, sources[split], text_columns[split])
        if "label" in ds.column_names:
            _check_labels_present(ds, sources[split], label_columns[split])

    multi_label = any(isinstance(value, list) for value in raw["train"]["label"])
    for split in ("validation", "test"):
        if split in raw and "label" in raw[split].column_names:
            _check_same_kind(raw[split], sources[split], multi_label, sources["train"], label_columns[split])
    if multi_label:
        train_column = label_columns["train"]
        label_names, label2id = _multi_label_mapping(raw["train"], label_names, sources["train"], train_column)
    else:
        label_names, label2id = _label_mapping(raw["train"]["label"], label_names or class_names, sources["train"])
    if len(label_names) > MAX_LABELS:
        raise DataError(
            f"{sources['train'].where()}: {len(label_names):,} distinct labels; a Gaze classifier has at most "
            f"{MAX_LABELS:,} (model.configuration_gaze.MAX_LABELS)"
        )
    for split in ("validation", "test"):
        if split in raw and "label" in raw[split].column_names:
            _check_known_labels(raw[split], sources[split], label2id, sources["train"], label_columns[split])

    if "validation" not in raw:  # checked as part of the training file; hold out a share of it
        raw["train"], raw["validation"] = _hold_out(raw["train"], label2id, validation_fraction, seed)
        sources["validation"] = Source(f"{sources['train'].name} (held out)")
        log(
            f"No validation file: held out {len(raw['validation']):,} of {len(raw['validation']) + len(raw['train']):,}"
            f" examples of {sources['train'].path} ({validation_fraction:.0%}, stratified by label, seed {seed})"
            " as the validation split"
        )

    return ClassificationData(
        train=raw["train"],
        validation=raw["validation"],
        test=raw.get("test"),
        label_names=label_names,
        label2id=label2id,
        sources=sources,
        multi_label=multi_label,
    )


def _standard_columns(
    ds: datasets.Dataset, split: str, source: Source, text_column: str | None, label_column: str | None
) -> tuple[datasets.Dataset, str, str | None]:
    """The split with its text and (if any) label column renamed "text" and "label"; the names found."""
    text = text_column or _detect(ds, TEXT_COLUMNS, "text", source)
    if label_column or split != "test":
        label = label_column or _detect(ds, LABEL_COLUMNS, "label", source)
    else:  # a test file may come without labels
        label = next((c for c in LABEL_COLUMNS if c in ds.column_names), None)
    for column in [text] if split == "test" else [text, label]:
        if column not in ds.column_names:
            raise DataError(
                f"{source.where()}: no column {column!r}; its columns are {ds.column_names}"
                " (choose with --text-column / --label-column)"
            )
    columns = {text: "text"}
    if label in ds.column_names:
        columns[label] = "label"
    return ds.select_columns(list(columns)).rename_columns(columns), text, label


def tokenize(
    data: ClassificationData, tokenizer: PreTrainedTokenizerBase, max_length: int
) -> dict[str, datasets.Dataset]:
    """Tokenize every split (cached by `datasets` fingerprint), without padding.

    Each split gets `input_ids`, `attention_mask`, `length` (tokens) and, where labeled, `labels`: the
    class id, or for multi-label data one float per class (1.0 where the class applies).
    """
    splits = {"train": data.train, "validation": data.validation}
    if data.test is not None:
        splits["test"] = data.test
    return {
        split: ds.map(
            _encode,
            batched=True,
            remove_columns=ds.column_names,
            fn_kwargs={"tokenizer": tokenizer, "max_length": max_length, "label2id": data.label2id},
            desc=f"Tokenizing {split}",
        )
        for split, ds in splits.items()
    }


def collator(tokenizer: PreTrainedTokenizerBase) -> DataCollatorWithPadding:
    """Pads each batch to its longest sequence (dynamic padding), not to max_length."""
    return DataCollatorWithPadding(tokenizer, padding="longest", return_tensors="pt")


def label_key(value) -> int | str:
    """The canonical form of a raw label: an int for 1, "1" and " 1 ", else the string."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    text = str(value).strip()
    return int(text) if _INT.fullmatch(text) else text


# --- internals -------------------------------------------------------------------------------


def _encode(batch, tokenizer, max_length, label2id):
    encoded = tokenizer(batch["text"], truncation=True, max_length=max_length)
    encoded["length"] = [len(ids) for ids in encoded["input_ids"]]
    if "label" in batch:
        encoded["labels"] = [_target(value, label2id) for value in batch["label"]]
    return encoded


def _target(value, label2id: dict) -> int | list[float]:
    """What the model is trained to predict: a class id, or (a list of names) a multi-hot vector."""
    if not isinstance(value, list):
        return label2id[label_key(value)]
    ids = {label2id[name] for name in value}
    return [float(i in ids) for i in range(len(label2id))]


def _hold_out(ds: datasets.Dataset, label2id: dict, fraction: float, seed: int):
    """(rest, held out): round(fraction × rows) rows (at least 1, at most all but 1), each label's share ±1.

    Multi-label rows are grouped by their whole set of labels."""
    labels = [_target(value, label2id) for value in ds["label"]]
    order = list(range(len(ds)))
    random.Random(seed).shuffle(order)
    order.sort(key=labels.__getitem__)  # stable: grouped by label, shuffled within each label
    n = len(order)
    count = min(max(1, round(n * fraction)), n - 1)
    held = {order[int((k + 0.5) * n / count)] for k in range(count)}  # evenly spaced: stratified
    return ds.select([i for i in range(n) if i not in held]), ds.select(sorted(held))


def _load_splits(files: dict, dataset_name, dataset_config, cache_dir, text_column, label_column):
    """(raw splits, their sources, the hub's class names or None): local files if there is a train file, else
    the hub dataset."""
    if files["train"] is not None:
        raw, sources = {}, {}
        for split, path in files.items():
            if path is not None:
                sources[split] = Source(Path(path).name, Path(path), file_format(path))
                raw[split] = _load_file(sources[split], cache_dir, text_column, label_column)
        return raw, sources, None
    if dataset_name:
        return _load_hub(dataset_name, dataset_config, cache_dir)
    raise DataError("no data: set dataset_name (a hub id) or --train-file")


def _load_file(source: Source, cache_dir, text_column: str | None, label_column: str | None) -> datasets.Dataset:
    path, fmt = source.path, source.format
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    columns = ((text_column,) if text_column else TEXT_COLUMNS, (label_column,) if label_column else LABEL_COLUMNS)
    problem = _scan(path, fmt, *columns)  # exact line numbers for anything the loader would choke on
    if problem:
        raise DataError(f"{source.name}, {problem}" if problem.startswith("line") else f"{source.name}: {problem}")
    try:
        if fmt == "jsonl":
            loaded = datasets.load_dataset("json", data_files={"data": str(path)}, cache_dir=cache_dir)
        else:
            named = [name for name in _read_header(path, fmt) if name]  # `text,label,` has an unnamed third column
            # Every column as a string: no NA guessing ("NA", "null" are texts) and no per-chunk type drift.
            features = datasets.Features({name: datasets.Value("string") for name in named})
            loaded = datasets.load_dataset(
                "csv",
                data_files={"data": str(path)},
                cache_dir=cache_dir,
                sep="\t" if fmt == "tsv" else ",",
                quoting=csv.QUOTE_NONE if fmt == "tsv" else csv.QUOTE_MINIMAL,
                features=features,
                usecols=named,
                na_filter=False,
            )
    except Exception as error:  # the scan found nothing, so say what the loader said, with the file
        cause = error.__cause__ or error
        raise DataError(f"{source.name}: could not be read as {fmt}: {cause}") from error
    return loaded["data"]


def _load_hub(name: str, config: str | None, cache_dir):
    try:
        loaded = datasets.load_dataset(name, config, cache_dir=cache_dir)
    except Exception as error:
        raise DataError(f"could not load the dataset {name!r} from the hub: {error}") from error
    raw = {}
    for split, candidates in {"train": ("train",), "validation": ("validation", "dev"), "test": ("test",)}.items():
        found = next((s for s in candidates if s in loaded), None)
        if found:
            raw[split] = loaded[found]
    for split in ("train", "validation"):
        if split not in raw:
            raise DataError(f"the dataset {name!r} has no {split} split (it has {list(loaded)}); use local files")
    sources = {split: Source(f"{name} ({split})") for split in raw}
    class_names = None
    label = next((c for c in LABEL_COLUMNS if c in raw["train"].features), None)
    if label and isinstance(raw["train"].features[label], datasets.ClassLabel):
        class_names = list(raw["train"].features[label].names)
    return raw, sources, class_names


def _detect(ds: datasets.Dataset, candidates, what: str, source: Source) -> str:
    for column in candidates:
        if column in ds.column_names:
            return column
    raise DataError(
        f"{source.where()}: no {what} column found (looked for {', '.join(candidates)}); its columns are "
        f"{ds.column_names}; choose one with --{what}-column"
    )


def _check_texts(ds: datasets.Dataset, source: Source, column: str) -> None:
    if len(ds) == 0:
        raise DataError(f"{source.where()}: no data rows")
    for row, text in enumerate(ds["text"]):
        problem = _text_problem(text, column)
        if problem:
            raise DataError(f"{source.where(row)}: {problem}")


def _text_problem(text, column: str) -> str | None:
    if text is None or (isinstance(text, str) and not text.strip()):
        return f"empty text in column {column!r}"
    if not isinstance(text, str):
        return f"the text in column {column!r} is {type(text).__name__}, not a string"
    return None


def _check_labels_present(ds: datasets.Dataset, source: Source, column: str) -> None:
    """Every row has a label, a number short enough for int(), and no NaN or infinity among numbers;
    a list of labels holds non-empty strings only."""
    values, keys = ds["label"], []
    for row, value in enumerate(values):
        if value is None or (isinstance(value, str) and not value.strip()):
            raise DataError(f"{source.where(row)}: missing label in column {column!r}")
        if isinstance(value, list):
            problem = _label_list_problem(value, column)
            if problem:
                raise DataError(f"{source.where(row)}: {problem}")
            continue
        try:
            keys.append(label_key(value))
        except ValueError:  # int() refuses more than 4,300 digits
            digits = len(str(value).strip().lstrip("+-"))
            raise DataError(
                f"{source.where(row)}: label in column {column!r} is a number of {digits:,} digits, too long"
            ) from None
    if any(isinstance(key, int) for key in keys):  # among numbers, "NaN" (or a float NaN) is a broken number, no class
        row = next((row for row, key in enumerate(keys) if isinstance(key, str) and _NON_FINITE.fullmatch(key)), None)
        if row is not None:
            raise DataError(f"{source.where(row)}: label {values[row]!r} in column {column!r} is not a finite number")


def _label_list_problem(labels: list, column: str) -> str | None:
    """What is wrong with a multi-label row's list, or None: every item must be a non-empty string."""
    for item in labels:
        if not isinstance(item, str) or not item.strip():
            what = "an empty string" if isinstance(item, str) else f"{json.dumps(item)} ({type(item).__name__})"
            return f"the label list in column {column!r} holds {what}; every label in a list must be a name (a string)"
    return None


def _label_kind(is_list: bool) -> str:
    return "a list of labels (multi-label)" if is_list else "a single label"


def _check_same_kind(ds, source: Source, multi_label: bool, train: Source, column: str) -> None:
    """A validation or test file labels its texts the way the training file does: lists, or single labels."""
    row = next((row for row, value in enumerate(ds["label"]) if isinstance(value, list) != multi_label), None)
    if row is not None:
        raise DataError(
            f"{source.where(row)}: {_label_kind(not multi_label)} in column {column!r}, but the training file"
            f" ({train.where()}) has {_label_kind(multi_label)} per text"
        )


def _multi_label_mapping(ds, names: list[str] | None, source: Source, column: str) -> tuple[list[str], dict]:
    """Class names and ids of multi-label data: `names` in its order (every label must be one of them),
    else the sorted union of the labels."""
    if names:
        names = [str(n) for n in names]
        for row, labels in enumerate(ds["label"]):
            unknown = next((label for label in labels if label not in names), None)
            if unknown is not None:
                raise DataError(
                    f"{source.where(row)}: label {unknown!r} in column {column!r} is not in label_names {names}"
                )
    else:
        names = sorted({label for labels in ds["label"] for label in labels})
        if not names:
            raise DataError(f"{source.where()}: every label list is empty; a classifier needs at least one label")
    return names, {name: i for i, name in enumerate(names)}


def _label_mapping(values, names: list[str] | None, source: Source) -> tuple[list[str], dict]:
    seen = {label_key(v) for v in values}
    if names:
        names = [str(n) for n in names]
        if all(isinstance(k, int) for k in seen):  # integer labels index the names
            bad = sorted(k for k in seen if not 0 <= k < len(names))
            if bad:
                raise DataError(f"{source.where()}: label {bad[0]} is out of range for label_names {names}")
            return names, {i: i for i in range(len(names))}
        unknown = sorted(str(k) for k in seen if k not in names)
        if unknown:
            raise DataError(f"{source.where()}: label {unknown[0]!r} is not in label_names {names}")
        return names, {name: i for i, name in enumerate(names)}
    if len(seen) < 2:
        raise DataError(f"{source.where()}: only one label ({next(iter(seen))!r}); a classifier needs two or more")
    ordered = sorted(seen) if all(isinstance(k, int) for k in seen) else sorted(seen, key=str)
    return [str(k) for k in ordered], {k: i for i, k in enumerate(ordered)}


def _check_known_labels(ds, source: Source, label2id: dict, train: Source, column: str) -> None:
    for row, value in enumerate(ds["label"]):
        if isinstance(value, list):  # multi-label: the names as written
            value = next((name for name in value if name not in label2id), None)
            known_label = value is None
        else:
            known_label = label_key(value) in label2id
        if not known_label:
            known = ", ".join(str(k) for k in label2id)
            raise DataError(
                f"{source.where(row)}: label {value!r} in column {column!r} does not occur in the training data"
                f" ({train.where()}; its labels: {known})"
            )


def _csv_reader(lines, fmt: str):
    if fmt == "tsv":
        return csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE)
    return csv.reader(lines)


def _read_header(path: Path, fmt: str) -> list[str]:
    with path.open(encoding="utf-8-sig", newline="") as f:  # -sig: without a leading byte-order mark
        return next(_csv_reader(f, fmt))


def _rows(lines, fmt: str) -> Iterator[tuple[int, list[str] | str]]:
    """(first line number, row) for every data row, skipping blank lines as the loaders do.

    A row is the list of fields for CSV/TSV (the header is yielded too, as line 1) and the raw
    line for JSON Lines. A quoted CSV field may span lines, hence "first" line number.
    """
    if fmt == "jsonl":
        for number, line in enumerate(lines, 1):
            if line.strip():
                yield number, line
        return
    reader = _csv_reader(lines, fmt)
    start = 1
    for fields in reader:
        if fields:
            yield start, fields
        start = reader.line_num + 1


class _Refused(ValueError):
    """A JSON value that json.loads takes but the loader cannot (the message says which)."""


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    record = {}
    for key, value in pairs:
        if key in record:
            raise _Refused(f"the key {key!r} appears twice")
        record[key] = value
    return record


def _finite_number(convert):
    """A json.loads number hook refusing what overflows a float: the loader cannot hold it, int() may refuse it."""

    def parse(text: str):
        if math.isinf(float(text)):
            number = f"the number {text}" if len(text) <= 20 else f"a number of {len(text.lstrip('-')):,} digits"
            raise _Refused(f"{number} is too large")
        return convert(text)

    return parse


_JSON_HOOKS = dict(object_pairs_hook=_unique_keys, parse_int=_finite_number(int), parse_float=_finite_number(float))


def _nested_deeper(record: dict, levels: int) -> bool:
    """Whether lists and objects nest more than `levels` deep (the record is the first level). No recursion."""
    nodes = [record]
    for _ in range(levels):
        nodes = [
            child
            for node in nodes
            for child in (node.values() if isinstance(node, dict) else node)
            if isinstance(child, (dict, list))
        ]
        if not nodes:
            return False
    return True


def _record_problem(record: dict, text_columns, label_columns) -> str | None:
    """Too deep, a text that is no string, a NaN/infinite label or a label list holding anything but names:
    the loader would fail without a line or garble it."""
    if _nested_deeper(record, _MAX_DEPTH):
        return _TOO_DEEP
    text_column = next((c for c in text_columns if c in record), None)
    problem = _text_problem(record[text_column], text_column) if text_column else None
    if problem:
        return problem
    label_column = next((c for c in label_columns if c in record), None)
    label = record.get(label_column)
    if isinstance(label, float) and not math.isfinite(label):
        return f"label {label} in column {label_column!r} is not a finite number"
    if isinstance(label, list):
        return _label_list_problem(label, label_column)
    if isinstance(label, dict):
        return f"the label in column {label_column!r} is a JSON object; a label is a name, a number or a list of names"
    return None


def _has_lone_surrogate(record: dict) -> bool:
    """Whether a string in the record is half of a UTF-16 pair (JSON's "\\ud83d" alone): no text can hold it."""
    try:
        json.dumps(record, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _scan(path: Path, fmt: str, text_columns: tuple[str, ...], label_columns: tuple[str, ...]) -> str | None:
    """The first problem that would stop or garble the loader ('line N: ...'), or None. One pass, stdlib only.

    `text_columns` and `label_columns`: the names to look for in a JSON Lines record, the first present wins.
    """
    raw = path.read_bytes()
    if not raw.strip():
        return "the file is empty"
    try:
        text = raw.decode("utf-8").removeprefix("\ufeff")  # a byte-order mark is no part of the header
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        return f"line {line}: not valid UTF-8 ({error.reason})"
    # Split on newlines only, as files read with newline="" are: str.splitlines would also split on
    # U+2028 or U+0085 inside a JSON string (IMDB's train.jsonl has them).
    rows = _rows(io.StringIO(text, newline=""), fmt)
    header, count, number = None, 0, 0
    first_label: tuple[int, bool] | None = None  # JSON Lines: (line, whether it is a list) of the first label
    try:
        for number, row in rows:
            if fmt == "jsonl":
                try:
                    record = json.loads(row, **_JSON_HOOKS)
                except json.JSONDecodeError as error:
                    return f"line {number}: not valid JSON ({error.msg} at column {error.colno})"
                except _Refused as error:
                    return f"line {number}: {error}"
                except RecursionError:  # past Python's recursion limit
                    return f"line {number}: {_TOO_DEEP}"
                if not isinstance(record, dict):
                    return f"line {number}: expected a JSON object, found {type(record).__name__}"
                if "\\ud" in row.lower() and _has_lone_surrogate(record):
                    return (
                        f"line {number}: a string holds a lone surrogate escape (\\ud800-\\udfff alone), no character"
                    )
                problem = _record_problem(record, text_columns, label_columns)
                if problem:
                    return f"line {number}: {problem}"
                label_column = next((c for c in label_columns if c in record), None)
                if label_column is not None and record[label_column] is not None:
                    is_list = isinstance(record[label_column], list)
                    first_label = first_label or (number, is_list)
                    if is_list != first_label[1]:
                        return (
                            f"line {number}: {_label_kind(is_list)} in column {label_column!r}, but line"
                            f" {first_label[0]} has {_label_kind(first_label[1])}; a file gives every text one label"
                            " or every text a list"
                        )
            elif header is None:
                header = row
                named = [name for name in header if name]  # unnamed columns are ignored
                if len(set(named)) != len(named):
                    return f"line {number}: duplicate column names in the header {header}"
                continue
            elif len(row) != len(header):
                hint = "tabs" if fmt == "tsv" else "commas or quotes"
                return (
                    f"line {number}: expected {len(header)} fields like the header {header}, found {len(row)}"
                    f" (check for stray {hint})"
                )
            count += 1
    except csv.Error as error:
        return f"line {number + 1}: {error}"
    return None if count else "no data rows"


def _line_of_row(path: Path, fmt: str, row: int) -> int:
    """The line where 0-based data row `row` starts (1-based, counting the header)."""
    with path.open(encoding="utf-8", newline="") as f:
        rows = _rows(f, fmt)
        if fmt != "jsonl":
            next(rows)  # the header
        for index, (number, _) in enumerate(rows):
            if index == row:
                return number
    raise IndexError(f"{path} has no data row {row}")
