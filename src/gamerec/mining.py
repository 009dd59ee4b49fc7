"""Negatives mined by the model itself: the current model's highly ranked items a user never chose.

The `mined` sampler's stage writes the positives with uniform negatives for the first epoch
(what a DVC stage can precompute); from then on, every `refresh` epochs, training asks the
model being trained for each user's ranking of the catalogue, the user's train items left
out, and draws each positive's negatives from the ranks `skip_top` .. `skip_top + pool`. The
very top ranks are skipped because unlabelled positives live there: the games a user would
have bought next are the model's best guesses, and pushing them down would teach it to
forget what it got right (Xiong et al. 2021, ANCE; Huang et al. 2020, embedding-based
retrieval at Facebook, skip the top too).
"""

from __future__ import annotations

import torch

from gamerec.csr import Csr
from gamerec.retrieval import top_k


def due(params: dict, epoch: int) -> bool:
    """Whether the negatives are redrawn before `epoch` (the first epoch trains on the stage's uniform ones)."""
    return epoch > 1 and (epoch - 1) % params["refresh"] == 0


@torch.no_grad()
def mine(model: torch.nn.Module, ex, params: dict, generator: torch.Generator, memory_mb: float) -> torch.Tensor:
    """[G, k] new negatives for the examples' positives, drawn from ranks skip_top .. skip_top + pool.

    Each user is embedded once, from their train history (the causal cut of a positive is
    not needed to find what the model ranks high for its user); ranking runs on the CPU.
    """
    model.eval()
    device = next(model.parameters()).device
    users, row_of = torch.unique(ex.users, return_inverse=True)
    train = Csr.from_pairs(row_of, ex.positives, len(users))  # each user's train items: never negatives
    user_emb = model.embed_users(users.to(device)).cpu()
    item_emb = model.embed_items(torch.arange(model.config.num_items, device=device)).cpu()
    window = params["skip_top"] + params["pool"]
    ranked = top_k(user_emb, item_emb, train, window, memory_mb)
    pool = ranked[:, min(params["skip_top"], ranked.shape[1] - 1):]
    pick = torch.randint(0, pool.shape[1], (len(ex), params["negatives"]), generator=generator)
    model.train()
    negatives = pool[row_of[:, None], pick]
    # a user who has nearly the whole catalogue gets their own items back from top_k: none there (0)
    seen, keys = ex.seen(model.config.num_items), ex.users[:, None] * model.config.num_items + negatives
    where = torch.searchsorted(seen, keys).clamp(max=len(seen) - 1)
    return negatives.masked_fill(seen[where] == keys, 0)
