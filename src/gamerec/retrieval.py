"""Full-catalogue scoring: chunked matrix products and top-k, under a memory cap.

Every user is scored against every catalogue item, a chunk of users at a time, so no
score matrix exceeds `memory_mb`. Items a user must not be recommended (their train items,
and item 0, "unknown") are set to -inf before ranking.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from gamerec import progress
from gamerec.csr import Csr
from gamerec.metrics import ranking_metrics
from gamerec.prepared import Holdout

# Targets ranked at once: their score rows (16 x 100k floats) stay in cache while compared,
# about 5x faster than comparing a whole chunk of scores.
RANK_BLOCK = 16


def chunk_rows(num_items: int, memory_mb: float) -> int:
    """Rows per chunk so that one float32 chunk of scores stays under `memory_mb`."""
    return max(1, int(memory_mb * 2**20) // (4 * max(num_items, 1)))


def masked_score_chunks(
    user_emb: torch.Tensor,
    item_emb: torch.Tensor,
    exclude: Csr,
    memory_mb: float,
    progress_desc: str | None = None,
) -> Iterator[tuple[slice, torch.Tensor]]:
    """Yield (row slice, scores) of user_emb @ item_emb.T, excluded items set to -inf.

    `exclude` is a CSR whose row r lists the items to hide from user_emb row r; column 0
    (the unknown item) is always hidden. `progress_desc` shows a progress bar of the chunks.
    """
    exclude = Csr(*exclude)
    step = chunk_rows(len(item_emb), memory_mb)
    starts = range(0, len(user_emb), step)
    for start in progress.bar(starts, show=progress_desc is not None, desc=progress_desc, unit="chunk"):
        rows = slice(start, min(start + step, len(user_emb)))
        scores = user_emb[rows] @ item_emb.T
        scores[:, 0] = float("-inf")
        owner, items = exclude.gather(torch.arange(rows.start, rows.stop))
        scores[owner, items] = float("-inf")
        yield rows, scores


def top_k(
    user_emb: torch.Tensor,
    item_emb: torch.Tensor,
    exclude: Csr,
    k: int,
    memory_mb: float = 512,
) -> torch.Tensor:
    """Indices of the k best items per user row, best first, excluded items never returned."""
    return rank_and_top_k(user_emb, item_emb, exclude, None, k, memory_mb)[1]


def rank_and_top_k(
    user_emb: torch.Tensor,
    item_emb: torch.Tensor,
    exclude: Csr,
    targets: Csr | None,
    k: int,
    memory_mb: float = 512,
    progress_desc: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank of each target among its user's non-excluded items, and each user's top k.

    `targets` is a CSR whose row r lists user row r's held-out items; the returned ranks
    (1 = best) follow its flattened order. A target's rank counts the items scoring higher,
    plus those scoring the same with a smaller id, so ties never make a rank ambiguous.
    """
    k = min(k, len(item_emb) - 1)
    if len(user_emb) > 1 and bool((user_emb == user_emb[0]).all()):  # e.g. popularity: one ranking for all
        return _rank_shared((item_emb @ user_emb[0]).reshape(-1), exclude, targets, k, len(user_emb))
    top = torch.empty(len(user_emb), k, dtype=torch.long)
    ranks = torch.empty(0 if targets is None else len(targets[1]), dtype=torch.long)
    for rows, scores in masked_score_chunks(user_emb, item_emb, exclude, memory_mb, progress_desc):
        top[rows] = torch.topk(scores, k, dim=1).indices
        if targets is None:
            continue
        owner, items = Csr(*targets).gather(torch.arange(rows.start, rows.stop))
        first = int(targets[0][rows.start])
        for part in range(0, len(items), RANK_BLOCK):
            o, t = owner[part : part + RANK_BLOCK], items[part : part + RANK_BLOCK, None]  # o: row in the chunk
            # one target per row (leave-last-out): a view of the rows; else a copy, row per target
            consecutive = torch.equal(o, torch.arange(int(o[0]), int(o[0]) + len(o)))
            row_scores = scores[int(o[0]) : int(o[0]) + len(o)] if consecutive else scores[o]
            ranks[first + part : first + part + len(t)] = 1 + _count_before(row_scores, t)
    return ranks, top


