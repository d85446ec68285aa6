"""Tokenisation with the bundle's `tokenizer.json` (the `tokenizers` library).

The tokenizer file carries the normalisation (lowercasing included), the pre-tokeniser and the
special tokens; this module only loads it and runs it, off the event loop when that pays. Texts
are tokenised whole: what happens past the model's limit is `service.windows`' concern.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from service.bundle import BundleError

PAD_TOKEN = "<pad>"
# The Rust tokenizer releases the GIL, so a request's texts are tokenised on a thread of
# its own pool, in parallel with the event loop, which pays only the hand-over (a fifth of
# tokenising eight sentences there). Texts this short are tokenised on the loop: the
# hand-over would cost more than the work. So is everything while the pool's threads are all
# busy: a thread needs the GIL twice per request, and behind a saturated loop each hand-over
# can wait its 5 ms switch interval, so that a queue in front of the pool would grow without
# bound (seconds of latency under overload); the loop doing the work itself never falls behind.
INLINE_CHARS = 128
TOKENIZER_THREADS = 8


@dataclass(frozen=True, slots=True)
class Encoded:
    """Token ids of a list of texts, in order, each whole, and where asked for, each token's
    character span [start, stop) in its text."""

    ids: list[list[int]]
    offsets: list[list[tuple[int, int]]] | None = None


class TextTokenizer:
    """The bundle's tokenizer; `max_tokens` is the model's limit, the size of a window."""

    def __init__(self, path: Path, max_tokens: int) -> None:
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:
            raise BundleError(f"bundle {path.parent}: {path.name} does not load ({exc})") from exc
        pad_id = tokenizer.token_to_id(PAD_TOKEN)
        if pad_id is None:
            raise BundleError(f"bundle {path.parent}: {path.name} has no {PAD_TOKEN} token")
        tokenizer.no_padding()
        tokenizer.no_truncation()
        self._tokenizer = tokenizer
        self._threads = ThreadPoolExecutor(TOKENIZER_THREADS, thread_name_prefix="gensen-tokenizer")
        self._in_threads = 0  # requests being tokenised by the pool now
        self.pad_id: int = pad_id
        self.max_tokens = max_tokens
        self.vocab_size: int = tokenizer.get_vocab_size()

    def encode(self, texts: list[str], offsets: bool = False) -> Encoded:
        """Token ids of `texts`, each whole, and with `offsets` their character spans
        (blocking; safe in any thread).

        One call into the Rust tokenizer for the whole list, without character offsets unless
        asked (only the requests that ask where their windows lie need them, and computing them
        costs). The service runs it single-threaded (TOKENIZERS_PARALLELISM=false, set by
        `service.server`): requests run in parallel already, and its thread pool only adds CPU.
        """
        if not offsets:
            return Encoded([encoding.ids for encoding in self._tokenizer.encode_batch_fast(texts)])
        encodings = self._tokenizer.encode_batch(texts)
        return Encoded([e.ids for e in encodings], [e.offsets for e in encodings])

    def tokens(self, texts: list[str], add_special_tokens: bool) -> list[list[dict[str, Any]]]:
        """Each text's tokens as text-embeddings-inference's /tokenize lists them: id, text,
        whether special, and the character span (None for a special token)."""
        out = []
        for encoding in self._tokenizer.encode_batch(texts, add_special_tokens=add_special_tokens):
            row = []
            for token_id, token, special, (start, stop) in zip(
                encoding.ids,
                encoding.tokens,
                encoding.special_tokens_mask,
                encoding.offsets,
                strict=True,
            ):
                span = (None, None) if special else (start, stop)
                row.append(
                    {
                        "id": token_id,
                        "text": token,
                        "special": bool(special),
                        "start": span[0],
                        "stop": span[1],
                    }
                )
            out.append(row)
        return out

    def decode(self, ids: list[list[int]], skip_special_tokens: bool) -> list[str]:
        """Texts of token id rows; an id outside the vocabulary raises ValueError naming it."""
        size = self.vocab_size
        for i, row in enumerate(ids):
            for j, token_id in enumerate(row):
                if not 0 <= token_id < size:
                    raise ValueError(f"ids[{i}][{j}] is {token_id}; ids run from 0 to {size - 1}")
        return self._tokenizer.decode_batch(ids, skip_special_tokens=skip_special_tokens)

    async def encode_async(
        self,
        texts: list[str],
        check: Callable[[list[str]], None] | None = None,
        offsets: bool = False,
    ) -> Encoded:
        """`encode` without blocking the event loop on large requests.

        `check(texts)`, when given, runs first, in the same place (on the loop or in the thread).
        """
        if self._in_threads >= TOKENIZER_THREADS or sum(map(len, texts)) <= INLINE_CHARS:
            return self._checked_encode(texts, check, offsets)
        self._in_threads += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(
                self._threads, self._checked_encode, texts, check, offsets
            )
        finally:
            self._in_threads -= 1

    def _checked_encode(
        self, texts: list[str], check: Callable[[list[str]], None] | None, offsets: bool
    ) -> Encoded:
        if check is not None:
            check(texts)
        return self.encode(texts, offsets)
