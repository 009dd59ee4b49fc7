"""The training loop: batches of one sampler's examples, early stopping on validation, resume, processes.

Batches are slices of a shuffled index into whole-data tensors: no per-row Dataset, no
collate function. The loss is the one the sampler's manifest names (`gamerec.losses`).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from gamerec import cores, losses, mining
from gamerec import progress as progress_bar
from gamerec.config import TrainParams
from gamerec.distributed import Dist
from gamerec.errors import GamerecError
from gamerec.csr import Csr
from gamerec.io import atomic_path
from gamerec.model import START, Sequences, TwoTower
from gamerec.optim import Adam
from gamerec.prepared import Holdout
from gamerec.retrieval import holdout_recall


@dataclass
class Examples:
    """One sampler's training examples, one row per positive with its own negatives, and their default loss.

    The sampler's frame (rows grouped by positive: the positive's row(s), then its
    negatives) becomes tensors indexed by positive, so a batch is a set of positives and a
    user tower runs once per positive, whatever the loss.
    """

    users: torch.Tensor  # [G]
    positives: torch.Tensor  # [G] each row's positive item
    weights: torch.Tensor  # [G] the positive's BCE weight against its negatives (the sampler's balance)
    negatives: torch.Tensor  # [G, K] the sampler's negatives of each positive, 0 = none (K = 0: in_batch)
    neg_log_q: torch.Tensor | None  # [G, K] log probability of each negative's draw, where the sampler knows it
    log_q: torch.Tensor  # [G] log share of each positive's item among all positives: in-batch sampling
    loss: str  # the sampler's default loss, a name in gamerec.losses
    mixed_negatives: int = 0
    mining: dict | None = None  # the mined sampler's params: the model redraws the negatives
    layout: "SequenceLayout | None" = None  # attention tower: the positives as chunks of their users' sequences

    @classmethod
    def from_frame(cls, df: pd.DataFrame, manifest: dict) -> "Examples":
        label, weight = df["label"].to_numpy(), df["weight"].to_numpy(dtype=np.float64)
        user, item = df["user"].to_numpy(dtype=np.int64), df["item"].to_numpy(dtype=np.int64)
        positive = label == 1
        repeat = np.zeros(len(df), dtype=bool)  # an oversampled positive's copies belong to its first row
        repeat[1:] = positive[1:] & positive[:-1] & (user[1:] == user[:-1]) & (item[1:] == item[:-1])
        start = positive & ~repeat
        group = np.cumsum(start) - 1
        n = int(start.sum())
        negative = ~positive
        counts = np.bincount(group[negative], minlength=n)
        rank = np.arange(int(negative.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
        negatives = np.zeros((n, int(counts.max(initial=0))), dtype=np.int64)
        negatives[group[negative], rank] = item[negative]
        neg_log_q = None
        if "log_q" in df:  # the sampler knows its negatives' draw probabilities
            neg_log_q = np.zeros(negatives.shape, dtype=np.float32)
            neg_log_q[group[negative], rank] = df["log_q"].to_numpy()[negative]
        positives = item[start]
        share = np.bincount(positives, minlength=int(positives.max(initial=0)) + 1)[positives] / max(n, 1)
        return cls(
            users=torch.from_numpy(user[start].copy()), positives=torch.from_numpy(positives.copy()),
            weights=torch.from_numpy(np.bincount(group[positive], weight[positive], minlength=n).astype(np.float32)),
            negatives=torch.from_numpy(negatives), log_q=torch.from_numpy(np.log(share).astype(np.float32)),
            neg_log_q=None if neg_log_q is None else torch.from_numpy(neg_log_q),
            loss=manifest["loss"], mixed_negatives=int(manifest.get("mixed_negatives", 0)), mining=manifest.get("mining"),
        )

    def __len__(self) -> int:
        return len(self.users)

    def seen(self, num_items: int) -> torch.Tensor:
        """Sorted keys user * num_items + item of the positives (every train interaction)."""
        return torch.unique(self.users * num_items + self.positives)

    def items_of_users(self) -> Csr:
        """Each user's train items (rows by user id): what the losses mask as accidental hits."""
        return Csr.from_pairs(self.users, self.positives, int(self.users.max()) + 1 if len(self) else 1)

    def batches(self, batch_size: int, generator: torch.Generator, sequence_length: int = 0) -> list[torch.Tensor]:
        """An epoch's batches of positives, in a new random order.

        With `sequence_length` (the attention tower's history), whole chunks of users'
        sequences are shuffled and batched, about `batch_size` positives each, so that a chunk
        goes through the tower once; otherwise positives are shuffled one by one.
        """
        if not sequence_length:
            return list(torch.split(torch.randperm(len(self), generator=generator), batch_size))
        if self.layout is None or self.layout.length != sequence_length:
            self.layout = SequenceLayout.of(self.users, self.positives, sequence_length)
        return self.layout.batches(batch_size, generator)

    def batch(self, idx: torch.Tensor, dist: Dist) -> losses.Batch:
        """This process's part of the global batch of positives `idx`, on its device, with what of the whole batch a loss needs."""
        local, offset = dist.part(idx)
        to = lambda t: _to_device(t, dist.device)
        sequences = None if self.layout is None else self.layout.sequences(idx, local)
        if sequences is not None:
            sequences = Sequences(to(sequences.tokens), to(sequences.chunk), to(sequences.column))
        return losses.Batch(
            users=to(self.users[local]), positives=to(self.positives[local]), weights=to(self.weights[local]),
            negatives=to(self.negatives[local]), neg_log_q=None if self.neg_log_q is None else to(self.neg_log_q[local]),
            batch_users=to(self.users[idx]), batch_positives=to(self.positives[idx]), batch_log_q=to(self.log_q[idx]),
            offset=offset, sequences=sequences,
        )