def rank_holdout(holdout: Holdout, user_emb: torch.Tensor, item_emb: torch.Tensor, k: int,
                 memory_mb: float, progress_desc: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank of every held-out item and each user's top k (`user_emb` row r = holdout.users[r])."""
    return rank_and_top_k(user_emb, item_emb, holdout.exclude, holdout.targets, k, memory_mb, progress_desc)


def holdout_recall(holdout: Holdout, user_emb: torch.Tensor, item_emb: torch.Tensor, k: int, memory_mb: float) -> float:
    """recall@k of the holdout's users over the full catalogue, their hidden items excluded."""
    ranks, _ = rank_holdout(holdout, user_emb, item_emb, k, memory_mb)
    return ranking_metrics(ranks, holdout.owner, len(holdout.users), [k])[f"recall@{k}"]


def _count_before(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per row, the items ranked before its target: scoring higher, or the same with a smaller id."""
    mine = scores.gather(1, targets)
    above = torch.sum(scores > mine, 1, dtype=torch.int32)
    tied = torch.sum(scores >= mine, 1, dtype=torch.int32) - above - 1  # the target ties itself
    for r in torch.nonzero(tied > 0).flatten().tolist():  # rare for a model, common for popularity counts
        above[r] += torch.sum(scores[r, : targets[r]] == mine[r], dtype=torch.int32)  # ties with a smaller id
    return above


def _rank_shared(
    scores: torch.Tensor,
    exclude: Csr,
    targets: Csr | None,
    k: int,
    n_users: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`rank_and_top_k` when every user has the same `scores`: one global order, no score matrix.

    The order is the ranking rule itself (higher score first, a tie to the smaller id; item 0
    never ranked). A target's rank is its place in it less the user's excluded items before
    it; a user's top k are the first k places that are not excluded. Same ranks as scoring
    each user, at the cost of sorting the catalogue once (popularity on a million users).
    """
    n = len(scores)
    order = torch.argsort(-scores.double(), stable=True)  # item ids; stable: ties stay in id order
    order = order[order != 0]
    place = torch.full((n,), n, dtype=torch.long)  # item 0's place is past every real one
    place[order] = torch.arange(len(order))
    exclude = Csr(*exclude)
    owner, excluded = exclude.gather(torch.arange(n_users))
    key = torch.unique(owner * (n + 1) + place[excluded])  # per user, excluded places ascending, once
    ranks = torch.empty(0, dtype=torch.long)
    if targets is not None:
        t_owner, t_items = Csr(*targets).gather(torch.arange(n_users))
        before = torch.searchsorted(key, t_owner * (n + 1) + place[t_items]) - torch.searchsorted(key, t_owner * (n + 1))
        ranks = place[t_items] + 1 - before
    # top k: the first k + (most excluded) places cover every user; mark each user's excluded ones
    per_user = exclude[0][1:] - exclude[0][:-1]
    width = min(len(order), k + int(per_user.max()) if len(per_user) else k)
    top = torch.empty(n_users, k, dtype=torch.long)
    step = max(1, 2**24 // max(width, 1))
    for start in range(0, n_users, step):
        rows = torch.arange(start, min(start + step, n_users))
        o, e = exclude.gather(rows)
        hidden = torch.zeros(len(rows), width + 1, dtype=torch.bool)
        hidden[o, place[e].clamp(max=width)] = True  # places past the window land in a spare column
        first = torch.sort(hidden[:, :width].to(torch.uint8), dim=1, stable=True).indices[:, :k]
        top[rows] = order[first]
    return ranks, top
