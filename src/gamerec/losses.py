"""Training losses: a registry of small modules, each turning one process's part of a batch into its loss.

A batch is a set of positives, each with the negatives its sampler drew for it (none for
in_batch). The negatives and the loss are chosen separately (`train.loss`):

  bce              each positive and each of its negatives a binary label (a set without
                   negatives of its own, in_batch, uses the batch's other positives)
  sampled_softmax  each positive against its own negatives, the negatives' logits lowered by
                   log(k q) where the sampler knows their probability q (importance sampling
                   of the full softmax); in_batch's own negatives are the batch: batch_softmax
  batch_softmax    each positive against the batch's positives, plus its own negatives (hard
                   negatives inside the batch softmax), plus shared uniform extras
  exact_softmax    each positive against every catalogue item: the reference the sampled
                   ones approximate

A loss is built once per training run (`make`) and called per batch with the model (maybe
DDP-wrapped) and a `Batch`. It runs the model's forward itself, once, on everything it
scores, and it owns its scaling across processes: each of N processes returns a loss such
that DDP's average of the N gradients is the gradient of the whole global batch's loss.

The softmax corrections are composed as TensorFlow Recommenders' retrieval task composes
them: logits, then one-purpose steps (logQ correction, accidental-hit mask, extra columns).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch.nn import functional as F

from gamerec.csr import Csr
from gamerec.distributed import Dist
from gamerec.errors import GamerecError
from gamerec.model import Sequences


@dataclass
class Batch:
    """One process's positives of a global batch (on its device), and what of the whole batch a loss needs."""

    users: torch.Tensor  # [b]
    positives: torch.Tensor  # [b] each row's positive item (its user's history is cut there)
    weights: torch.Tensor  # [b] each positive's BCE weight against its own negatives (the sampler's balance)
    negatives: torch.Tensor  # [b, K] the sampler's negatives of each positive, 0 = none (K = 0: in_batch)
    neg_log_q: torch.Tensor | None  # [b, K] log probability of each negative's draw, where the sampler knows it
    batch_users: torch.Tensor  # [B] every row's user in the global batch, in order
    batch_positives: torch.Tensor  # [B] and its positive: the in-batch negatives
    batch_log_q: torch.Tensor  # [B] log share of each positive's item among all train positives
    offset: int  # where this process's rows start in the global batch
    sequences: Sequences | None = None  # attention tower: the batch's users' sequences, this process's rows in them

    @property
    def size(self) -> int:
        """Rows in the global batch."""
        return len(self.batch_positives)


@dataclass(frozen=True)
class Setup:
    """What a loss may need to know when it is built, beside the batches."""

    scale: float  # logits are dot products times this (1 / temperature)
    num_items: int  # item encoder size (row 0 = unknown, never drawn)
    logq: bool  # correct sampled logits by their log sampling probability
    mixed_negatives: int  # uniform items added to every batch softmax row (0 = none)
    generator: torch.Generator  # the training run's generator: the same draws in every process
    seen: Csr | None = None  # each user's train items (rows by user id): masks items a row's user has


Loss = Callable[[torch.nn.Module, Batch, Dist], torch.Tensor]


# ---------------------------------------------------------------------------------------------
# one-purpose steps


def batch_logits(user_emb: torch.Tensor, item_emb: torch.Tensor, scale: float) -> torch.Tensor:
    """Each user row against every item column: dot products times `scale`."""
    return user_emb @ item_emb.T * scale


