"""Full-catalogue scoring: chunked matrix products and top-k, under a memory cap.

Every user is scored against every catalogue item, a chunk of users at a time, so the score
matrix never exceeds `memory_mb`. Items a user must not be recommended (their train items,
and item 0, "unknown") are set to -inf before the top-k.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from gamerec import csr


def chunk_rows(num_items: int, memory_mb: float) -> int:
    """Users per chunk so that one float32 chunk of scores stays under `memory_mb`."""
    return max(1, int(memory_mb * 2**20) // (4 * max(num_items, 1)))


def masked_score_chunks(
    user_emb: torch.Tensor,
    item_emb: torch.Tensor,
    exclude: tuple[torch.Tensor, torch.Tensor],
    memory_mb: float,
) -> Iterator[tuple[slice, torch.Tensor]]:
    """Yield (row slice, scores) of user_emb @ item_emb.T, excluded items set to -inf.

    `exclude` is a CSR whose row r lists the items to hide from user_emb row r; column 0
    (the unknown item) is always hidden.
    """
    indptr, indices = exclude
    step = chunk_rows(len(item_emb), memory_mb)
    for start in range(0, len(user_emb), step):
        rows = slice(start, min(start + step, len(user_emb)))
        scores = user_emb[rows] @ item_emb.T
        scores[:, 0] = float("-inf")
        owner, items = csr.gather(indptr, indices, torch.arange(rows.start, rows.stop))
        scores[owner, items] = float("-inf")
        yield rows, scores


def top_k(
    user_emb: torch.Tensor,
    item_emb: torch.Tensor,
    exclude: tuple[torch.Tensor, torch.Tensor],
    k: int,
    memory_mb: float = 512,
) -> torch.Tensor:
    """Indices of the k best items per user row, best first, excluded items never returned."""
    k = min(k, len(item_emb) - 1)
    out = torch.empty(len(user_emb), k, dtype=torch.long)
    for rows, scores in masked_score_chunks(user_emb, item_emb, exclude, memory_mb):
        out[rows] = torch.topk(scores, k, dim=1).indices
    return out
