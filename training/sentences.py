"""Split labeled documents into labeled sentences: `python -m training.sentences IN.jsonl OUT.jsonl`.

Each sentence of a review inherits the review's label (distant supervision). It turns IMDB's 25,000
long reviews into 308,396 short (at least 3 words), SST-2-like training sentences (benchmarks/accuracy.md, row 7).
Input and output are JSON Lines with "text" and "label"; HTML line breaks (`<br />`) end sentences.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from tqdm import tqdm

from training.checkpoints import staged

_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
# A sentence ends at . ! or ? before whitespace; closing quotes or brackets right after it are dropped
# with the whitespace (the unbalanced opening one stays: harmless to a subword classifier).
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+")


def split_sentences(text: str, min_words: int) -> list[str]:
    sentences = []
    for paragraph in _BREAK.split(text):
        for sentence in _SENTENCE_END.split(paragraph):
            sentence = sentence.strip()
            if len(sentence.split()) >= min_words:
                sentences.append(sentence)
    return sentences


def split_file(source: Path, target: Path, min_words: int = 3) -> tuple[int, int]:
    """Write `target` (via a temporary file, so a bad row leaves nothing half-written); returns the counts
    of documents read and sentences written."""
    documents = sentences = 0
    with source.open(encoding="utf-8") as rows, staged(target) as staging, staging.open("w", encoding="utf-8") as sink:
        for line_number, line in enumerate(tqdm(rows, desc="documents", unit=" docs"), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                text, label = row["text"], row["label"]
            except (json.JSONDecodeError, KeyError, TypeError) as error:
                raise ValueError(
                    f"{source}:{line_number}: not a JSON object with 'text' and 'label' ({error})"
                ) from None
            documents += 1
            for sentence in split_sentences(text, min_words):
                sink.write(json.dumps({"text": sentence, "label": label}, ensure_ascii=False) + "\n")
                sentences += 1
    return documents, sentences


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", type=Path, help="JSON Lines of {'text', 'label'} documents")
    parser.add_argument("output", type=Path, help="JSON Lines of {'text', 'label'} sentences")
    parser.add_argument("--min-words", type=int, default=3, help="drop shorter sentences (default 3)")
    args = parser.parse_args()
    try:
        documents, sentences = split_file(args.input, args.output, args.min_words)
    except ValueError as error:
        raise SystemExit(str(error)) from None
    print(f"{documents:,} documents → {sentences:,} sentences in {args.output}")


if __name__ == "__main__":
    main()