def logq_correction(logits: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """Lower each column by its item's log sampling probability (Yi et al., RecSys 2019).

    Popular items are over-represented among sampled negatives; the correction makes the
    sampled softmax estimate the full one. `log_q` is [columns] or, per row, [rows, columns].
    """
    return logits - (log_q[None, :] if log_q.dim() == 1 else log_q)


def mask_accidental_hits(logits: torch.Tensor, row_items: torch.Tensor, column_items: torch.Tensor,
                         labels: torch.Tensor | None = None, row_users: torch.Tensor | None = None,
                         seen: Csr | None = None) -> torch.Tensor:
    """-inf where a column holds the row's own positive, or (with `seen`) any item the row's user has.

    Each row's label column (`labels[row]`, when given) is kept. A batch can hold the same
    item twice, or an item the user bought before: pushing it down as a negative would
    contradict the data, so such accidental hits are left out. The rows' users' items are
    looked up among the batch's distinct column items: the cost is the users' items, not
    rows x columns.
    """
    hit = column_items[None, :] == row_items[:, None]
    if seen is not None:
        owner, items = seen.gather(row_users)
        distinct, column_of = torch.unique(column_items, return_inverse=True)
        where = torch.searchsorted(distinct, items).clamp(max=len(distinct) - 1)
        found = distinct[where] == items
        has = torch.zeros(len(row_items), len(distinct), dtype=torch.bool, device=logits.device)
        has[owner[found], where[found]] = True
        hit |= has[:, column_of]
    if labels is not None:
        hit[torch.arange(len(row_items), device=row_items.device), labels] = False
    return logits.masked_fill(hit, float("-inf"))


def mask_catalogue_hits(logits: torch.Tensor, labels: torch.Tensor, row_users: torch.Tensor,
                        seen: Csr | None = None) -> torch.Tensor:
    """In place, -inf at column 0 (the unknown item) and (with `seen`) at every item the row's user has; labels kept.

    The columns are the whole catalogue (column = item id), so the users' items are written
    straight into their rows: the cost is the users' items, not rows x catalogue.
    """
    logits[:, 0] = float("-inf")
    if seen is not None:
        owner, items = seen.gather(row_users)
        other = items != labels[owner]
        logits[owner[other], items[other]] = float("-inf")
    return logits


def with_extra_negatives(logits: torch.Tensor, user_emb: torch.Tensor, extra_emb: torch.Tensor,
                         row_items: torch.Tensor, extra_items: torch.Tensor, scale: float,
                         log_q: float | torch.Tensor) -> torch.Tensor:
    """Append columns for shared extra negatives (mixed negative sampling, Yang et al. 2020), hits masked."""
    extra = batch_logits(user_emb, extra_emb, scale) - log_q
    return torch.cat([logits, mask_accidental_hits(extra, row_items, extra_items)], dim=1)


def own_negative_logits(user_emb: torch.Tensor, neg_emb: torch.Tensor, negatives: torch.Tensor, scale: float,
                        log_q: torch.Tensor | None = None) -> torch.Tensor:
    """[b, K] each row against its own negatives, padding (item 0) -inf; minus log(k q) where q is known.

    Importance sampling of the full softmax: a negative drawn with probability q out of k
    draws stands for 1 / (k q) items of the catalogue.
    """
    logits = (user_emb[:, None, :] * neg_emb).sum(-1) * scale
    real = negatives > 0
    if log_q is not None:
        draws = real.sum(1, keepdim=True).clamp(min=1)
        logits = logits - (torch.log(draws.float()) + log_q)
    return logits.masked_fill(~real, float("-inf"))


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, batch: Batch, dist: Dist) -> torch.Tensor:
    """Summed cross-entropy of this process's rows, scaled so the N processes average to the batch mean."""
    return F.cross_entropy(logits, labels, reduction="sum") * (dist.world / batch.size)


def embedded(model: torch.nn.Module, batch: Batch, extra_items: torch.Tensor | None = None):
    """One forward through the (maybe DDP-wrapped) model: (users, positives, own negatives [b, K, d], extras)."""
    b, k = batch.negatives.shape
    parts = [batch.positives, batch.negatives.reshape(-1)] + ([] if extra_items is None else [extra_items])
    user_emb, item_emb = model(batch.users, torch.cat(parts), batch.positives, batch.sequences)
    neg_emb = item_emb[b : b + b * k].reshape(b, k, item_emb.shape[-1])
    return user_emb, item_emb[:b], neg_emb, item_emb[b + b * k :]


# ---------------------------------------------------------------------------------------------
# the losses


class BinaryCrossEntropy:
    """Each positive and each of its negatives a binary label, the positive up-weighted to balance them.

    Each row's weights are normalised to sum to one, so rows count alike whatever their
    number of negatives; a set without negatives of its own (in_batch) uses the batch's
    other positives, its accidental hits masked.
    """

    def __init__(self, setup: Setup):
        self.setup = setup

    def __call__(self, model: torch.nn.Module, batch: Batch, dist: Dist) -> torch.Tensor:
        scale = self.setup.scale
        user_emb, pos_emb, neg_emb, _ = embedded(model, batch)
        positive = (user_emb * pos_emb).sum(-1) * scale
        if batch.negatives.shape[1]:
            negative = own_negative_logits(user_emb, neg_emb, batch.negatives, scale)
            pos_weight = batch.weights
        else:  # the batch's other positives are the negatives
            negative = batch_logits(user_emb, dist.gather_rows(pos_emb, batch.size), scale)
            # the row's own positive column is masked with the other hits: it is the label, not a negative
            negative = mask_accidental_hits(negative, batch.positives, batch.batch_positives, None, batch.users,
                                            self.setup.seen)
            pos_weight = torch.isfinite(negative).sum(1).float()
        real = torch.isfinite(negative)
        per_negative = F.binary_cross_entropy_with_logits(negative.masked_fill(~real, 0.0), torch.zeros_like(negative),
                                                          reduction="none") * real
        per_positive = F.binary_cross_entropy_with_logits(positive, torch.ones_like(positive), reduction="none")
        rows = (per_positive * pos_weight + per_negative.sum(1)) / (pos_weight + real.sum(1)).clamp(min=1e-6)
        return rows.sum() * (dist.world / batch.size)