@dataclass
class SequenceLayout:
    """The positives as chunks of their users' sequences `[START, item 1, item 2, ...]`, `length` tokens each.

    Positive j of a user (in time order) is predicted by the output at token j. A long user's
    chunks overlap by half: chunk c holds tokens [c s, c s + length) for the stride
    s = length - length // 2, and gives the outputs of the tokens no earlier chunk gave
    (chunk 0: tokens [0, length); chunk c > 0: its last s tokens), so every positive past the
    first chunk sees at least length // 2 items before it, as evaluation sees a full window.
    Non-overlapping chunks had left a chunk's first positives with one or two items.
    The positives must be every train item of each user, users contiguous and each user's
    items in time order, which is how every sampler writes them.
    """

    length: int
    tokens: torch.Tensor  # [chunks, length]
    chunk: torch.Tensor  # [positives] the chunk of each positive's output
    column: torch.Tensor  # [positives]
    first: torch.Tensor  # [chunks] the first positive of each chunk (its positives are consecutive)
    count: torch.Tensor  # [chunks] how many
    width: torch.Tensor  # [chunks] tokens in use (the rest is padding)

    @classmethod
    def of(cls, users: torch.Tensor, positives: torch.Tensor, length: int) -> "SequenceLayout":
        n = len(users)
        starts = torch.ones(n, dtype=torch.bool)
        starts[1:] = users[1:] != users[:-1]
        user = torch.cumsum(starts, 0) - 1  # 0, 1, ... per user, in order
        sizes = torch.bincount(user)
        if len(torch.unique(users)) != len(sizes):
            raise GamerecError("train: a user's positives are not consecutive; sample the negatives again")
        stride = length - length // 2
        t = torch.arange(n) - (torch.cumsum(sizes, 0) - sizes)[user]  # token t: START (t = 0) or item t - 1
        chunks = 1 + ((sizes - length).clamp(min=0) + stride - 1) // stride
        offset = (torch.cumsum(chunks, 0) - chunks)[user]
        own = torch.where(t < length, 0, 1 + (t - length).clamp(min=0) // stride)  # the chunk giving token t's output
        chunk, column = offset + own, t - own * stride
        tokens = torch.zeros(int(chunks.sum()), length, dtype=torch.long)
        value = torch.cat([torch.tensor([START]), positives[:-1]]).masked_fill(starts, START)  # token t of its user
        for c in (t // stride, t // stride - 1):  # the (at most) two chunks that hold token t
            inside = (c >= 0) & (c < chunks[user]) & (t - c * stride < length)
            tokens[(offset + c)[inside], (t - c * stride)[inside]] = value[inside]
        count = torch.bincount(chunk, minlength=len(tokens))
        first = torch.cumsum(count, 0) - count
        width = column[first + count - 1] + 1  # a chunk's last output is its last token in use
        return cls(length, tokens, chunk, column, first, count, width)

    def batches(self, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
        """Batches of about `batch_size` positives of whole chunks, the chunks in a random order.

        Random, not by length: in batches of alike length (a batch of users' first items) the
        batch's positives, which are the in-batch negatives, were far from the catalogue's
        distribution that logQ corrects for, and learnt less per epoch (validation 0.075 against
        0.091 after 5 epochs on the real data). The tower encodes a batch's chunks in passes of
        alike width, so random batches cost no padding (AttentionTower.forward).
        """
        order = torch.randperm(len(self.tokens), generator=generator)
        ends = torch.cumsum(self.count[order], 0)
        cut = torch.searchsorted(ends, torch.arange(batch_size, int(ends[-1]), batch_size), right=True)
        groups = [g for g in torch.tensor_split(order, torch.unique(cut[cut < len(order)]).tolist()) if len(g)]
        return [torch.repeat_interleave(self.first[g], self.count[g]) + _ranks(self.count[g]) for g in groups]

    def sequences(self, idx: torch.Tensor, rows: torch.Tensor) -> Sequences:
        """The global batch `idx`'s chunks (cut to the widest), and where `rows` (this process's part) read their outputs."""
        chunks = torch.unique_consecutive(self.chunk[idx])
        where = torch.full((len(self.tokens),), -1, dtype=torch.long)
        where[chunks] = torch.arange(len(chunks))
        widest = int(self.width[chunks].max())
        return Sequences(self.tokens[chunks, :widest], where[self.chunk[rows]], self.column[rows])


def _ranks(counts: torch.Tensor) -> torch.Tensor:
    """0, 1, ..., c - 1 for each count c, concatenated."""
    return torch.arange(int(counts.sum())) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)


def _to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A batch tensor on `device`; to CUDA through pinned memory, so the copy overlaps compute."""
    return tensor if device.type == "cpu" else tensor.pin_memory().to(device, non_blocking=True)


def loss_for(ex: Examples, model: TwoTower, params: TrainParams, generator: torch.Generator) -> losses.Loss:
    """`train.loss` (auto: the sampler's own) set up for `model`; draws (mixed negatives) come from `generator`."""
    num_items = model.config.num_items
    setup = losses.Setup(scale=model.logit_scale(), num_items=num_items, logq=params.logq,
                         mixed_negatives=ex.mixed_negatives, generator=generator,
                         seen=ex.items_of_users() if params.mask_seen else None)
    return losses.make(ex.loss if params.loss == "auto" else params.loss, setup)


def batch_loss(net: torch.nn.Module, loss: losses.Loss, ex: Examples, idx: torch.Tensor, dist: Dist | None = None) -> torch.Tensor:
    """The loss of the global batch of examples at `idx`; with N processes, this process's share of it.

    Each process computes its own part of the batch, scaled so that DDP's average of the N
    gradients is the gradient of the whole batch's loss, and the N losses average to it.
    """
    dist = dist or Dist()
    return loss(net, ex.batch(idx, dist), dist)


@torch.no_grad()
def validation_recall(model: TwoTower, val: Holdout, k: int, memory_mb: float, precision: str = "float32") -> float:
    """recall@k of the validation users over the full catalogue, train items excluded.

    Embeddings are computed on the model's device; the ranking runs on the CPU.
    """
    model.eval()
    device = next(model.parameters()).device
    user_emb = model.embed_users(val.users.to(device)).cpu()
    item_emb = model.embed_items(torch.arange(model.config.num_items, device=device)).cpu()
    recall = holdout_recall(val, user_emb, item_emb, k, memory_mb, precision)
    model.train()
    return recall


@dataclass
class Resume:
    """Where `fit` keeps its end-of-epoch state, and what that state must have been made from."""

    path: Path
    fingerprint: str  # of the data and params; a state with another one is ignored


def _load_state(resume: Resume) -> dict | None:
    if not resume.path.is_file():
        return None
    state = torch.load(resume.path, weights_only=True)
    known = state.get("fingerprint") == resume.fingerprint and "optimizer" in state  # not: an older gamerec's state
    return state if known else None


@dataclass
class TrainResult:
    """The best epoch's weights and what happened on the way there."""

    state_dict: dict
    best_epoch: int
    best_recall: float
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0  # wall time of the whole fit, validation included
    seconds_to_best: float = 0.0  # wall time until the best epoch's validation ended (this run's own epochs)
    positives_per_second: float = 0.0  # steady state: training positives through the optimiser per
    # second, after the first WARMUP_BATCHES batches of this run (allocator and caches warm)

    def keep(self, model: TwoTower, epoch: int, recall: float) -> bool:
        """Keep the model's weights if `recall` is the best so far; whether it was."""
        if recall <= self.best_recall:
            return False
        self.state_dict, self.best_epoch, self.best_recall = _cpu_copy(model.state_dict()), epoch, recall
        return True


WARMUP_BATCHES = 10
LONG_EPOCH_BATCHES = 500  # an epoch of this many batches or more shows its own progress bar


@dataclass
class _Clock:
    """Steady-state throughput: positives and seconds of the batches after the first WARMUP_BATCHES."""

    batches: int = 0
    seconds: float = 0.0
    positives: int = 0

    def tick(self, idx: torch.Tensor, started: float) -> None:
        self.batches += 1
        if self.batches > WARMUP_BATCHES:
            self.seconds += time.perf_counter() - started
            self.positives += len(idx)


def fit(
    model: TwoTower,
    ex: Examples,
    val: Holdout,
    params: TrainParams,
    on_epoch: Callable[[dict], None] | None = None,
    progress: bool = True,
    resume: Resume | None = None,
    dist: Dist | None = None,
) -> TrainResult:
    """Train with the examples' loss; stop after `patience` epochs without a better val recall@k.

    Deterministic for `params.seed`: the shuffles, dropout and mixed negatives all draw
    from generators seeded here. With `resume`, the state after each epoch is saved there
    (atomically), and a run that finds a state with the same fingerprint continues after its
    epoch and ends with the same weights as an uninterrupted run.

    With `dist` (several processes, see `gamerec.distributed`) the model trains as
    DistributedDataParallel on `dist.device`: every process draws the same order, trains its
    part of each global batch, and rank 0 ranks validation and saves the state; all
    processes return the same result. The returned weights are on the CPU.
    """
    dist = dist or Dist()
    if len(ex) == 0:
        raise GamerecError("train: the sampler wrote no examples; check data/negatives and prepare")
    generator, opt, loss = _setup(model, ex, params, dist)
    start, clock = time.perf_counter(), _Clock()
    best, waited, first_epoch = _restored(resume, model, opt, generator, dist, on_epoch, ex)
    sparse = model.sparse_tables()
    net = dist.wrap(model, sparse)
    model.train()
    bar = progress_bar.bar(range(first_epoch, params.epochs + 1), show=progress, desc="train", unit="epoch",
                           initial=first_epoch - 1, total=params.epochs)
    for epoch in bar:
        if waited >= params.patience:
            bar.total = epoch - 1  # early stopping: the bar ends where training did
            break
        cores.rebalance()  # a stage that started or ended beside this one changes our share
        if ex.mining and mining.due(ex.mining, epoch):
            ex.negatives, ex.neg_log_q = mining.mine(model, ex, ex.mining, generator, params.eval_memory_mb), None
        total = _epoch(net, loss, ex, opt, sparse, params.batch_size, generator, dist, clock, progress,
                       model.sequence_length())
        recall = dist.from_main(validation_recall(model, val, params.k, params.eval_memory_mb, params.eval_precision)
                                if dist.is_main else 0.0)
        row = {"epoch": epoch, "loss": total / len(ex), f"val_recall@{params.k}": recall}
        best.history.append(row)
        bar.set_postfix(loss=f"{row['loss']:.4f}", recall=f"{recall:.4f}")
        if on_epoch:
            on_epoch(row)
        if best.keep(model, epoch, recall):
            waited, best.seconds_to_best = 0, time.perf_counter() - start
        else:
            waited += 1
        if resume:
            _save_state(resume, model, opt, generator, dist, best, epoch, waited, ex)
    bar.close()
    model.to("cpu")
    best.seconds = time.perf_counter() - start
    best.positives_per_second = clock.positives / clock.seconds if clock.seconds else float("nan")
    return best


def _setup(model: TwoTower, ex: Examples, params: TrainParams, dist: Dist):
    """Seeds, the model on its device, its optimiser and the loss: (generator, optimiser, loss)."""
    torch.manual_seed(params.seed + dist.rank)  # dropout; rank 0 draws what a one-process run draws
    generator = torch.Generator().manual_seed(params.seed)  # the same order and extras on every process
    model.to(dist.device)
    opt = model.configure_optimizers(params)
    return generator, opt, loss_for(ex, model, params, generator)


def _epoch(net: torch.nn.Module, loss: losses.Loss, ex: Examples, opt: Adam,
           sparse: list[torch.nn.Parameter], batch_size: int, generator: torch.Generator, dist: Dist,
           clock: _Clock, progress: bool = False, sequence_length: int = 0) -> float:
    """One pass over the examples in a new shuffled order; returns the summed loss of every row."""
    batches = ex.batches(batch_size, generator, sequence_length)
    shown = progress and len(batches) >= LONG_EPOCH_BATCHES  # a bar of its own only when an epoch takes a while
    total = 0.0
    for idx in progress_bar.bar(batches, show=shown, desc="epoch", unit="batch", leave=False):
        if len(idx) < dist.world:  # the epoch's last, short batch cannot give every process a row
            continue
        started = time.perf_counter()
        value = batch_loss(net, loss, ex, idx, dist)
        opt.zero_grad()
        value.backward()
        dist.average_sparse_grads(sparse)
        opt.step()
        total += value.item() * len(idx) / dist.world  # the N parts' losses sum to the batch's
        clock.tick(idx, started)
    return dist.total(total)


def _restored(resume: Resume | None, model: TwoTower, opt: Adam, generator: torch.Generator,
              dist: Dist, on_epoch: Callable[[dict], None] | None, ex: Examples) -> tuple[TrainResult, int, int]:
    """(best so far, epochs waited, first epoch to run): a saved run's, or a fresh start's."""
    state = _load_state(resume) if resume else None
    if dist.world > 1 and dist.total(float(state is not None)) != dist.world:
        state = None  # resume only if every process found the state (machines without it start over)
    if state is None:
        return TrainResult(_cpu_copy(model.state_dict()), 0, -1.0), 0, 1
    # everything that decides the next epoch, so resuming changes nothing
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"][dist.rank])
    generator.set_state(state["generator"])
    if state.get("negatives") is not None:  # the mined sampler's last draw
        ex.negatives, ex.neg_log_q = state["negatives"], None
    best = TrainResult(state["best_state"], state["best_epoch"], state["best_recall"], state["history"])
    if dist.is_main:
        print(f"train: resuming after epoch {state['epoch']} from {resume.path}", file=sys.stderr)
    for row in best.history:
        if on_epoch:
            on_epoch(row)
    return best, state["waited"], state["epoch"] + 1


def _save_state(resume: Resume, model: TwoTower, opt: Adam, generator: torch.Generator,
                dist: Dist, best: TrainResult, epoch: int, waited: int, ex: Examples) -> None:
    """The end-of-epoch state, written atomically by rank 0 (every process's RNG, so each resumes its own)."""
    torch_rng = dist.gather_objects(torch.get_rng_state())
    if not dist.is_main:
        return
    state = {
        "epoch": epoch, "model": _cpu_copy(model.state_dict()), "optimizer": opt.state_dict(),
        "torch_rng": torch_rng, "generator": generator.get_state(),
        "best_state": best.state_dict, "best_epoch": best.best_epoch,
        "best_recall": best.best_recall, "history": best.history, "waited": waited,
        "negatives": ex.negatives if ex.mining else None,
    }
    with atomic_path(resume.path) as tmp:
        torch.save({**state, "fingerprint": resume.fingerprint}, tmp)


def _cpu_copy(state: dict) -> dict:
    """A copy of a state dict on the CPU: checkpoints load anywhere, and later steps cannot change it."""
    return {name: tensor.detach().to("cpu", copy=True) for name, tensor in state.items()}
