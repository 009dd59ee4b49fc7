"""Nearest-neighbour search over item embeddings with faiss: exact (flat) or HNSW.

Scores are inner products, as in the evaluation (the model's embeddings are normalised, so
an inner product is a cosine). An index's rows are the rows of the export's `items.parquet`.
A query can exclude rows (a user's own games) and keep only the rows a filter allows: both
are one faiss ID selector handed to the search itself, so the search never returns a row it
must drop and never fetches more than k. Flat search then returns exactly what the
evaluation's ranking returns, and HNSW approximates it.
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


def _selector(allowed: faiss.IDSelector | None, excluded: np.ndarray) -> faiss.IDSelector | None:
    """The rows a query may get: those `allowed` selects (all when None) that are not `excluded`."""
    if not len(excluded):
        return allowed
    others = faiss.IDSelectorNot(faiss.IDSelectorBatch(excluded))
    return others if allowed is None else faiss.IDSelectorAnd(allowed, others)


def _search_one(index: faiss.Index, query: np.ndarray, k: int, selector: faiss.IDSelector | None,
                ef_search: int, reachable: int) -> tuple[np.ndarray, np.ndarray]:
    """One query's (scores, rows) among the rows `selector` keeps, of which there are `reachable`."""
    if kind_of(index) == "flat":
        return index.search(query, k, params=faiss.SearchParameters(sel=selector))
    scores, rows = index.search(query, k, params=faiss.SearchParametersHNSW(sel=selector, efSearch=max(ef_search, k)))
    if (rows >= 0).sum() < min(k, reachable):
        # A filter that leaves few rows can hide them from the graph walk (it visits efSearch
        # nodes, selected or not): search those rows exactly, in the index's own vector store.
        storage = faiss.downcast_index(faiss.downcast_index(index).storage)
        scores, rows = storage.search(query, k, params=faiss.SearchParameters(sel=selector))
    return scores, rows


def search(index: faiss.Index, queries: np.ndarray, k: int, exclude: Csr | None = None,
           ef_search: int = 128, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(scores, rows), each [len(queries), k], best first, without each query's excluded rows.

    `allowed` (a bool per index row, shared by the queries) keeps only the rows it marks.
    Where fewer than k rows remain, the tail is padded with row -1 and score -inf. HNSW
    searches at least `ef_search` candidates, and at least k. Each query is one faiss call,
    since faiss takes one selector per call and each query excludes its own rows.
    """
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    n = len(queries)
    exclude = Csr.empty(n) if exclude is None else Csr(*exclude)
    if allowed is None:
        base, total = None, index.ntotal
    else:
        allowed = np.asarray(allowed, bool)
        base, total = faiss.IDSelectorBitmap(np.packbits(allowed, bitorder="little")), int(allowed.sum())
    scores, rows = np.full((n, k), -np.inf, np.float32), np.full((n, k), -1, np.int64)
    for q in range(n):
        excluded = np.unique(exclude.indices[exclude.indptr[q] : exclude.indptr[q + 1]]).astype(np.int64)
        reachable = total - (len(excluded) if allowed is None else int(allowed[excluded].sum()))
        if reachable:
            scores[q], rows[q] = _search_one(index, queries[q : q + 1], k, _selector(base, excluded), ef_search,
                                             reachable)
    scores[rows < 0] = -np.inf  # faiss pads with -FLT_MAX
    return scores, rows
