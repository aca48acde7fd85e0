"""A starting point for pretraining: Gaze's token embeddings from word2vec, trained in minutes.

    python -m training.word_vectors --train-files corpus.txt --output-dir runs/vectors [--key value ...]

Word vectors are where a 2014 CNN gets most of its lead over one with random embeddings (Kim
2014: CNN-static vs CNN-rand). gensim's word2vec (skip-gram, negative sampling; Mikolov et al.
2013) learns one vector per token of our WordPiece vocabulary from the same unlabeled text the
encoder is pretrained on, in minutes on a CPU. The output is a bare Gaze encoder folder whose word
embeddings are those vectors (scaled to `vector_std`) and whose other weights are random:
`training.train --init-from` fine-tunes from it (it is what `checkpoints/gaze-base` holds), and
`training.pretrain --init-from` can continue from it.
"""

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from gensim.models import Word2Vec
from gensim.models.callbacks import CallbackAny2Vec
from tqdm import tqdm

from model import GazeModel
from model.card import write_model_card
from training.checkpoints import claim_output_dir, save_pretrained_atomically
from training.config import ModelSizeArgs, OutputArgs, TokenizerArgs, run_script, setting
from training.documents import TextArgs, dataset_names, read_documents
from training.runtime import make_accelerator
from training.start import load_or_train_tokenizer, new_model_config


@dataclass(frozen=True)
class WordVectorArgs(TextArgs, TokenizerArgs, ModelSizeArgs, OutputArgs):
    """word2vec token embeddings for a new encoder."""

    window: int = setting(5, "context tokens on each side", minimum=1)
    negative: int = setting(5, "negative samples per positive", minimum=1)
    epochs: int = setting(5, "passes over the text", minimum=1)
    # word2vec's scale is arbitrary. 10x the other weights' initial std: fine-tuning (Adam, which moves every
    # weight by about the learning rate per step) then keeps more of the vectors; at 0.02 CR scored 1 point
    # less (benchmarks/accuracy.md, "gaze-base from word vectors alone").
    vector_std: float = setting(0.2, "the std the vectors are scaled to (the other weights start at 0.02)", above=0)
    output_dir: str = setting("runs/vectors", "the folder of the saved encoder")


def main(argv: list[str] | None = None) -> None:
    run_script(train_vectors, WordVectorArgs, argv)


def train_vectors(cfg: WordVectorArgs) -> dict:
    accelerator = make_accelerator(cfg.seed)
    claim_output_dir(accelerator, cfg.output_dir, cfg.overwrite_output_dir)
    documents = read_documents(cfg)
    run_copy = Path(cfg.output_dir) / "checkpoints" / "tokenizer"
    tokenizer = load_or_train_tokenizer(cfg, lambda: documents["text"], accelerator, run_copy, None)

    texts, tokens = documents["text"], []
    for start in tqdm(range(0, len(texts), 1000), desc="Tokenizing", unit=" x1000 docs"):
        encodings = tokenizer.backend_tokenizer.encode_batch(texts[start : start + 1000], add_special_tokens=False)
        tokens += [encoding.tokens for encoding in encodings]
    logging.getLogger("gensim").setLevel(logging.WARNING)
    vectors = Word2Vec(
        tokens,
        vector_size=cfg.hidden_size,
        window=cfg.window,
        negative=cfg.negative,
        sg=1,
        min_count=1,
        epochs=cfg.epochs,
        seed=cfg.seed,
        workers=torch.get_num_threads(),
        callbacks=[_Progress(cfg.epochs)],
    ).wv

    torch.manual_seed(cfg.seed)
    model = GazeModel(new_model_config(cfg, tokenizer, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    embeddings = model.embeddings.word_embeddings.weight
    known = {token: i for token, i in tokenizer.get_vocab().items() if token in vectors.key_to_index}
    with torch.no_grad():
        found = torch.tensor(vectors[list(known)])
        embeddings[list(known.values())] = found * (model.config.initializer_range / found.std())
        embeddings *= cfg.vector_std / model.config.initializer_range  # the random rows (specials, unseen) too
    results = {
        "documents": len(texts),
        "tokens": sum(map(len, tokens)),
        "vectors": len(known),
        "vocabulary": len(tokenizer),
    }

    def card(folder: Path) -> None:
        details = (
            f"## Pretraining\n\nToken embeddings from gensim word2vec (skip-gram, window {cfg.window}, "
            f"{cfg.negative} negative samples, {cfg.epochs} epochs) over {results['tokens']:,} tokens of "
            f"{results['documents']:,} documents (`training/word_vectors.py`); {results['vectors']:,} of "
            f"{results['vocabulary']:,} vocabulary entries have a vector; the embeddings are scaled to std "
            f"{cfg.vector_std}. All other weights are random."
        )
        write_model_card(folder, model.config, task="feature-extraction", datasets=dataset_names(cfg), details=details)

    save_pretrained_atomically(model, tokenizer, cfg.output_dir, card)
    accelerator.print(f"Saved the word-vector start to {cfg.output_dir}: {results}")
    return results


class _Progress(CallbackAny2Vec):
    """A progress bar over word2vec's epochs (gensim's own progress is a log)."""

    def __init__(self, epochs: int):
        self.bar = tqdm(total=epochs, desc="word2vec", unit=" epoch")

    def on_epoch_end(self, model) -> None:
        self.bar.update(1)


if __name__ == "__main__":
    main()
