"""Metrics from ranks and scores: ranking (recall, NDCG, hit rate, MRR, coverage) and pairs (AUC, accuracy).

Ranking metrics take the 1-based rank of every held-out item in its user's full-catalogue
ranking (see `retrieval.rank_and_top_k`) and average over users who have held-out items;
users without one are skipped, never counted as zero. Ties in score are broken by item id,
so a rank is always an integer and the metrics are deterministic.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import roc_auc_score, roc_curve


def _per_user(owner: torch.Tensor, n_users: int, weights: torch.Tensor | None = None) -> torch.Tensor:
    return torch.bincount(owner, weights=None if weights is None else weights.double(), minlength=n_users).double()


def ranking_metrics(ranks: torch.Tensor, owner: torch.Tensor, n_users: int, ks: list[int]) -> dict[str, float]:
    """recall@K, ndcg@K, hit_rate@K for each K, and mrr, averaged over users with held-out items.

    `ranks[t]` is the rank of held-out item t, `owner[t]` its user's row. recall@K is the
    share of a user's held-out items in their top K; NDCG@K divides the discounted hits by
    the best possible for min(#held-out, K) items; MRR uses the best-ranked held-out item.
    """
    count = _per_user(owner, n_users)
    has = count > 0
    if not has.any():
        return {**{f"{m}@{k}": 0.0 for k in ks for m in ("recall", "ndcg", "hit_rate")}, "mrr": 0.0}
    out: dict[str, float] = {}
    discount = 1.0 / torch.log2(ranks.double() + 1)
    for k in ks:
        hit = (ranks <= k).double()
        found = _per_user(owner, n_users, hit)
        dcg = _per_user(owner, n_users, hit * discount)
        ideal = torch.cumsum(1.0 / torch.log2(torch.arange(1, k + 1, dtype=torch.double) + 1), 0)
        idcg = ideal[(count.clamp(max=k) - 1).clamp(min=0).long()]
        out[f"recall@{k}"] = float((found[has] / count[has]).mean())
        out[f"ndcg@{k}"] = float((dcg[has] / idcg[has]).mean())
        out[f"hit_rate@{k}"] = float((found[has] > 0).double().mean())
    best = torch.full((n_users,), torch.iinfo(torch.long).max, dtype=torch.long)
    best = best.scatter_reduce(0, owner, ranks, reduce="amin")
    out["mrr"] = float((1.0 / best[has].double()).mean())
    return out


def recall_curve(ranks: torch.Tensor, owner: torch.Tensor, n_users: int, max_k: int) -> list[float]:
    """recall@K for K = 1..max_k in one pass: each held-out item adds 1/|user's held-out| from its rank on."""
    count = _per_user(owner, n_users)
    has = count > 0
    if not has.any():
        return [0.0] * max_k
    weight = 1.0 / count[owner]
    inside = ranks <= max_k
    hist = torch.bincount(ranks[inside] - 1, weights=weight[inside], minlength=max_k).double()
    return (torch.cumsum(hist, 0) / int(has.sum())).tolist()


def coverage(top: torch.Tensor, catalogue_items: int) -> float:
    """Share of the catalogue that appears in at least one user's top list."""
    return len(torch.unique(top[top > 0])) / max(catalogue_items, 1)


def _pairs(pos: torch.Tensor, neg: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    scores = torch.cat([pos.reshape(-1), neg.reshape(-1)]).double().numpy()
    labels = np.r_[np.ones(pos.numel()), np.zeros(neg.numel())]
    return labels, scores


def auc(pos: torch.Tensor, neg: torch.Tensor) -> float:
    """ROC AUC of positive against negative scores, pooled over users; ties count one half."""
    if pos.numel() == 0 or neg.numel() == 0:
        return float("nan")
    return float(roc_auc_score(*_pairs(pos, neg)))


def roc_points(pos: torch.Tensor, neg: torch.Tensor, grid: int = 101) -> tuple[list[float], list[float]]:
    """The ROC curve as TPR on a fixed FPR grid, so curves of two runs line up in `dvc plots diff`."""
    fpr, tpr, _ = roc_curve(*_pairs(pos, neg))
    grid_fpr = np.linspace(0.0, 1.0, grid)
    return grid_fpr.tolist(), np.interp(grid_fpr, fpr, tpr).tolist()


def best_threshold(pos: torch.Tensor, neg: torch.Tensor) -> float:
    """The score threshold (predict positive when score > threshold) with the best accuracy."""
    pos_sorted = torch.sort(pos.double()).values
    neg_sorted = torch.sort(neg.double()).values
    candidates = torch.cat([torch.tensor([-torch.inf], dtype=torch.double), torch.unique(torch.cat([pos_sorted, neg_sorted]))])
    above = len(pos) - torch.searchsorted(pos_sorted, candidates, right=True)
    below = torch.searchsorted(neg_sorted, candidates, right=True)
    return float(candidates[int(torch.argmax(above + below))])


def accuracy(pos: torch.Tensor, neg: torch.Tensor, threshold: float) -> float:
    """Share of pairs classified right: positives above the threshold, negatives at or below it."""
    right = int((pos.double() > threshold).sum()) + int((neg.double() <= threshold).sum())
    return right / max(pos.numel() + neg.numel(), 1)
