"""Training a two-tower model on one sampler's examples, with early stopping on validation.

Batches are slices of a shuffled index into whole-data tensors: no per-row Dataset, no
collate function. The loss follows the sampler's manifest: weighted binary cross-entropy
for explicit negatives (out_batch, also_view), a batch softmax for in_batch.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from gamerec import csr
from gamerec.config import TrainParams
from gamerec.distributed import Dist
from gamerec.errors import GamerecError
from gamerec.io import atomic_path
from gamerec.metrics import ranking_metrics
from gamerec.model import ItemFeatures, TwoTower, UserHistory
from gamerec.retrieval import rank_and_top_k


@dataclass
class Examples:
    """One sampler's training examples as tensors, and the loss they are for."""

    users: torch.Tensor
    items: torch.Tensor
    labels: torch.Tensor
    weights: torch.Tensor
    positives: torch.Tensor  # the positive item each row belongs to (its history is cut there)
    log_q: torch.Tensor | None  # in_batch: log sampling probability of each positive's item
    loss: str  # "bce" | "softmax"
    mixed_negatives: int = 0

    @classmethod
    def from_frame(cls, df: pd.DataFrame, manifest: dict) -> "Examples":
        col = lambda name, dtype: torch.tensor(df[name].to_numpy(), dtype=dtype)  # a copy: parquet arrays are read-only
        return cls(
            users=col("user", torch.long),
            items=col("item", torch.long),
            labels=col("label", torch.float32),
            weights=col("weight", torch.float32),
            positives=col("positive", torch.long),
            log_q=col("log_q", torch.float32) if "log_q" in df else None,
            loss=manifest["loss"],
            mixed_negatives=int(manifest.get("mixed_negatives", 0)),
        )

    def __len__(self) -> int:
        return len(self.users)


