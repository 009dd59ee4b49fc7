"""faiss search with per-query exclusions, against brute force on small vectors."""

import numpy as np
import pytest

from gamerec import ann


def brute_force(items, queries, k, exclude, allowed=None):
    scores = queries @ items.T
    if allowed is not None:
        scores[:, ~allowed] = -np.inf
    for q in range(len(queries)):
        scores[q, exclude[1][exclude[0][q] : exclude[0][q + 1]]] = -np.inf
    rows = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    rows[np.take_along_axis(scores, rows, 1) == -np.inf] = -1
    return rows


def normalised(rng, n, dim=16):
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def csr(lists):
    indptr = np.cumsum([0, *map(len, lists)])
    return indptr, np.array([i for row in lists for i in row], dtype=np.int64)


def test_flat_search_is_brute_force_without_the_excluded_rows():
    rng = np.random.default_rng(0)
    items, queries = normalised(rng, 200), normalised(rng, 30)
    exclude = csr([list(rng.choice(200, size=q % 7, replace=False)) for q in range(30)])
    scores, rows = ann.search(ann.build(items, "flat"), queries, 10, exclude)
    assert np.array_equal(rows, brute_force(items, queries, 10, exclude))
    assert np.allclose(scores, np.take_along_axis(queries @ items.T, rows, 1), atol=1e-5)
    assert all(not set(rows[q]) & set(exclude[1][exclude[0][q] : exclude[0][q + 1]]) for q in range(30))


def test_a_filter_keeps_only_its_rows_inside_the_search():
    rng = np.random.default_rng(4)
    items, queries = normalised(rng, 300), normalised(rng, 20)
    allowed = rng.random(300) < 0.2  # a platform's share of the catalogue
    exclude = csr([list(rng.choice(300, size=q % 5, replace=False)) for q in range(20)])
    want = brute_force(items, queries, 10, exclude, allowed)
    for kind in ann.KINDS:
        scores, rows = ann.search(ann.build(items, kind), queries, 10, exclude, ef_search=64, allowed=allowed)
        assert allowed[rows].all()
        if kind == "flat":
            assert np.array_equal(rows, want)
        else:
            assert np.mean([len(set(f) & set(e)) / 10 for f, e in zip(rows, want)]) >= 0.95


def test_hnsw_finds_every_row_of_a_narrow_filter():
    rng = np.random.default_rng(5)
    items, query = normalised(rng, 3000), normalised(rng, 1)
    allowed = np.zeros(3000, bool)
    allowed[[3, 1500, 2999]] = True  # far fewer rows than the graph walk visits
    index = ann.build(items, "hnsw", m=8, ef_construction=40)
    scores, rows = ann.search(index, query, 5, csr([[1500]]), ef_search=16, allowed=allowed)
    assert list(rows[0]) == list(brute_force(items, query, 5, csr([[1500]]), allowed)[0])
    assert sorted(rows[0][:2]) == [3, 2999] and list(rows[0][2:]) == [-1, -1, -1] and np.isneginf(scores[0][2:]).all()
    _, rows = ann.search(index, query, 5, csr([[3, 2999]]), allowed=allowed & (np.arange(3000) != 1500))
    assert list(rows[0]) == [-1] * 5  # nothing left: no search at all


def test_hnsw_finds_nearly_what_exact_search_finds():
    rng = np.random.default_rng(1)
    centres = normalised(rng, 20)  # clustered, like learned item embeddings
    items = centres[rng.integers(0, 20, 5000)] + 0.3 * normalised(rng, 5000)
    queries = centres[rng.integers(0, 20, 200)] + 0.3 * normalised(rng, 200)
    exact = ann.search(ann.build(items, "flat"), queries, 10)[1]
    found = ann.search(ann.build(items, "hnsw", m=16, ef_construction=100), queries, 10, ef_search=64)[1]
    recall = np.mean([len(set(f) & set(e)) / 10 for f, e in zip(found, exact)])
    assert recall >= 0.95
    assert ann.kind_of(ann.build(items[:10], "hnsw")) == "hnsw" and ann.kind_of(ann.build(items[:10], "flat")) == "flat"


def test_fewer_rows_than_k_are_padded_with_minus_one():
    rng = np.random.default_rng(2)
    items = normalised(rng, 5)
    for kind in ann.KINDS:
        scores, rows = ann.search(ann.build(items, kind), items[:2], 4, csr([[0, 1, 2], []]))
        assert sorted(rows[0][:2]) == [3, 4] and list(rows[0][2:]) == [-1, -1] and np.isneginf(scores[0][2:]).all()
        scores, rows = ann.search(ann.build(items, kind), items[:1], 8)
        assert sorted(rows[0][:5]) == [0, 1, 2, 3, 4] and list(rows[0][5:]) == [-1, -1, -1]


def test_hnsw_file_is_the_same_bytes_when_built_twice(tmp_path):
    import faiss

    items = normalised(np.random.default_rng(3), 3000)
    for name in ("a", "b"):
        faiss.write_index(ann.build(items, "hnsw"), str(tmp_path / name))
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown index kind"):
        ann.build(np.zeros((2, 4), np.float32), "ivf")
