"""Nearest-neighbour search over item embeddings with faiss: exact (flat) or HNSW.

Scores are inner products, as in the evaluation (the model's embeddings are normalised, so
an inner product is a cosine). An index's rows are the rows of the export's `items.parquet`.
A query can exclude rows (a user's own games): the search fetches that many more
candidates and drops them, so flat search returns exactly what the evaluation's ranking
returns, and HNSW approximates it.
"""

from __future__ import annotations

from contextlib import contextmanager
from collections.abc import Iterator

import faiss
import numpy as np

from gamerec.csr import Csr  # row q of an exclusion lists the rows query q must not get

KINDS = ("flat", "hnsw")


@contextmanager
def _one_thread() -> Iterator[None]:
    """faiss builds HNSW graphs in parallel in a thread-dependent order; one thread keeps the file reproducible."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def build(vectors: np.ndarray, kind: str, m: int = 32, ef_construction: int = 200) -> faiss.Index:
    """An inner-product index over `vectors` ([n, dim] float32): `flat` (exact) or `hnsw` (graph)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if kind == "flat":
        index = faiss.IndexFlatIP(vectors.shape[1])
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(vectors.shape[1], m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
    else:
        raise ValueError(f"unknown index kind {kind!r}; expected one of {KINDS}")
    with _one_thread():
        index.add(vectors)
    return index


def kind_of(index: faiss.Index) -> str:
    """`flat` or `hnsw`, for an index read back from disk."""
    return "hnsw" if isinstance(faiss.downcast_index(index), faiss.IndexHNSW) else "flat"


def search(index: faiss.Index, queries: np.ndarray, k: int, exclude: Csr | None = None,
           ef_search: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """(scores, rows), each [len(queries), k], best first, without each query's excluded rows.

    Where fewer than k rows remain, the tail is padded with row -1 and score -inf. HNSW
    searches at least `ef_search` candidates, and at least as many as it must return.
    """
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    n = len(queries)
    if exclude is None:
        exclude = (np.zeros(n + 1, np.int64), np.zeros(0, np.int64))
    indptr, indices = exclude
    counts = np.diff(indptr)
    fetch = max(1, min(index.ntotal, k + int(counts.max(initial=0))))
    params = None
    if kind_of(index) == "hnsw":
        params = faiss.SearchParametersHNSW(efSearch=max(ef_search, fetch))
    scores, rows = index.search(queries, fetch, params=params)
    # a candidate is dropped when it is padding (-1) or one of its query's excluded rows
    banned = np.repeat(np.arange(n, dtype=np.int64), counts) * index.ntotal + indices
    drop = (rows < 0) | np.isin(np.arange(n, dtype=np.int64)[:, None] * index.ntotal + rows, banned)
    order = np.argsort(drop, axis=1, kind="stable")[:, :k]  # kept candidates first, in score order
    rows, scores = np.take_along_axis(rows, order, 1), np.take_along_axis(scores, order, 1)
    dropped = np.take_along_axis(drop, order, 1)
    rows[dropped], scores[dropped] = -1, -np.inf
    if rows.shape[1] < k:  # a catalogue smaller than k
        pad = k - rows.shape[1]
        rows = np.pad(rows, ((0, 0), (0, pad)), constant_values=-1)
        scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
    return scores, rows
