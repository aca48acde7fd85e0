"""Unlabelled documents for pretraining (training.pretrain, training.word_vectors): a hub dataset or local files."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import datasets

from training.config import RunError, setting


@dataclass(frozen=True)
class TextArgs:
    """The unlabeled text: local files or a hub dataset."""

    train_files: list[str] | None = setting(
        None, "text files: .txt (one document per line), .jsonl, .tsv or .csv; several as repeated values"
    )
    dataset: str | None = setting(None, "or a hub dataset id (its train split)")
    text_column: str | None = setting(None, "default: text, else sentence")


def read_documents(cfg: TextArgs) -> datasets.Dataset:
    """One row per document, in a column named "text"; labels and other columns are dropped."""
    if cfg.dataset:
        parts = [(cfg.dataset, datasets.load_dataset(cfg.dataset, split="train"))]
    elif cfg.train_files:
        parts = [(file, _load_text_file(Path(file))) for file in cfg.train_files]
    else:
        raise RunError("give --train-files PATH [PATH ...] or --dataset HUB_ID")
    columns = []
    for source, part in parts:
        candidates = [cfg.text_column] if cfg.text_column else ["text", "sentence"]
        column = next((c for c in candidates if c in part.column_names), None)
        if column is None:
            raise RunError(f"{source}: no text column {candidates} (columns: {part.column_names})")
        part = part.select_columns([column])
        part = part if column == "text" else part.rename_column(column, "text")
        columns.append(part.cast(datasets.Features({"text": datasets.Value("large_string")})))
    documents = datasets.concatenate_datasets(columns)
    return documents.filter(lambda row: bool(row["text"] and row["text"].strip()))


def _load_text_file(path: Path) -> datasets.Dataset:
    if not path.is_file():
        raise RunError(f"training text file not found: {path}")
    if path.suffix in (".jsonl", ".json"):
        return datasets.load_dataset("json", data_files=str(path), split="train")
    if path.suffix in (".tsv", ".csv"):
        delimiter = "\t" if path.suffix == ".tsv" else ","
        quoting = csv.QUOTE_NONE if path.suffix == ".tsv" else csv.QUOTE_MINIMAL  # GLUE TSVs are unquoted
        return datasets.load_dataset("csv", data_files=str(path), delimiter=delimiter, quoting=quoting, split="train")
    return datasets.load_dataset("text", data_files=str(path), split="train")


def dataset_names(cfg: TextArgs) -> list[str]:
    """The names a model card gives the documents: the hub id, or the files' names."""
    return [cfg.dataset] if cfg.dataset else [Path(file).name for file in cfg.train_files]
