"""Full-catalogue scoring: chunked matrix products and top-k, under a memory cap, exact at any precision.

Every user is scored against every catalogue item, a chunk of users at a time, so no
score matrix exceeds `memory_mb`. Items a user must not be recommended (their train items,
and item 0, "unknown") are set to -inf before ranking.

The scores can be computed fast (`bfloat16`: half the memory traffic and a faster matrix
product) or in `float32`; either way every rank and top-k list is that of the exact scores
(float64), ties broken by item id. Each fast score is within a proven bound of the exact one
(`error_bound`): items whose fast score is clearly above or below a target's are counted as
they are, and only those whose bounds overlap its bound are scored again in float64. So both
precisions give identical ranks, and a near-tie never depends on the precision.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from gamerec import progress
from gamerec.csr import Csr
from gamerec.metrics import ranking_metrics
from gamerec.prepared import Holdout

# Scores compared at once, as whole rows of targets: 16 rows of 100k items stay in cache while
# compared, about 5x faster than comparing a whole chunk; on a smaller catalogue more rows fill
# the same bytes (per block the Python and small-tensor work is about half a millisecond).
RANK_BLOCK_SCORES = 16 * 100_000


PRECISIONS = {"bfloat16": torch.bfloat16, "float32": torch.float32}
TOP_SPARE = 16  # fast top-k candidates beyond k, so that near-ties at the k-th place are rescored
DENSE_BLOCK = 1 << 22  # float64 scores (32 MiB) per block when whole rows are scored again
TOP_BLOCK = 128  # items per block of `top_candidates`: a block's maximum stands for it


def error_bound(user_emb: torch.Tensor, item_emb: torch.Tensor, precision: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(per user, per item) factors whose product bounds |fast score - exact score| of that pair.

    Rounding x to bfloat16 moves it by at most 2^-8 |x| (the unit roundoff): the two inputs of
    a product and the output add 3 x 2^-8 |u| |i|; summing d products in float32 adds at most
    d x 2^-24 sum |u_j i_j| <= d x 2^-24 |u| |i| (Cauchy-Schwarz). float32 inputs are exact.
    The second-order terms (2^-16 and below) are bounded by 2^-12 |u| |i|, and 1% more covers
    the float32 rounding of the bound itself. Per item, not by the largest item norm: ALS's
    popular items have norms many times the rest, and one global bound would make nearly every
    item a near-tie. (An earlier 2x "for safety" only doubled the items scored again.)
    """
    unit = 2.0**-8 if precision == "bfloat16" else 0.0
    scale = (3 * unit + unit**2 * 16 + user_emb.shape[1] * 2.0**-24 * 1.01) * 1.01
    return scale * user_emb.double().norm(dim=1) + 1e-12, item_emb.double().norm(dim=1) + 1e-12


