"""WordPiece or BPE for Gaze? Train both on the same text and compare how they cut it.

Both tokenizers use Gaze's normalizer and `BertPreTokenizer` (model/tokenization.py), the same
8192-entry vocabulary, the same special tokens and min_frequency=2; WordPiece is trained by
`model.tokenization.train_tokenizer` itself, so it is exactly what ships. BPE is character-level
BPE with the same "##" continuation prefix, so only the subword algorithm differs.

Training text: SST-2 train sentences + the first --imdb-lines reviews of IMDB unsup.txt and of
IMDB train.jsonl. Evaluation: SST-2 dev, and the last --heldout reviews of unsup.txt (never trained on).
A "word" is a pre-token (what the normalizer and pre-tokenizer produce); both tokenizers see the
same words, so tokens per word compare directly (1.0 = no word split).

    nice -n 10 .venv/bin/python benchmarks/tokenizer_choice.py
"""

import argparse
import csv
import datetime
import json
import os
import platform
import sys
import time
from collections import Counter
from itertools import islice
from pathlib import Path

import tokenizers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model.tokenization import SPECIAL_TOKENS, UNK, normalizer, train_tokenizer  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
RESULTS = Path(__file__).resolve().parent / "results" / "tokenizer_choice.json"


def read_sst2(split: str) -> list[str]:
    with open(DATA / "sst2" / f"{split}.tsv", encoding="utf-8", newline="") as f:
        return [row["sentence"] for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]


def read_lines(path: Path, n: int) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in islice(f, n)]


def read_jsonl_texts(path: Path, n: int) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in islice(f, n)]


def train_wordpiece(texts: list[str], vocab_size: int) -> Tokenizer:
    return train_tokenizer(texts, vocab_size=vocab_size, show_progress=False).backend_tokenizer


def train_bpe(texts: list[str], vocab_size: int) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE(unk_token=UNK, continuing_subword_prefix="##"))
    tokenizer.normalizer = normalizer()
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        continuing_subword_prefix="##",
        show_progress=False,
    )
    tokenizer.train_from_iterator((t for t in texts if t and not t.isspace()), trainer=trainer)
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    return tokenizer


def measure(tokenizer: Tokenizer, texts: list[str]) -> dict:
    """Tokens per word, UNK rate and words split into more than one piece, over `texts`.

    The model tokenizes each pre-token on its own, so each distinct word is encoded once and
    weighted by how often it occurs.
    """
    norm, pre = tokenizer.normalizer, tokenizer.pre_tokenizer
    counts = Counter(word for text in texts for word, _ in pre.pre_tokenize_str(norm.normalize_str(text)))
    types = list(counts)
    unk_id = tokenizer.token_to_id(UNK)
    encodings = tokenizer.encode_batch([[w] for w in types], is_pretokenized=True, add_special_tokens=False)
    words = sum(counts.values())
    tokens = sum(counts[w] * len(e.ids) for w, e in zip(types, encodings, strict=True))
    unks = sum(counts[w] * e.ids.count(unk_id) for w, e in zip(types, encodings, strict=True))
    split_types = [w for w, e in zip(types, encodings, strict=True) if len(e.ids) > 1]
    split = sum(counts[w] for w in split_types)
    return {
        "words": words,
        "tokens": tokens,
        "tokens_per_word": tokens / words,
        "unk_tokens": unks,
        "unk_rate": unks / tokens,
        "split_words": split,
        "split_word_rate": split / words,
        "word_types": len(types),
        "split_word_types": len(split_types),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--imdb-lines", type=int, default=20_000, help="reviews taken from each IMDB file")
    parser.add_argument("--heldout", type=int, default=1_000, help="last reviews of unsup.txt, kept out")
    parser.add_argument("--repeats", type=int, default=2, help="training runs per tokenizer; the fastest counts")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    unsup = read_lines(DATA / "imdb" / "unsup.txt", 50_000)
    if args.imdb_lines > len(unsup) - args.heldout:
        parser.error("--imdb-lines overlaps the held-out reviews")
    train_texts = (
        read_sst2("train") + unsup[: args.imdb_lines] + read_jsonl_texts(DATA / "imdb" / "train.jsonl", args.imdb_lines)
    )
    eval_sets = {"sst2_dev": read_sst2("dev"), "imdb_heldout": unsup[-args.heldout :]}

    # Alternate the two trainers and keep each one's fastest run, so neither pays for a cold cache.
    trainers_ = {"WordPiece": train_wordpiece, "BPE": train_bpe}
    seconds: dict[str, list[float]] = {name: [] for name in trainers_}
    trained: dict[str, Tokenizer] = {}
    for _ in range(args.repeats):
        for name, train in trainers_.items():
            start = time.perf_counter()
            trained[name] = train(train_texts, args.vocab_size)
            seconds[name].append(time.perf_counter() - start)
            print(f"{name}: trained in {seconds[name][-1]:.1f} s", file=sys.stderr)

    vocabularies = {name: set(tokenizer.get_vocab()) for name, tokenizer in trained.items()}
    shared = len(set.intersection(*vocabularies.values()))
    results = {
        name: {
            "train_seconds": round(min(seconds[name]), 2),
            "train_seconds_all": [round(s, 2) for s in seconds[name]],
            "vocab_size": tokenizer.get_vocab_size(),
            "vocab_shared_with_other": shared,
            **{split: measure(tokenizer, texts) for split, texts in eval_sets.items()},
        }
        for name, tokenizer in trained.items()
    }

    report = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}",
        "tokenizers": tokenizers.__version__,
        "vocab_size": args.vocab_size,
        "train_texts": len(train_texts),
        "imdb_lines_per_file": args.imdb_lines,
        "eval_texts": {split: len(texts) for split, texts in eval_sets.items()},
        "results": results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(markdown_table(results))


def markdown_table(results: dict) -> str:
    rows = [
        ("training time (s, best of runs)", lambda r: f"{r['train_seconds']:.1f}"),
        ("vocabulary size reached", lambda r: f"{r['vocab_size']}"),
        ("entries shared with the other vocabulary", lambda r: f"{r['vocab_shared_with_other']}"),
        ("tokens per word, SST-2 dev", lambda r: f"{r['sst2_dev']['tokens_per_word']:.3f}"),
        ("tokens per word, IMDB held-out", lambda r: f"{r['imdb_heldout']['tokens_per_word']:.3f}"),
        ("UNK rate, SST-2 dev", lambda r: f"{r['sst2_dev']['unk_rate']:.4%} ({r['sst2_dev']['unk_tokens']} tokens)"),
        (
            "UNK rate, IMDB held-out",
            lambda r: f"{r['imdb_heldout']['unk_rate']:.4%} ({r['imdb_heldout']['unk_tokens']} tokens)",
        ),
        (
            "SST-2 dev words split into >1 piece",
            lambda r: (
                f"{r['sst2_dev']['split_words']} of {r['sst2_dev']['words']} ({r['sst2_dev']['split_word_rate']:.1%})"
            ),
        ),
        (
            "distinct SST-2 dev words split",
            lambda r: f"{r['sst2_dev']['split_word_types']} of {r['sst2_dev']['word_types']}",
        ),
    ]
    names = list(results)
    lines = ["| | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names)]
    lines += [f"| {label} | " + " | ".join(cell(results[n]) for n in names) + " |" for label, cell in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
