"""The word-level tokenizer (a `tokenizers` Tokenizer) shared by training and the served bundle.

Training encodes with the very object that export writes as `tokenizer.json`, so the service
tokenises exactly as training did. Special tokens keep GenSen's ids: <s>=0 <pad>=1 </s>=2 <unk>=3.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
from tokenizers.processors import TemplateProcessing

SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>")
PAD, UNK = "<pad>", "<unk>"


def new_tokenizer(
    vocab: dict[str, int] | None, lowercase: bool, bos_eos: bool = False
) -> Tokenizer:
    """A word-level tokenizer: NFKC (+ lowercase), split on whitespace and punctuation."""
    tokenizer = Tokenizer(models.WordLevel(vocab or {}, unk_token=UNK))
    steps = [normalizers.NFKC()] + ([normalizers.Lowercase()] if lowercase else [])
    tokenizer.normalizer = normalizers.Sequence(steps)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    if bos_eos:
        tokenizer.post_processor = TemplateProcessing(
            single="<s> $A </s>", special_tokens=[("<s>", vocab["<s>"]), ("</s>", vocab["</s>"])]
        )
    return tokenizer


def train_tokenizer(sentences: Iterable[str], vocab_size: int, lowercase: bool = True) -> Tokenizer:
    """Learn the vocabulary: the `vocab_size` most frequent words, special tokens first."""
    tokenizer = new_tokenizer(None, lowercase)
    trainer = trainers.WordLevelTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False
    )
    tokenizer.train_from_iterator(sentences, trainer=trainer)
    return tokenizer


def encode(tokenizer: Tokenizer, sentences: list[str], max_tokens: int) -> list[list[int]]:
    """Token ids per sentence, truncated to `max_tokens`; an empty sentence becomes [<unk>]."""
    unk = tokenizer.token_to_id(UNK)
    return [e.ids[:max_tokens] or [unk] for e in tokenizer.encode_batch(sentences)]


def pad_batch(rows: list[list[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded int64 ids [batch, longest] and lengths [batch]."""
    lengths = np.array([len(r) for r in rows], dtype=np.int64)
    ids = np.full((len(rows), int(lengths.max())), pad_id, dtype=np.int64)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
    return ids, lengths
