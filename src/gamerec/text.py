"""Tokenizer and vocabulary for item text, without torchtext.

Item text (title plus description) becomes a CSR matrix of token ids: row i holds the tokens
of item i, ready for `torch.nn.EmbeddingBag(input=indices, offsets=indptr[:-1])`.
Token id 0 is reserved for unknown tokens; out-of-vocabulary tokens are dropped from the
prepared rows (an all-unknown bag would only add noise), so the CSR holds ids >= 1.
"""

from __future__ import annotations

import html
import re
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

from gamerec.csr import Csr

UNKNOWN = "<unk>"

_TAG = re.compile(r"<[^>]*>")
_CSS = re.compile(r"[.#]?[\w-]+\s*\{[^}]*\}")  # style fragments that leak into scraped fields
_TOKEN = re.compile(r"[a-z0-9]+")


def tokenize(text: str) -> list[str]:
    """Lower-case word and number tokens of `text`, with HTML tags, CSS and entities removed."""
    text = html.unescape(_CSS.sub(" ", _TAG.sub(" ", text)))
    return _TOKEN.findall(text.lower())


def build_vocabulary(docs: Iterable[Sequence[str]], min_count: int, max_size: int) -> list[str]:
    """Tokens seen at least `min_count` times, most frequent first, at most `max_size` of them.

    Returns the id-to-token list with `UNKNOWN` at index 0. Ties in frequency are broken
    alphabetically so the vocabulary is the same on every machine.
    """
    counts = Counter(token for doc in docs for token in doc)
    kept = sorted((t for t, c in counts.items() if c >= min_count), key=lambda t: (-counts[t], t))
    return [UNKNOWN, *kept[:max_size]]


def encode_csr(
    docs: Sequence[Sequence[str]], vocabulary: Sequence[str], max_tokens: int
) -> Csr:
    """Encode tokenized docs as CSR (indptr int64, indices int32), at most `max_tokens` per row.

    Tokens not in `vocabulary` are dropped; the first `max_tokens` known tokens are kept, in
    text order.
    """
    index = {token: i for i, token in enumerate(vocabulary) if i > 0}
    rows = [[index[t] for t in doc if t in index][:max_tokens] for doc in docs]
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    indptr = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    indices = np.fromiter((t for r in rows for t in r), dtype=np.int32, count=int(indptr[-1]))
    return Csr(indptr, indices)
