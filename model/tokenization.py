"""Train Gaze's WordPiece tokenizer and wrap it for transformers.

One normalization serves both kinds of text we see. SST-2 is lower-cased and split the Penn
Treebank way ("does n't", "it 's"); IMDB reviews and user input are raw ("doesn't", "It's",
"<br />"). The normalizer lower-cases, strips accents and control characters, drops HTML line
breaks and splits "n't" the PTB way, so "doesn't" and "does n't" become the same tokens.
Every token keeps the character span it came from in the original text (`Encoding.offsets`).
"""

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS = [PAD, UNK, CLS, SEP, MASK]  # ids 0..4, as GazeConfig's defaults expect
ROLES = ("pad", "unk", "cls", "sep", "mask")  # the special tokens' roles, in the order above
GAZE_TOKENS = dict(zip(ROLES, SPECIAL_TOKENS, strict=True))

# "doesn't" → "does n't" by replacing the "n" before "'t" with " n". Replacing all of "n't" with " n't" gives
# the same text, but `tokenizers` then maps each new character to the match's last one, so "n", "'" and "t"
# would all claim the span of the "t". Tokenizers saved with that rule get this one when loaded (`realign`).
NT_SPLIT = {"type": "Replace", "pattern": {"Regex": "n(?='t\\b)"}, "content": " n"}
LEGACY_NT_SPLIT = {"type": "Replace", "pattern": {"Regex": "n't\\b"}, "content": " n't"}


def normalizer() -> normalizers.Normalizer:
    return normalizers.Sequence(
        [
            normalizers.Replace(Regex(r"<br\s*/?>"), " "),
            normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=True, lowercase=True),
            normalizers.Replace(Regex(NT_SPLIT["pattern"]["Regex"]), NT_SPLIT["content"]),  # "'s", "'re" split anyway
        ]
    )


def realign(tokenizer_json: str) -> str:
    """A tokenizer's JSON with the legacy "n't" rule swapped for `NT_SPLIT`: the same tokens, correct offsets."""
    state = json.loads(tokenizer_json)
    steps = (state.get("normalizer") or {}).get("normalizers") or []
    if LEGACY_NT_SPLIT not in steps:
        return tokenizer_json
    steps[steps.index(LEGACY_NT_SPLIT)] = NT_SPLIT
    return json.dumps(state)


def train_tokenizer(
    texts: Iterable[str], vocab_size: int = 8192, model_max_length: int = 512, show_progress: bool = True
) -> PreTrainedTokenizerFast:
    """Train a WordPiece vocabulary on `texts` and return it as a `PreTrainedTokenizerFast`."""
    tokenizer = Tokenizer(models.WordPiece(unk_token=UNK, max_input_chars_per_word=100))
    tokenizer.normalizer = normalizer()
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, min_frequency=2, special_tokens=SPECIAL_TOKENS, show_progress=show_progress
    )
    tokenizer.train_from_iterator(_non_empty(texts), trainer=trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{CLS} $A {SEP}",
        pair=f"{CLS} $A {SEP} $B:1 {SEP}:1",
        special_tokens=[(t, tokenizer.token_to_id(t)) for t in (CLS, SEP)],
    )
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    return wrap(tokenizer, model_max_length)


def named_special_tokens(folder: str | Path, defaults: dict[str, str] = GAZE_TOKENS) -> dict[str, str]:
    """Each role's token as a folder's special_tokens_map.json or tokenizer_config.json names it (a string
    or {"content": ...}; the latter file wins), else as `defaults` does."""
    named = dict(defaults)
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        try:
            settings = json.loads((Path(folder) / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        for role in ROLES:
            token = settings.get(f"{role}_token") if isinstance(settings, dict) else None
            token = token.get("content") if isinstance(token, dict) else token
            if isinstance(token, str):
                named[role] = token
    return named


def wrap(
    tokenizer: Tokenizer, model_max_length: int, pad: str = PAD, unk: str = UNK, cls: str = CLS, sep: str = SEP,
    mask: str = MASK, token_types: bool = False,
) -> PreTrainedTokenizerFast:  # fmt: skip
    """A transformers tokenizer over `tokenizer`, with its special tokens (Gaze's, unless an imported
    vocabulary names others) and only the inputs Gaze reads: `token_type_ids` too for a model with token types
    (BERT's segments: a text pair's second text is type 1), so that `tokenizer(a, b)` gives the model both."""
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token=pad,
        unk_token=unk,
        cls_token=cls,
        sep_token=sep,
        mask_token=mask,
        model_max_length=model_max_length,
        model_input_names=["input_ids", "attention_mask", *(["token_type_ids"] if token_types else [])],
    )


def _non_empty(texts: Iterable[str]) -> Iterator[str]:
    return (text for text in texts if text and not text.isspace())
