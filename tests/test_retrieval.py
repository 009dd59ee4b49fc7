"""Full-catalogue ranking: exclusions, ties, chunking."""

import pytest
import torch

from gamerec.retrieval import rank_and_top_k, top_k

T = torch.tensor


def csr(rows):
    indptr = [0]
    for r in rows:
        indptr.append(indptr[-1] + len(r))
    return T(indptr), T([i for r in rows for i in r], dtype=torch.long)


# one-dimensional embeddings make scores easy to read: score = user weight * item value
ITEMS = T([[100.0], [5.0], [4.0], [4.0], [3.0], [1.0]])  # item 0 (unknown) would win if not hidden
USERS = T([[1.0], [1.0], [-1.0]])


def test_train_items_and_unknown_item_are_never_recommended():
    exclude = csr([[1], [], [5, 4]])
    top = top_k(USERS, ITEMS, exclude, k=3)
    assert top[0].tolist()[:1] == [2] and 1 not in top[0]
    assert top[1].tolist()[0] == 1
    assert 0 not in top and 5 not in top[2] and 4 not in top[2]


def test_ranks_exclude_train_items_and_break_ties_by_item_id():
    exclude = csr([[1], [], [5]])
    targets = csr([[3], [4, 2], [1]])
    ranks, _ = rank_and_top_k(USERS, ITEMS, exclude, targets, k=2)
    # user 0: item 1 hidden; 2 and 3 tie at 4 -> 2 first (smaller id), so 3 is second
    # user 1: order 1, 2, 3, 4, 5 -> item 4 rank 4, item 2 rank 2
    # user 2 (negative weight): 5 hidden; order 4 (-3), 2 (-4), 3 (-4), 1 (-5) -> item 1 rank 4
    assert ranks.tolist() == [2, 4, 2, 4]


def test_chunked_ranking_equals_unchunked():
    torch.manual_seed(0)
    users, items = torch.randn(50, 4), torch.randn(40, 4)
    rows = [torch.randperm(39)[:5].add(1).tolist() for _ in range(50)]
    exclude = csr(rows)
    targets = csr([[i for i in range(1, 40) if i not in r][:3] for r in rows])
    big = rank_and_top_k(users, items, exclude, targets, k=10, memory_mb=512)
    tiny = rank_and_top_k(users, items, exclude, targets, k=10, memory_mb=1e-6)  # one user per chunk
    assert torch.equal(big[0], tiny[0]) and torch.equal(big[1], tiny[1])
    # a rank is 1 + the number of visible items scoring higher
    scores = users @ items.T
    for u in (0, 7, 49):
        visible = [i for i in range(1, 40) if i not in rows[u]]
        for j, t in enumerate(targets[1][targets[0][u] : targets[0][u + 1]].tolist()):
            expected = 1 + sum(1 for i in visible if scores[u, i] > scores[u, t])
            assert big[0][targets[0][u] + j] == expected


def test_scores_shared_by_every_user_rank_as_if_each_was_scored():
    # popularity-like: few distinct scores (many ties), every user the same embedding
    from gamerec.csr import Csr
    from gamerec.retrieval import masked_score_chunks

    g = torch.Generator().manual_seed(3)
    n_items, n_users = 40, 25
    item_emb = torch.randint(0, 6, (n_items, 1), generator=g).float()
    user_emb = torch.ones(n_users, 1)
    target = torch.randint(1, n_items, (n_users,), generator=g)
    rows, items = torch.randint(0, n_users, (60,), generator=g), torch.randint(1, n_items, (60,), generator=g)
    keep = items != target[rows]  # a held-out item is never among the user's excluded ones
    exclude = Csr.from_pairs(rows[keep], items[keep], n_users)
    targets = Csr.from_pairs(torch.arange(n_users), target, n_users)
    ranks, top = rank_and_top_k(user_emb, item_emb, exclude, targets, 5)
    for (chunk, scores) in masked_score_chunks(user_emb, item_emb, exclude, 512):  # each user scored
        for u in range(chunk.start, chunk.stop):
            t = int(targets[1][u])
            row = scores[u - chunk.start]
            before = (row > row[t]) | ((row == row[t]) & (torch.arange(n_items) < t))
            assert int(ranks[u]) == 1 + int(before.sum())
            # the top 5: best scores first, ties to the smaller id, nothing excluded
            expected = sorted(range(n_items), key=lambda i: (-float(row[i]), i))[:5]
            assert top[u].tolist() == expected


def test_users_with_several_targets_rank_each_against_their_own_row():
    from gamerec.csr import Csr

    g = torch.Generator().manual_seed(5)
    n_users, n_items = 7, 30
    user_emb, item_emb = torch.randn(n_users, 4, generator=g), torch.randn(n_items, 4, generator=g)
    rows = torch.tensor([0, 0, 2])  # as many rows as the span 0..2, yet not one target per row
    items = torch.tensor([3, 9, 4])
    targets = Csr.from_pairs(rows, items, n_users)
    exclude = Csr.from_pairs(torch.tensor([1]), torch.tensor([3]), n_users)
    ranks, _ = rank_and_top_k(user_emb, item_emb, exclude, targets, 5)
    scores = user_emb @ item_emb.T
    for n, (u, t) in enumerate(zip(rows.tolist(), items.tolist())):
        row = scores[u].clone()
        row[0] = float("-inf")
        before = (row > row[t]) | ((row == row[t]) & (torch.arange(n_items) < t))
        assert int(ranks[n]) == 1 + int(before.sum()), (u, t)


