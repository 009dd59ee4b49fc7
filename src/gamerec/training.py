"""Training a two-tower model on one sampler's examples, with early stopping on validation.

Batches are slices of a shuffled index into whole-data tensors: no per-row Dataset, no
collate function. The loss follows the sampler's manifest: weighted binary cross-entropy
for explicit negatives (out_batch, also_view), a batch softmax for in_batch.
"""

from __future__ import annotations

import copy
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
from tqdm import tqdm

from gamerec import csr
from gamerec.config import TrainParams
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
) -> torch.Tensor:
    """Logits of each user's row against the batch's items (and shared extras); row i's positive is column i.

    logQ correction (Yi et al., RecSys 2019): popular items are over-represented as
    in-batch negatives, so each candidate's logit is lowered by its log sampling
    probability. Accidental hits, the row's positive item appearing elsewhere in the batch
    or among the extras, are masked out (-inf) rather than pushed down.
    """
    logits = user_emb @ item_emb.T * scale
    if log_q is not None:
        logits = logits - log_q[None, :]
    same = items[None, :] == items[:, None]
    same.fill_diagonal_(False)
    logits = logits.masked_fill(same, float("-inf"))
    if extra_emb is not None:
        extra = user_emb @ extra_emb.T * scale - extra_log_q
        extra = extra.masked_fill(extra_items[None, :] == items[:, None], float("-inf"))
        logits = torch.cat([logits, extra], dim=1)
    return logits


def in_batch_softmax_loss(*args, **kwargs) -> torch.Tensor:
    """Cross-entropy of `in_batch_logits(*args, **kwargs)` with each row's own item as the label."""
    logits = in_batch_logits(*args, **kwargs)
    return F.cross_entropy(logits, torch.arange(len(logits)))


def batch_loss(
    model: TwoTower, ex: Examples, idx: torch.Tensor, params: TrainParams, generator: torch.Generator
) -> torch.Tensor:
    """The loss of the examples at `idx`, as the sampler's manifest says."""
    users, items = ex.users[idx], ex.items[idx]
    if ex.loss == "bce":
        return bce_loss(model.score(users, items, ex.positives[idx]), ex.labels[idx], ex.weights[idx])
    user_emb, item_emb = model(users, items)
    log_q = ex.log_q[idx] if params.logq and ex.log_q is not None else None
    extra_emb = extra_items = None
    extra_log_q = 0.0
    if ex.mixed_negatives:
        num_items = model.config.num_items
        extra_items = torch.randint(1, num_items, (ex.mixed_negatives,), generator=generator)
        extra_emb = model.embed_items(extra_items)
        # on the scale of log_q: expected draws of an item per batch row
        extra_log_q = math.log(ex.mixed_negatives / (len(idx) * (num_items - 1))) if params.logq else 0.0
    return in_batch_softmax_loss(
        user_emb, item_emb, items, model.logit_scale(), log_q, extra_emb, extra_items, extra_log_q
    )


@torch.no_grad()
def validation_recall(model: TwoTower, val: Holdout, k: int, memory_mb: float) -> float:
    """recall@k of the validation users over the full catalogue, train items excluded."""
    model.eval()
    user_emb = model.embed_users(val.users)
    item_emb = model.embed_items(torch.arange(model.config.num_items))
    recall = val.recall(user_emb, item_emb, k, memory_mb)
    model.train()
    return recall


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
) -> TrainResult:
    """Adam with weight decay; stop after `patience` epochs without a better val recall@k.

    Deterministic for `params.seed`: the shuffles, dropout and mixed negatives all draw
    from generators seeded here. With `resume`, the state after each epoch is saved there
    (atomically), and a run that finds a state with the same fingerprint continues after its
    epoch and ends with the same weights as an uninterrupted run.
    """
    if len(ex) == 0:
        raise GamerecError("train: the sampler wrote no examples; check data/negatives and prepare")
    torch.manual_seed(params.seed)
    generator = torch.Generator().manual_seed(params.seed)
    opts = optimizers(model, params)
    best = TrainResult(copy.deepcopy(model.state_dict()), 0, -1.0)
    is_positive = ex.labels > 0
    start, waited, first_epoch = time.perf_counter(), 0, 1
    batches, steady_seconds, steady_positives = 0, 0.0, 0
    state = _load_state(resume) if resume else None
    if state is not None:  # everything that decides the next epoch, so resuming changes nothing
        model.load_state_dict(state["model"])
        for opt, saved in zip(opts, state["optimizers"]):
            opt.load_state_dict(saved)
        torch.set_rng_state(state["torch_rng"])
        generator.set_state(state["generator"])
        best = TrainResult(state["best_state"], state["best_epoch"], state["best_recall"], state["history"])
        waited, first_epoch = state["waited"], state["epoch"] + 1
        print(f"train: resuming after epoch {state['epoch']} from {resume.path}", file=sys.stderr)
        for row in best.history:
            if on_epoch:
                on_epoch(row)
    model.train()
    bar = tqdm(range(first_epoch, params.epochs + 1), desc="train", unit="epoch", disable=not progress)
    for epoch in bar:
        if waited >= params.patience:
            break
        order = torch.randperm(len(ex), generator=generator)
        total = 0.0
        for idx in torch.split(order, params.batch_size):
            batch_start = time.perf_counter()
            loss = batch_loss(model, ex, idx, params, generator)
            for opt in opts:
                opt.zero_grad(set_to_none=True)
            loss.backward()
            for opt in opts:
                opt.step()
            total += loss.item() * len(idx)
            batches += 1
            if batches > WARMUP_BATCHES:
                steady_seconds += time.perf_counter() - batch_start
                steady_positives += int(is_positive[idx].sum())
        recall = validation_recall(model, val, params.k, params.eval_memory_mb)
        row = {"epoch": epoch, "loss": total / len(ex), f"val_recall@{params.k}": recall}
        best.history.append(row)
        bar.set_postfix(loss=f"{row['loss']:.4f}", recall=f"{recall:.4f}")
        if on_epoch:
            on_epoch(row)
        if recall > best.best_recall:
            best.state_dict, best.best_epoch, best.best_recall = copy.deepcopy(model.state_dict()), epoch, recall
            waited = 0
        else:
            waited += 1
        if resume:
            _save_state(resume, {
                "epoch": epoch, "model": model.state_dict(), "optimizers": [opt.state_dict() for opt in opts],
                "torch_rng": torch.get_rng_state(), "generator": generator.get_state(),
                "best_state": best.state_dict, "best_epoch": best.best_epoch,
                "best_recall": best.best_recall, "history": best.history, "waited": waited,
            })
    best.seconds = time.perf_counter() - start
    best.positives_per_second = steady_positives / steady_seconds if steady_seconds else float("nan")
    return best