@dataclass
class Holdout:
    """Users to rank the catalogue for, what to hide from them, and what they really chose."""

    users: torch.Tensor  # [U] user ids
    exclude: tuple[torch.Tensor, torch.Tensor]  # CSR, row r = items hidden from users[r]
    targets: tuple[torch.Tensor, torch.Tensor]  # CSR, row r = held-out items of users[r]
    owner: torch.Tensor  # row of each held-out item, in the targets CSR order
    items: torch.Tensor  # the held-out items, in the same order

    def rank(self, user_emb: torch.Tensor, item_emb: torch.Tensor, k: int, memory_mb: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Rank of every held-out item and each user's top k (`user_emb` row r = users[r])."""
        return rank_and_top_k(user_emb, item_emb, self.exclude, self.targets, k, memory_mb)

    def recall(self, user_emb: torch.Tensor, item_emb: torch.Tensor, k: int, memory_mb: float) -> float:
        """recall@k of these users over the full catalogue, their hidden items excluded."""
        ranks, _ = self.rank(user_emb, item_emb, k, memory_mb)
        return ranking_metrics(ranks, self.owner, len(self.users), [k])[f"recall@{k}"]

    def sample(self, n: int, seed: int) -> "Holdout":
        """n of these users drawn with `seed`, in id order; all of them when n is 0 or not fewer.

        Ranking a million users over the catalogue takes minutes; early stopping and model
        choices need a recall, not every user (50k users give it to about +-0.003).
        """
        if n == 0 or n >= len(self.users):
            return self
        keep = torch.randperm(len(self.users), generator=torch.Generator().manual_seed(seed))[:n].sort().values
        select = lambda matrix: csr.from_pairs(*csr.gather(*matrix, keep), n)
        targets = select(self.targets)
        owner, items = csr.gather(*targets, torch.arange(n))
        return Holdout(self.users[keep], select(self.exclude), targets, owner, items)


def holdout(interactions: pd.DataFrame, split: str, hide: tuple[str, ...] = ("train",)) -> Holdout:
    """Holdout of the users with `split` interactions; their `hide` splits' items are excluded."""
    held = interactions[interactions.split == split]
    users = np.unique(held.user.to_numpy())
    row_of = pd.Series(np.arange(len(users)), index=users)

    def csr_of(df: pd.DataFrame) -> tuple[torch.Tensor, torch.Tensor]:
        df = df[df.user.isin(users)]
        rows = torch.tensor(row_of[df.user.to_numpy()].to_numpy(), dtype=torch.long)
        return csr.from_pairs(rows, torch.tensor(df.item.to_numpy(), dtype=torch.long), len(users))

    targets = csr_of(held)
    owner, items = csr.gather(*targets, torch.arange(len(users)))
    return Holdout(
        users=torch.as_tensor(users, dtype=torch.long),
        exclude=csr_of(interactions[interactions.split.isin(hide)]),
        targets=targets,
        owner=owner,
        items=items,
    )


def item_features(prepared_dir: Path, stats: dict) -> ItemFeatures:
    """Item feature arrays from the prepared folder, price as a standardised log price."""
    items = pd.read_parquet(prepared_dir / "items.parquet")
    price = items.price.to_numpy(dtype=np.float64)
    missing = items.price_missing.to_numpy(dtype=bool)
    z = (np.log1p(np.where(missing, 0.0, price)) - stats["log_price_mean"]) / max(stats["log_price_std"], 1e-6)
    with np.load(prepared_dir / "text.npz") as text:
        indptr, indices = text["indptr"], text["indices"]
    return ItemFeatures(
        brand=items.brand.to_numpy(dtype=np.int64),
        log_price_z=np.where(missing, 0.0, z).astype(np.float32),
        price_missing=missing,
        text_indptr=indptr.astype(np.int64),
        text_indices=indices.astype(np.int64),
    )


def user_history(interactions: pd.DataFrame, num_users: int, splits: tuple[str, ...] = ("train",)) -> UserHistory:
    """Each user's items of `splits` in time order (CSR by user id), for the pooled user tower."""
    train = interactions[interactions.split.isin(splits)].sort_values(["user", "timestamp", "item"], kind="stable")
    indptr, indices = csr.from_pairs(
        torch.tensor(train.user.to_numpy(), dtype=torch.long), torch.tensor(train.item.to_numpy(), dtype=torch.long), num_users
    )
    return UserHistory(indptr.numpy(), indices.numpy())


def bce_loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy, weighted so up-weighted positives balance their negatives."""
    per_example = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    return (per_example * weights).sum() / weights.sum()


def in_batch_logits(
    user_emb: torch.Tensor,
    item_emb: torch.Tensor,
    items: torch.Tensor,
    scale: float,
    log_q: torch.Tensor | None = None,
    extra_emb: torch.Tensor | None = None,
    extra_items: torch.Tensor | None = None,
    extra_log_q: float = 0.0,
    offset: int = 0,
) -> torch.Tensor:
    """Logits of each user's row against the batch's items (and shared extras); row i's positive is column offset + i.

    logQ correction (Yi et al., RecSys 2019): popular items are over-represented as
    in-batch negatives, so each candidate's logit is lowered by its log sampling
    probability. Accidental hits, the row's positive item appearing elsewhere in the batch
    or among the extras, are masked out (-inf) rather than pushed down. With several
    processes the columns are the whole global batch and the rows this process's part of
    it, starting at `offset`: logQ and the masking are global.
    """
    rows = torch.arange(len(user_emb), device=user_emb.device)
    row_items = items[offset : offset + len(user_emb)]
    logits = user_emb @ item_emb.T * scale
    if log_q is not None:
        logits = logits - log_q[None, :]
    same = items[None, :] == row_items[:, None]
    same[rows, offset + rows] = False  # the row's own positive
    logits = logits.masked_fill(same, float("-inf"))
    if extra_emb is not None:
        extra = user_emb @ extra_emb.T * scale - extra_log_q
        extra = extra.masked_fill(extra_items[None, :] == row_items[:, None], float("-inf"))
        logits = torch.cat([logits, extra], dim=1)
    return logits


def in_batch_softmax_loss(*args, reduction: str = "mean", **kwargs) -> torch.Tensor:
    """Cross-entropy of `in_batch_logits(*args, **kwargs)` with each row's own item as the label."""
    logits = in_batch_logits(*args, **kwargs)
    labels = kwargs.get("offset", 0) + torch.arange(len(logits), device=logits.device)
    return F.cross_entropy(logits, labels, reduction=reduction)


def _to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A batch tensor on `device`; to CUDA through pinned memory, so the copy overlaps compute."""
    return tensor if device.type == "cpu" else tensor.pin_memory().to(device, non_blocking=True)


def batch_loss(
    model: TwoTower | DistributedDataParallel, ex: Examples, idx: torch.Tensor, params: TrainParams,
    generator: torch.Generator, dist: Dist | None = None,
) -> torch.Tensor:
    """The loss of the global batch of examples at `idx`, as the sampler's manifest says.

    With `dist` of N processes, each computes its own part of the batch, scaled so that
    DDP's average of the N gradients is the gradient of the whole batch's loss, and the N
    losses average to it. For in_batch the item embeddings of every part are gathered, so
    each row is scored against the items of the whole global batch.
    """
    dist = dist or Dist()
    core = model.module if isinstance(model, DistributedDataParallel) else model
    local, offset = dist.part(idx)
    to = lambda t: _to_device(t, dist.device)
    users, items, positives = to(ex.users[local]), to(ex.items[local]), to(ex.positives[local])
    if ex.loss == "bce":
        user_emb, item_emb = model(users, items, positives)
        logits = (user_emb * item_emb).sum(-1) * core.logit_scale()
        per_example = F.binary_cross_entropy_with_logits(logits, to(ex.labels[local]), reduction="none")
        # weights normalised over the whole batch, as one process would; times N, as DDP averages
        return (per_example * to(ex.weights[local])).sum() * (dist.world / float(ex.weights[idx].sum()))
    extra_items = None
    extra_log_q = 0.0
    if ex.mixed_negatives:  # the same draw on every process: one set of extras per global batch
        num_items = core.config.num_items
        extra_items = to(torch.randint(1, num_items, (ex.mixed_negatives,), generator=generator))
        # on the scale of log_q: expected draws of an item per batch row
        extra_log_q = math.log(ex.mixed_negatives / (len(idx) * (num_items - 1))) if params.logq else 0.0
    # one forward through the (DDP-wrapped) model: the batch's items, then the extras
    user_emb, item_emb = model(users, items if extra_items is None else torch.cat([items, extra_items]), items)
    item_emb, extra_emb = item_emb[: len(items)], (item_emb[len(items) :] if extra_items is not None else None)
    log_q = to(ex.log_q[idx]) if params.logq and ex.log_q is not None else None
    loss = in_batch_softmax_loss(
        user_emb, dist.gather_rows(item_emb, len(idx)), to(ex.items[idx]), core.logit_scale(), log_q,
        extra_emb, extra_items, extra_log_q, offset=offset, reduction="sum",
    )
    return loss * (dist.world / len(idx))


@torch.no_grad()
def validation_recall(model: TwoTower, val: Holdout, k: int, memory_mb: float) -> float:
    """recall@k of the validation users over the full catalogue, train items excluded.

    Embeddings are computed on the model's device; the ranking runs on the CPU.
    """
    model.eval()
    device = next(model.parameters()).device
    user_emb = model.embed_users(val.users.to(device)).cpu()
    item_emb = model.embed_items(torch.arange(model.config.num_items, device=device)).cpu()
    recall = val.recall(user_emb, item_emb, k, memory_mb)
    model.train()
    return recall


def sparse_tables(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The weights of the embedding tables that get sparse gradients (set by `optimizers` for lazy_adam)."""
    return [m.weight for m in model.modules() if isinstance(m, (torch.nn.Embedding, torch.nn.EmbeddingBag)) and m.sparse]


def optimizers(model: TwoTower, params: TrainParams) -> list[torch.optim.Optimizer]:
    """Adam over every weight, or (lazy_adam) SparseAdam over the embedding tables beside Adam.

    With dense gradients each step writes the whole item and token tables (100k items x 128:
    most of a step's time at scale); sparse gradients touch only the rows a batch used.
    """
    if params.optimizer == "adam":
        return [torch.optim.Adam(model.parameters(), lr=params.lr, weight_decay=params.weight_decay)]
    tables = [m for m in model.modules() if isinstance(m, (torch.nn.Embedding, torch.nn.EmbeddingBag))]
    for table in tables:
        table.sparse = True
    sparse = {id(table.weight) for table in tables}
    dense = [p for p in model.parameters() if id(p) not in sparse]
    return [torch.optim.SparseAdam([t.weight for t in tables], lr=params.lr), torch.optim.Adam(dense, lr=params.lr)]


@dataclass
class Resume:
    """Where `fit` keeps its end-of-epoch state, and what that state must have been made from."""

    path: Path
    fingerprint: str  # of the data and params; a state with another one is ignored


def _save_state(resume: Resume, state: dict) -> None:
    with atomic_path(resume.path) as tmp:
        torch.save({**state, "fingerprint": resume.fingerprint}, tmp)


def _load_state(resume: Resume) -> dict | None:
    if not resume.path.is_file():
        return None
    state = torch.load(resume.path, weights_only=True)
    return state if state.get("fingerprint") == resume.fingerprint else None


@dataclass
class TrainResult:
    """The best epoch's weights and what happened on the way there."""

    state_dict: dict
    best_epoch: int
    best_recall: float
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0  # wall time of the whole fit, validation included
    positives_per_second: float = 0.0  # steady state: training positives through the optimiser per
    # second, after the first WARMUP_BATCHES batches of this run (allocator and caches warm)


WARMUP_BATCHES = 10


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
    """Adam with weight decay; stop after `patience` epochs without a better val recall@k.

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
    torch.manual_seed(params.seed + dist.rank)  # dropout; rank 0 draws what a one-process run draws
    generator = torch.Generator().manual_seed(params.seed)  # the same order and extras on every process
    model.to(dist.device)
    opts = optimizers(model, params)
    best = TrainResult(_cpu_copy(model.state_dict()), 0, -1.0)
    is_positive = ex.labels > 0
    start, waited, first_epoch = time.perf_counter(), 0, 1
    batches, steady_seconds, steady_positives = 0, 0.0, 0
    state = _load_state(resume) if resume else None
    if dist.world > 1 and dist.total(float(state is not None)) != dist.world:
        state = None  # resume only if every process found the state (machines without it start over)
    if state is not None:  # everything that decides the next epoch, so resuming changes nothing
        model.load_state_dict(state["model"])
        for opt, saved in zip(opts, state["optimizers"]):
            opt.load_state_dict(saved)
        torch.set_rng_state(state["torch_rng"][dist.rank])
        generator.set_state(state["generator"])
        best = TrainResult(state["best_state"], state["best_epoch"], state["best_recall"], state["history"])
        waited, first_epoch = state["waited"], state["epoch"] + 1
        if dist.is_main:
            print(f"train: resuming after epoch {state['epoch']} from {resume.path}", file=sys.stderr)
        for row in best.history:
            if on_epoch:
                on_epoch(row)
    sparse = sparse_tables(model)
    net = dist.wrap(model, sparse)
    model.train()
    bar = tqdm(range(first_epoch, params.epochs + 1), desc="train", unit="epoch", disable=not progress)
    for epoch in bar:
        if waited >= params.patience:
            break
        order = torch.randperm(len(ex), generator=generator)
        total = 0.0
        for idx in torch.split(order, params.batch_size):
            if len(idx) < dist.world:  # the epoch's last, short batch cannot give every process a row
                continue
            batch_start = time.perf_counter()
            loss = batch_loss(net, ex, idx, params, generator, dist)
            for opt in opts:
                opt.zero_grad(set_to_none=True)
            loss.backward()
            dist.average_sparse_grads(sparse)
            for opt in opts:
                opt.step()
            total += loss.item() * len(idx) / dist.world  # the N parts' losses sum to the batch's
            batches += 1
            if batches > WARMUP_BATCHES:
                steady_seconds += time.perf_counter() - batch_start
                steady_positives += int(is_positive[idx].sum())
        total = dist.total(total)
        recall = dist.from_main(validation_recall(model, val, params.k, params.eval_memory_mb) if dist.is_main else 0.0)
        row = {"epoch": epoch, "loss": total / len(ex), f"val_recall@{params.k}": recall}
        best.history.append(row)
        bar.set_postfix(loss=f"{row['loss']:.4f}", recall=f"{recall:.4f}")
        if on_epoch:
            on_epoch(row)
        if recall > best.best_recall:
            best.state_dict, best.best_epoch, best.best_recall = _cpu_copy(model.state_dict()), epoch, recall
            waited = 0
        else:
            waited += 1
        if resume:
            torch_rng = dist.gather_objects(torch.get_rng_state())  # every process's, so each resumes its own
            if dist.is_main:
                _save_state(resume, {
                    "epoch": epoch, "model": _cpu_copy(model.state_dict()), "optimizers": [opt.state_dict() for opt in opts],
                    "torch_rng": torch_rng, "generator": generator.get_state(),
                    "best_state": best.state_dict, "best_epoch": best.best_epoch,
                    "best_recall": best.best_recall, "history": best.history, "waited": waited,
                })
    model.to("cpu")
    best.seconds = time.perf_counter() - start
    best.positives_per_second = steady_positives / steady_seconds if steady_seconds else float("nan")
    return best


def _cpu_copy(state: dict) -> dict:
    """A copy of a state dict on the CPU: checkpoints load anywhere, and later steps cannot change it."""
    return {name: tensor.detach().to("cpu", copy=True) for name, tensor in state.items()}