def near_ties(n_users=40, n_items=300, dim=16, seed=0):
    """Normalised embeddings whose scores crowd together: items are tiny perturbations of a few directions."""
    g = torch.Generator().manual_seed(seed)
    users = torch.nn.functional.normalize(torch.randn(n_users, dim, generator=g), dim=1)
    base = torch.randn(4, dim, generator=g)
    items = base[torch.randint(0, 4, (n_items,), generator=g)] + 1e-4 * torch.randn(n_items, dim, generator=g)
    items[::7] = items[1::7][: len(items[::7])]  # exact duplicates: ties only the id can break
    return users, torch.nn.functional.normalize(items, dim=1)


def brute_force(users, items, exclude, targets, k):
    """Ranks and top k on float64 scores, ties by id, one user at a time."""
    ranks, tops = [], []
    for r in range(len(users)):
        scores = (items.double() @ users[r].double()).tolist()
        hidden = {0, *exclude[1][exclude[0][r]: exclude[0][r + 1]].tolist()}
        order = sorted((i for i in range(len(items)) if i not in hidden), key=lambda i: (-scores[i], i))
        tops.append(order[:k])
        ranks += [order.index(t) + 1 for t in targets[1][targets[0][r]: targets[0][r + 1]].tolist()]
    return torch.tensor(ranks), torch.tensor(tops)


@pytest.fixture(params=["plain", "blocks"])
def top_path(request, monkeypatch):
    """Both ways to the top candidates: the plain topk, and blocks of 4 items (a 300-item catalogue has 75)."""
    if request.param == "blocks":
        monkeypatch.setattr("gamerec.retrieval.TOP_BLOCK", 4)
    return request.param


def test_top_candidates_by_blocks_are_the_largest_scores(monkeypatch):
    from gamerec import retrieval

    monkeypatch.setattr(retrieval, "TOP_BLOCK", 8)  # 125 blocks and 3 items: the blocked path
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(50, 1003, generator=g).round(decimals=1)  # many equal scores; a partial last block
    scores[3] = 0.0  # a row of ties only
    scores[4, :990] = float("-inf")  # the largest scores in the partial block
    values, columns = retrieval.top_candidates(scores, 20)
    assert torch.equal(values, torch.topk(scores, 20, dim=1).values)
    assert torch.equal(scores.gather(1, columns), values)
    assert all(len(set(row)) == 20 for row in columns.tolist())  # 20 distinct items per row


@pytest.mark.parametrize("norms", ["equal", "unequal"])  # a cosine model; ALS, whose popular items have long vectors
@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_ranks_and_top_k_are_exact_at_any_precision_even_on_near_ties(precision, norms, top_path):
    from gamerec.csr import Csr

    users, items = near_ties()
    if norms == "unequal":  # lengths 0.1 to 10; duplicates keep theirs, so exact ties stay ties
        items = items * torch.logspace(-1, 1, len(items))[torch.arange(len(items)) // 7 * 7, None]
    g = torch.Generator().manual_seed(1)
    exclude = Csr.from_pairs(torch.arange(40).repeat_interleave(5), torch.randint(1, 300, (200,), generator=g), 40)
    targets = Csr.from_pairs(torch.arange(40).repeat(2), torch.randint(1, 300, (80,), generator=g), 40)
    held = set(zip(*[t.tolist() for t in exclude.gather(torch.arange(40))]))
    keep = torch.tensor([(int(r), int(i)) not in held for r, i in zip(*targets.gather(torch.arange(40)))])
    owner, items_ = targets.gather(torch.arange(40))
    targets = Csr.from_pairs(owner[keep], items_[keep], 40)
    want_ranks, want_top = brute_force(users, items, exclude, targets, 12)
    ranks, top = rank_and_top_k(users, items, exclude, targets, 12, memory_mb=0.01, precision=precision)
    assert torch.equal(ranks, want_ranks) and torch.equal(top, want_top)


def test_bfloat16_scores_stay_inside_the_error_bound():
    from gamerec.retrieval import error_bound

    users, items = near_ties(dim=128)
    users, items = users * 3.0, items * 0.5  # unnormalised: the bound scales with the norms
    fast = (users.bfloat16() @ items.bfloat16().T).double()
    exact = users.double() @ items.double().T
    per_user, per_item = error_bound(users, items, "bfloat16")
    assert ((fast - exact).abs() <= per_user[:, None] * per_item[None, :]).all()


def test_ranks_stay_exact_when_every_item_is_a_near_tie(top_path):
    """The ablation's case (the only feature that tells items apart zeroed): whole rows are scored again."""
    from gamerec.csr import Csr

    users, items = near_ties()
    items = items[:1].repeat(len(items), 1) + 1e-6 * items  # every score within about 1e-6 of every other
    exclude = Csr.from_pairs(torch.arange(40), torch.arange(1, 41), 40)
    targets = Csr.from_pairs(torch.arange(40), torch.arange(100, 140), 40)
    want_ranks, want_top = brute_force(users, items, exclude, targets, 12)
    ranks, top = rank_and_top_k(users, items, exclude, targets, 12, memory_mb=0.01, precision="bfloat16")
    assert torch.equal(ranks, want_ranks) and torch.equal(top, want_top)