def chunk_rows(num_items: int, memory_mb: float) -> int:
    """Rows per chunk so that one float32 chunk of scores stays under `memory_mb`."""
    return max(1, int(memory_mb * 2**20) // (4 * max(num_items, 1)))


def masked_score_chunks(
    user_emb: torch.Tensor,
    item_emb: torch.Tensor,
    exclude: Csr,
    memory_mb: float,
    progress_desc: str | None = None,
    precision: str = "float32",
    device: torch.device | str = "cpu",
) -> Iterator[tuple[slice, torch.Tensor]]:
    """Yield (row slice, scores on `device`) of user_emb @ item_emb.T at `precision`, excluded items -inf.

    `exclude` is a CSR whose row r lists the items to hide from user_emb row r; column 0
    (the unknown item) is always hidden. `progress_desc` shows a progress bar of the chunks.
    Every chunk is written into one buffer: a chunk's scores are valid until the next is yielded.
    """
    exclude = Csr(*exclude)
    step = min(chunk_rows(len(item_emb), memory_mb), max(len(user_emb), 1))
    starts = range(0, len(user_emb), step)
    dtype = PRECISIONS[precision]
    # converted once, not per chunk; detached: scores are never differentiated (and mm's out= refuses grad)
    user_emb, fast_items = user_emb.detach(), item_emb.detach().to(device=device, dtype=dtype)
    # one buffer for every chunk: a fresh 500 MB result per chunk is paged in (and zeroed by
    # the OS) each time, which cost as much as a third of the matrix product itself
    buffer = torch.empty(step, len(item_emb), dtype=dtype, device=device)
    for start in progress.bar(starts, show=progress_desc is not None, desc=progress_desc, unit="chunk"):
        rows = slice(start, min(start + step, len(user_emb)))
        scores = torch.mm(user_emb[rows].to(device=device, dtype=dtype), fast_items.T, out=buffer[: rows.stop - start])
        scores[:, 0] = float("-inf")
        owner, items = exclude.gather(torch.arange(rows.start, rows.stop))
        scores[owner.to(scores.device), items.to(scores.device)] = float("-inf")
        yield rows, scores


def top_k(
    user_emb: torch.Tensor,
    item_emb: torch.Tensor,
    exclude: Csr,
    k: int,
    memory_mb: float = 512,
    precision: str = "float32",
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Indices of the k best items per user row, best first, excluded items never returned."""
    return rank_and_top_k(user_emb, item_emb, exclude, None, k, memory_mb, precision=precision, device=device)[1]


def rank_and_top_k(
    user_emb: torch.Tensor,
    item_emb: torch.Tensor,
    exclude: Csr,
    targets: Csr | None,
    k: int,
    memory_mb: float = 512,
    progress_desc: str | None = None,
    precision: str = "float32",
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank of each target among its user's non-excluded items, and each user's top k (scored on `device`).

    `targets` is a CSR whose row r lists user row r's held-out items; the returned ranks
    (1 = best) follow its flattened order. A target's rank counts the items scoring higher,
    plus those scoring the same with a smaller id, so ties never make a rank ambiguous. Both
    are exact (float64 scores) whatever `precision` the scores are computed at (see above).
    """
    k = min(k, len(item_emb) - 1)
    if len(user_emb) > 1 and bool((user_emb == user_emb[0]).all()):  # e.g. popularity: one ranking for all
        return _rank_shared((item_emb.double() @ user_emb[0].double()).reshape(-1), exclude, targets, k, len(user_emb))
    top = torch.empty(len(user_emb), k, dtype=torch.long)
    ranks = torch.empty(0 if targets is None else len(targets[1]), dtype=torch.long)
    user_bound, item_bound = error_bound(user_emb, item_emb, precision)
    item64, item_bound = item_emb.to(device, torch.float64), item_bound.to(device, torch.float32)
    for rows, scores in masked_score_chunks(user_emb, item_emb, exclude, memory_mb, progress_desc, precision, device):
        exact = _Exact(user_emb[rows].to(device, torch.float64), item64, user_bound[rows].to(device), item_bound)
        top[rows] = exact.top_k(scores, k).cpu()
        if targets is None:
            continue
        owner, items = Csr(*targets).gather(torch.arange(rows.start, rows.stop))
        owner, items = owner.to(scores.device), items.to(scores.device)
        first, block = int(targets[0][rows.start]), max(1, RANK_BLOCK_SCORES // scores.shape[1])
        for part in range(0, len(items), block):
            o, t = owner[part : part + block], items[part : part + block, None]  # o: row in the chunk
            # one target per row (leave-last-out): a view of the rows; else a copy, row per target
            consecutive = int(o[-1]) - int(o[0]) == len(o) - 1 and bool((o[1:] > o[:-1]).all())
            row_scores = scores[int(o[0]) : int(o[0]) + len(o)] if consecutive else scores[o]
            ranks[first + part : first + part + len(t)] = 1 + exact.count_before(row_scores, o, t).cpu()
    return ranks, top


class _Exact:
    """One chunk's users in float64, the catalogue in float64, and the bound on their fast scores.

    The fast score of (user row r, item j) is within `user_bound[r] * item_bound[j]` of the exact one.
    """

    def __init__(self, users: torch.Tensor, items: torch.Tensor, user_bound: torch.Tensor, item_bound: torch.Tensor):
        self.users, self.items = users, items
        self.user_bound, self.item_bound = user_bound.float(), item_bound
        # equal item norms (a cosine model): one bound per row, no per-item pass over the scores
        self.uniform = bool(item_bound.max() <= item_bound.min() * (1 + 1e-3))
        self.item_max = float(item_bound.max())

    def scores(self, rows: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Exact scores of (chunk row, item) pairs.

        Many pairs per row (every item a near-tie, as when the ablation zeroes the only feature
        that tells items apart): each row's whole catalogue as one matrix product, a block of
        rows at a time, is far cheaper than gathering a row of items per pair.
        """
        n_items = len(self.items)
        first, last = (int(rows.min()), int(rows.max())) if len(rows) else (0, -1)
        if len(rows) * 16 <= (last - first + 1) * n_items:  # a 16th of the rows' catalogues or less: gather
            return torch.einsum("nd,nd->n", self.users[rows], self.items[items])
        out = torch.empty(len(rows), dtype=torch.float64, device=rows.device)
        order = torch.argsort(rows, stable=True)
        block = max(1, DENSE_BLOCK // n_items)  # rows per product: [block, items] float64 stays small
        sorted_rows = rows[order]
        for lo in range(first, last + 1, block):
            a, b = torch.searchsorted(sorted_rows, torch.tensor([lo, lo + block], device=rows.device)).tolist()
            if a == b:
                continue
            dense = self.users[lo : lo + block] @ self.items.T
            pick = order[a:b]
            out[pick] = dense[rows[pick] - lo, items[pick]]
        return out

    def slack(self, rows: torch.Tensor, items: torch.Tensor | None = None) -> torch.Tensor:
        """The bound of each (row, item) fast score: [rows, 1] when uniform, else per item (every item if None)."""
        per_user = self.user_bound[rows][:, None]
        if self.uniform:
            return per_user * self.item_max
        return per_user * (self.item_bound[None, :] if items is None else self.item_bound[items])

    def count_before(self, fast: torch.Tensor, rows: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per row of `fast` (chunk rows `rows`), the items ranked before its target on the exact scores.

        An item whose fast score minus its bound is above the target's plus its bound is above
        it exactly; those whose bounds overlap the target's are scored again in float64.
        """
        mine = fast.gather(1, targets).float()
        reach = self.slack(rows, targets) + self.slack(rows)  # how far apart two fast scores may be and still tie
        high, low = mine + reach, mine - reach
        above = torch.sum(fast > high, 1, dtype=torch.int32)
        # the band's positions only in rows where it holds more than the target: listing
        # positions costs several plain counts, and most rows' bands are the target alone
        crowded = torch.nonzero(torch.sum(fast >= low, 1, dtype=torch.int32) - above > 1)[:, 0]
        if not len(crowded):
            return above
        some = fast[crowded]  # low and high are [rows, 1] (cosine) or [rows, items]: a row each either way
        band_at, band_items = torch.nonzero((some >= low[crowded]) & (some <= high[crowded]), as_tuple=True)
        band_rows = crowded[band_at]
        target = targets[band_rows, 0]
        band_rows, band_items, target = band_rows[band_items != target], band_items[band_items != target], \
            target[band_items != target]
        theirs, ours = self.scores(rows[band_rows], band_items), self.scores(rows[band_rows], target)
        before = (theirs > ours) | ((theirs == ours) & (band_items < target))
        return above + torch.bincount(band_rows[before], minlength=len(fast)).int()

    def top_k(self, fast: torch.Tensor, k: int) -> torch.Tensor:
        """The k best items of each row on the exact scores (ties: smaller id first), from the fast scores' candidates.

        A row's candidates are its best fast scores; the k-th best lower bound among them is a
        floor no other top-k item's upper bound can be below. Rows whose last candidate may still
        reach the floor (a crowd of near-ties, common with cosine scores) get 4x as many
        candidates, all such rows at once, until none is short (at worst the whole catalogue).
        Only candidates that can reach the floor are scored again in float64.
        """
        n_items = fast.shape[1]
        top = torch.empty(len(fast), k, dtype=torch.long, device=fast.device)
        rows, width = torch.arange(len(fast), device=fast.device), min(k + TOP_SPARE, n_items)
        while len(rows):
            values, candidates = top_candidates(fast if len(rows) == len(fast) else fast[rows], width)
            values, slack = values.float(), self.slack(rows, candidates)
            floor = torch.topk(values - slack, k, dim=1).values[:, -1:]
            reach = values[:, -1:] + self.user_bound[rows][:, None] * self.item_max  # any item outside the candidates
            short = (reach[:, 0] >= floor[:, 0]) & (width < n_items)
            done = ~short
            values, candidates, slack, floor, finished = values[done], candidates[done], slack[done], floor[done], \
                rows[done]
            contender = (values + slack >= floor) & ~torch.isinf(values)
            exact = torch.full(candidates.shape, float("-inf"), dtype=torch.float64, device=fast.device)
            r, c = torch.nonzero(contender, as_tuple=True)
            exact[r, c] = self.scores(finished[r], candidates[r, c])
            top[finished] = candidates.gather(1, _by_score_then_id(exact, candidates)[:, :k])
            rows, width = rows[short], min(4 * width, n_items)
        return top


def top_candidates(scores: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, columns) of `width` largest scores per row, best first, as `torch.topk` (which of equal scores: any).

    `torch.topk` reads a whole 100k-item row with a partial sort. Here each block of TOP_BLOCK
    items is stood for by its maximum (one vectorised pass): the `width` blocks with the
    largest maxima hold `width` scores at least as large as anything outside them, so the
    row's top `width` lies inside them (with the last partial block, always kept), and topk
    runs over those few blocks only (the 5m ranking: 457 -> 423 us per user).
    """
    n_items = scores.shape[1]
    full = n_items // TOP_BLOCK * TOP_BLOCK
    if width * TOP_BLOCK * 4 > full:  # few blocks: the plain topk is as cheap
        return torch.topk(scores, width, dim=1)
    blocks = scores[:, :full].unflatten(1, (-1, TOP_BLOCK))  # a view: [rows, blocks, TOP_BLOCK]
    best = torch.topk(blocks.amax(dim=2), width, dim=1).indices  # [rows, width] block numbers
    columns = (best[:, :, None] * TOP_BLOCK + torch.arange(TOP_BLOCK, device=scores.device)).flatten(1)
    columns = torch.cat([columns, torch.arange(full, n_items, device=scores.device).expand(len(scores), -1)], 1)
    values, at = torch.topk(scores.gather(1, columns), width, dim=1)
    return values, columns.gather(1, at)


def _by_score_then_id(scores: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Per row, the column order of descending score, ties by ascending id."""
    by_id = torch.argsort(ids, dim=1, stable=True)
    by_score = torch.argsort(-scores.gather(1, by_id), dim=1, stable=True)
    return by_id.gather(1, by_score)


def rank_holdout(holdout: Holdout, user_emb: torch.Tensor, item_emb: torch.Tensor, k: int, memory_mb: float,
                 progress_desc: str | None = None, precision: str = "float32",
                 device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Rank of every held-out item and each user's top k (`user_emb` row r = holdout.users[r])."""
    return rank_and_top_k(user_emb, item_emb, holdout.exclude, holdout.targets, k, memory_mb, progress_desc, precision,
                          device)


def holdout_recall(holdout: Holdout, user_emb: torch.Tensor, item_emb: torch.Tensor, k: int, memory_mb: float,
                   precision: str = "float32") -> float:
    """recall@k of the holdout's users over the full catalogue, their hidden items excluded."""
    ranks, _ = rank_holdout(holdout, user_emb, item_emb, k, memory_mb, precision=precision)
    return ranking_metrics(ranks, holdout.owner, len(holdout.users), [k])[f"recall@{k}"]


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
