"""Training losses: a registry of small modules, each turning one process's part of a batch into its loss.

A loss is built once per training run (`make`) and called per batch with the model (maybe
DDP-wrapped) and a `Batch`. It runs the model's forward itself, because what it embeds is
its own business (the batch softmax embeds shared extra negatives beside the batch's items),
and it owns its scaling across processes: each of N processes returns a loss such that
DDP's average of the N gradients is the gradient of the whole global batch's loss.

The batch softmax is written as TensorFlow Recommenders' retrieval task composes it: logits,
then one-purpose corrections (the logQ correction, the accidental-hit mask, extra negatives).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from gamerec.distributed import Dist
from gamerec.errors import GamerecError


@dataclass
class Batch:
    """One process's rows of a global batch (on its device), and what of the whole batch a loss needs."""

    users: torch.Tensor
    items: torch.Tensor
    positives: torch.Tensor  # the positive each row belongs to (its user's history is cut there)
    labels: torch.Tensor
    weights: torch.Tensor
    batch_items: torch.Tensor  # every row's item in the global batch, in order (in-batch negatives)
    batch_log_q: torch.Tensor | None  # their log sampling probabilities, where the sampler wrote them
    total_weight: float  # the weights' sum over the global batch
    size: int  # rows in the global batch
    offset: int  # where this process's rows start in it


@dataclass(frozen=True)
class Setup:
    """What a loss may need to know when it is built, beside the batches."""

    scale: float  # logits are dot products times this (1 / temperature)
    num_items: int  # item encoder size (row 0 = unknown, never drawn)
    logq: bool  # subtract the log sampling probability from in-batch logits
    mixed_negatives: int  # uniform items added to every batch softmax row (0 = none)
    generator: torch.Generator  # the training run's generator: the same draws in every process


Loss = Callable[[torch.nn.Module, Batch, Dist], torch.Tensor]


def bce(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor, normaliser: float) -> torch.Tensor:
    """Weighted binary cross-entropy times `normaliser` (1 / the weights' sum, for one process alone)."""
    per_example = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    return (per_example * weights).sum() * normaliser


class BinaryCrossEntropy:
    """Each row's logit against its label; up-weighted positives balance their negatives."""

    def __init__(self, setup: Setup):
        self.scale = setup.scale

    def __call__(self, model: torch.nn.Module, batch: Batch, dist: Dist) -> torch.Tensor:
        user_emb, item_emb = model(batch.users, batch.items, batch.positives)
        logits = (user_emb * item_emb).sum(-1) * self.scale
        # weights normalised over the whole batch, as one process would; times N, as DDP averages
        return bce(logits, batch.labels, batch.weights, dist.world / batch.total_weight)


def batch_logits(user_emb: torch.Tensor, item_emb: torch.Tensor, scale: float) -> torch.Tensor:
    """Each user row against every item column: dot products times `scale`."""
    return user_emb @ item_emb.T * scale


def logq_correction(logits: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """Lower each column by its item's log sampling probability (Yi et al., RecSys 2019).

    Popular items are over-represented as in-batch negatives; the correction makes the
    sampled softmax estimate the full one.
    """
    return logits - log_q[None, :]


def mask_accidental_hits(logits: torch.Tensor, row_items: torch.Tensor, column_items: torch.Tensor,
                         offset: int | None = None) -> torch.Tensor:
    """-inf where a column holds the row's own positive item, except its label column `offset + row`.

    A batch can hold the same item twice; pushing a row's positive down as its own negative
    would contradict the label, so such accidental hits are left out of the softmax.
    """
    same = column_items[None, :] == row_items[:, None]
    if offset is not None:
        rows = torch.arange(len(row_items), device=row_items.device)
        same[rows, offset + rows] = False
    return logits.masked_fill(same, float("-inf"))


def with_extra_negatives(logits: torch.Tensor, user_emb: torch.Tensor, extra_emb: torch.Tensor,
                         row_items: torch.Tensor, extra_items: torch.Tensor, scale: float,
                         log_q: float) -> torch.Tensor:
    """Append columns for shared extra negatives (mixed negative sampling, Yang et al. 2020), hits masked."""
    extra = batch_logits(user_emb, extra_emb, scale) - log_q
    return torch.cat([logits, mask_accidental_hits(extra, row_items, extra_items)], dim=1)


class BatchSoftmax:
    """Each row's positive against the global batch's items (and the shared extras): cross-entropy.

    With several processes the columns are the whole global batch, gathered differentiably,
    and the rows this process's part of it: logQ and masking are global.
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
        scale = self.setup.scale
        extra_items, extra_log_q = self.extras(batch.size)
        items = batch.items
        if extra_items is not None:
            extra_items = extra_items.to(items.device)
            items = torch.cat([items, extra_items])
        user_emb, item_emb = model(batch.users, items, batch.items)  # one forward: the rows' items, then the extras
        logits = batch_logits(user_emb, dist.gather_rows(item_emb[: len(batch.items)], batch.size), scale)
        if self.setup.logq and batch.batch_log_q is not None:
            logits = logq_correction(logits, batch.batch_log_q)
        row_items = batch.batch_items[batch.offset : batch.offset + len(batch.users)]
        logits = mask_accidental_hits(logits, row_items, batch.batch_items, batch.offset)
        if extra_items is not None:
            logits = with_extra_negatives(logits, user_emb, item_emb[len(batch.items) :], row_items, extra_items,
                                          scale, extra_log_q)
        labels = batch.offset + torch.arange(len(logits), device=logits.device)
        return F.cross_entropy(logits, labels, reduction="sum") * (dist.world / batch.size)


LOSSES: dict[str, type] = {
    "bce": BinaryCrossEntropy,  # explicit negatives, each row a binary label
    "softmax": BatchSoftmax,  # the batch's other positives are the negatives
}


def make(name: str, setup: Setup) -> Loss:
    """The loss registered as `name`; an unknown name is a one-line error."""
    if name not in LOSSES:
        raise GamerecError(f"loss {name!r} is not known; expected one of {', '.join(LOSSES)}")
    return LOSSES[name](setup)
