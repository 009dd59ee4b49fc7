"""Who has interacted with what: the seen-items index, and draws of items a user has not seen.

Samplers draw negatives a user never interacted with in train; the evaluation draws its AUC
negatives among items a user never interacted with in any split. Both use this one index:
membership is checked on sorted int64 keys `user * num_items + item` with np.searchsorted,
so every step is vectorised over rows and there is no Python loop over users.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_ROUNDS = 32  # redraw rounds for seen candidates; what is still seen afterwards is dropped


@dataclass
class InteractionIndex:
    """What every draw derives from a set of interactions once (see `interaction_index`)."""

    seen: np.ndarray  # sorted unique int64 keys user * num_items + item
    counts: np.ndarray  # int64 count per item index (popularity)
    catalogue: np.ndarray  # int32 items with >= 1 interaction, ascending
    num_items: int  # encoder size incl. row 0 (unknown)


def interaction_index(users: np.ndarray, items: np.ndarray, num_items: int, with_seen: bool = True) -> InteractionIndex:
    """Seen (user, item) keys, item counts and the catalogue of the given interactions."""
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    seen = np.zeros(0, dtype=np.int64)
    if with_seen:
        seen = np.sort(users * num_items + items)  # sort + diff: np.unique hashes, slower
        seen = seen[np.concatenate([[True], seen[1:] != seen[:-1]])]
    counts = np.bincount(items, minlength=num_items).astype(np.int64)
    catalogue = np.flatnonzero(counts).astype(np.int32)
    return InteractionIndex(seen, counts, catalogue[catalogue > 0], num_items)


def is_seen(index: InteractionIndex, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Boolean mask: has each (user, item) pair been seen?"""
    seen = index.seen
    if not len(seen) or not len(users):
        return np.zeros(len(users), dtype=bool)
    keys = users.astype(np.int64) * index.num_items + items
    pos = np.searchsorted(seen, keys)
    np.minimum(pos, len(seen) - 1, out=pos)
    return seen[pos] == keys


def draw_unseen(
    users: np.ndarray,
    index: InteractionIndex,
    rng: np.random.Generator,
    cdf: np.ndarray | None = None,
    max_rounds: int = MAX_ROUNDS,
) -> tuple[np.ndarray, np.ndarray, int]:
    """One catalogue item per entry of `users`, never one that user has been seen with.

    Draws all at once, then redraws only the seen ones, for at most `max_rounds` rounds.
    `cdf` (cumulative weights over `index.catalogue`) makes draws proportional to the weights;
    None draws uniformly. Returns (items int32, 0 where still seen after the cap; ok mask;
    number of draws rejected because the user had interacted with the item).
    """
    n = len(users)
    items = np.zeros(n, dtype=np.int32)
    todo = np.arange(n, dtype=np.int64)
    cat = index.catalogue
    rejected = 0
    if not len(cat):
        return items, np.zeros(n, dtype=bool), 0
    for _ in range(max_rounds):
        if not len(todo):
            break
        if cdf is None:
            pick = rng.integers(0, len(cat), size=len(todo))
        else:
            pick = np.searchsorted(cdf, rng.random(len(todo)) * cdf[-1], side="right")
            np.minimum(pick, len(cat) - 1, out=pick)
        cand = cat[pick]
        hit = is_seen(index, users[todo], cand)
        rejected += int(hit.sum())
        items[todo[~hit]] = cand[~hit]
        todo = todo[hit]
    ok = np.ones(n, dtype=bool)
    ok[todo] = False
    return items, ok, rejected
