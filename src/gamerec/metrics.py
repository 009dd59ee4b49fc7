"""Ranking metrics from top-k lists and held-out items."""

from __future__ import annotations

import torch

from gamerec import csr


def hits(top: torch.Tensor, targets: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """For each held-out (user row, item): the user row and the item's rank in `top` (-1 if absent).

    `targets` is a CSR whose row r lists user row r's held-out items.
    """
    rows = torch.arange(len(top))
    owner, items = csr.gather(*targets, rows)
    match = top[owner] == items[:, None]
    rank = torch.where(match.any(1), match.float().argmax(1), torch.full_like(owner, -1))
    return owner, rank


def recall_at_k(top: torch.Tensor, targets: tuple[torch.Tensor, torch.Tensor], k: int) -> float:
    """Mean over users with held-out items of |top-k ∩ held-out| / |held-out|."""
    owner, rank = hits(top[:, :k], targets)
    n_users = len(top)
    found = torch.bincount(owner, weights=(rank >= 0).double(), minlength=n_users)
    count = torch.bincount(owner, minlength=n_users).double()
    has = count > 0
    return float((found[has] / count[has]).mean()) if has.any() else 0.0