class SampledSoftmax:
    """Each positive against its own negatives (label 0), logQ-corrected where the sampler knows q."""

    def __init__(self, setup: Setup):
        self.setup = setup
        self.batch = BatchSoftmax(setup)  # in_batch: its own negatives are the batch

    def __call__(self, model: torch.nn.Module, batch: Batch, dist: Dist) -> torch.Tensor:
        if not batch.negatives.shape[1]:
            return self.batch(model, batch, dist)
        scale = self.setup.scale
        user_emb, pos_emb, neg_emb, _ = embedded(model, batch)
        log_q = batch.neg_log_q if self.setup.logq else None
        logits = torch.cat([(user_emb * pos_emb).sum(-1, keepdim=True) * scale,
                            own_negative_logits(user_emb, neg_emb, batch.negatives, scale, log_q)], dim=1)
        return cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device), batch, dist)


class BatchSoftmax:
    """Each positive against the global batch's positives, its own negatives, and the shared extras.

    With several processes the batch columns are gathered differentiably from every process
    and the rows are this process's part of the batch: logQ and masking are global.
    """

    def __init__(self, setup: Setup):
        self.setup = setup

    def extras(self, batch_size: int) -> tuple[torch.Tensor | None, float]:
        """This batch's shared uniform extra items and their log sampling probability (None: off)."""
        n, num_items = self.setup.mixed_negatives, self.setup.num_items
        if not n:
            return None, 0.0
        items = torch.randint(1, num_items, (n,), generator=self.setup.generator)  # the same on every process
        # on the scale of log_q: expected draws of an item per batch row
        return items, (math.log(n / (batch_size * (num_items - 1))) if self.setup.logq else 0.0)

    def __call__(self, model: torch.nn.Module, batch: Batch, dist: Dist) -> torch.Tensor:
        setup, scale = self.setup, self.setup.scale
        extra_items, extra_log_q = self.extras(batch.size)
        if extra_items is not None:
            extra_items = extra_items.to(batch.positives.device)
        user_emb, pos_emb, neg_emb, extra_emb = embedded(model, batch, extra_items)
        logits = batch_logits(user_emb, dist.gather_rows(pos_emb, batch.size), scale)
        if setup.logq:
            logits = logq_correction(logits, batch.batch_log_q)
        labels = batch.offset + torch.arange(len(logits), device=logits.device)
        logits = mask_accidental_hits(logits, batch.positives, batch.batch_positives, labels, batch.users, setup.seen)
        if extra_items is not None:
            logits = with_extra_negatives(logits, user_emb, extra_emb, batch.positives, extra_items, scale, extra_log_q)
        if batch.negatives.shape[1]:  # hard (or sampled) negatives of each row, beside the batch's
            log_q = batch.neg_log_q if setup.logq else None
            logits = torch.cat([logits, own_negative_logits(user_emb, neg_emb, batch.negatives, scale, log_q)], dim=1)
        return cross_entropy(logits, labels, batch, dist)


class ExactSoftmax:
    """Each positive against every catalogue item: the full softmax the sampled losses approximate."""

    def __init__(self, setup: Setup):
        self.setup = setup

    def __call__(self, model: torch.nn.Module, batch: Batch, dist: Dist) -> torch.Tensor:
        setup = self.setup
        catalogue = torch.arange(setup.num_items, device=batch.positives.device)
        without_own = replace(batch, negatives=batch.negatives[:, :0])  # every item is a negative already
        user_emb, _, _, item_emb = embedded(model, without_own, catalogue)  # the catalogue as the "extras"
        # the scale on the [b, d] side: the [b, items] logits are the step's largest tensor
        logits = batch_logits(user_emb * setup.scale, item_emb, 1.0)
        logits = mask_catalogue_hits(logits, batch.positives, batch.users, setup.seen)
        return cross_entropy(logits, batch.positives, batch, dist)


LOSSES: dict[str, type] = {
    "bce": BinaryCrossEntropy,
    "sampled_softmax": SampledSoftmax,
    "batch_softmax": BatchSoftmax,
    "exact_softmax": ExactSoftmax,
}


def make(name: str, setup: Setup) -> Loss:
    """The loss registered as `name`; an unknown name is a one-line error."""
    if name not in LOSSES:
        raise GamerecError(f"loss {name!r} is not known; expected one of {', '.join(LOSSES)}")
    return LOSSES[name](setup)
