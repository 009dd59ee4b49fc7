"""The reference loop: the same model fed one example at a time, as a per-row Dataset would.

A per-row `torch.utils.data.Dataset` returns one training example (a positive and its
negatives) as a dict of tensors: its user's history window cut in Python, each item's
brand, price and description tokens; the DataLoader's default collate stacks them, with
descriptions padded to the longest in the batch; batches of `train.batch_size` positives. The
model, loss and optimiser are gamerec's own, so the only difference from
`gamerec.training.fit` is the data path: `naive_loss` equals `batch_loss` on the same positives (tests/test_bench.py checks it).

Usage (prints one JSON object): python bench/naive.py --workdir DIR --sampler NAME [--batches N]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset, default_collate

from gamerec import config, losses, model
from gamerec.csr import Csr
from gamerec.distributed import Dist
from gamerec.model import IdItemTower, IdPlusFeaturesItemTower, ItemTower, TwoTower, UserTower
from gamerec.prepared import ItemFeatures, Prepared
from gamerec.samplers import read_negatives
from gamerec.training import Examples

class PerRowExamples(Dataset):
    """One training example per index, built from plain arrays on every call."""

    def __init__(self, ex: Examples, features: ItemFeatures, history: Csr, arch: config.ModelParams):
        self.ex, self.features, self.history, self.cfg = ex, features, history, arch

    def __len__(self) -> int:
        return len(self.ex)

    def _window(self, user: int, positive: int) -> torch.Tensor:
        """Column j = the item j steps before the cut (0 = none), as the model's pooled history."""
        row = self.history.indices[self.history.indptr[user]: self.history.indptr[user + 1]]
        hit = np.flatnonzero(row == positive)
        end = int(hit[0]) if self.cfg.causal and len(hit) else len(row)
        window = np.zeros(self.cfg.history, dtype=np.int64)
        recent = row[max(0, end - self.cfg.history): end][::-1]
        window[: len(recent)] = recent
        if not self.cfg.causal:
            window[window == positive] = 0  # left out of the pool, its rank kept
        return torch.tensor(window)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        ex, f = self.ex, self.features
        user, positive = int(ex.users[i]), int(ex.positives[i])
        items = [positive, *ex.negatives[i].tolist()]  # 0: no negative (padding)
        row = {
            "user": torch.tensor(user),
            "positive": torch.tensor(positive),
            "weight": torch.tensor(float(ex.weights[i])),
            "negatives": ex.negatives[i].clone(),
            "log_q": torch.tensor(float(ex.log_q[i])),
            "brand": torch.tensor([int(f.brand[item]) for item in items]),
            "price": torch.tensor([[f.log_price_z[item], float(f.price_missing[item])] for item in items],
                                  dtype=torch.float32),
            "description": [torch.tensor(f.text.indices[f.text.indptr[item]: f.text.indptr[item + 1]], dtype=torch.long)
                            for item in items],
        }
        if ex.neg_log_q is not None:
            row["neg_log_q"] = ex.neg_log_q[i].clone()
        if self.cfg.history:
            row["history"] = self._window(user, positive)
        return row


def pad_collate(rows: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The default collate, with each item's description padded (token 0) to the longest in the batch."""
    descriptions = [bag for row in rows for bag in row.pop("description")]  # row-major: positive, then negatives
    batch = default_collate(rows)
    padded = pad_sequence(descriptions, batch_first=True, padding_value=0)
    batch["description"] = padded.reshape(len(rows), -1, padded.shape[-1])
    return batch


def _normalized(model: TwoTower, x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, dim=-1) if model.config.arch.normalize else x


def _features(tower: ItemTower, items: torch.Tensor, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """Brand, price and description embeddings of a collated batch (descriptions: padded bags, token 0 ignored)."""
    return [tower.brand(batch["brand"]), tower.price(batch["price"]),
            tower.text(batch["description"].reshape(items.numel(), -1)).reshape(*items.shape, -1)]


# each item tower's embeddings from a collated batch, with the tower's own layers (gamerec.model.ITEM_TOWERS)
ITEM_TOWERS = {
    ItemTower: lambda tower, items, batch: tower.mlp(torch.cat([tower.item(items), *_features(tower, items, batch)], -1)),
    IdPlusFeaturesItemTower: lambda tower, items, batch: tower.item(items) + tower.mlp(
        torch.cat(_features(tower, items, batch), -1)),
    IdItemTower: lambda tower, items, batch: tower.item(items),
}


def naive_loss(model: TwoTower, batch: dict[str, torch.Tensor], params: config.TrainParams, loss_name: str,
               seen: Csr | None = None) -> torch.Tensor:
    """The loss of a collated batch, the embeddings computed from it with the model's own layers."""
    items = torch.cat([batch["positive"][:, None], batch["negatives"]], dim=1)  # [b, 1 + K]
    item_emb = _normalized(model, ITEM_TOWERS[type(model.item_tower)](model.item_tower, items, batch))
    users = model.user_tower
    if not isinstance(users, UserTower):
        raise SystemExit(f"bench/naive.py: the per-row loop feeds the pool user tower, not {type(users).__name__}")
    parts = [users.embedding(batch["user"])] if users.embedding is not None else []
    if users.pooled:
        history = batch["history"]
        weight = (history > 0).float()
        if users.recency is not None:
            weight = weight * torch.exp(users.recency)[None, :]
        total = (users.item_embedding(history) * weight[..., None]).sum(1)
        parts.append(total / weight.sum(1).clamp(min=1e-6)[:, None])
    user_emb = _normalized(model, users.mlp(torch.cat(parts, dim=-1)))
    # the library's loss, given these embeddings in the order its one forward would return them
    flat = torch.cat([item_emb[:, 0], item_emb[:, 1:].reshape(-1, item_emb.shape[-1])])
    rows = losses.Batch(users=batch["user"], positives=batch["positive"], weights=batch["weight"],
                        negatives=batch["negatives"], neg_log_q=batch.get("neg_log_q"), batch_users=batch["user"],
                        batch_positives=batch["positive"], batch_log_q=batch["log_q"], offset=0)
    setup = losses.Setup(model.logit_scale(), model.config.num_items, params.logq, 0, torch.Generator(), seen)
    return losses.make(loss_name, setup)(lambda *_: (user_emb, flat), rows, Dist())


def measure(model: TwoTower, loader: DataLoader, params: config.TrainParams, loss_name: str, batches: int,
            warmup: int, seen: Csr | None = None) -> dict:
    """Train `warmup` + `batches` batches; the steady-state rate counts the last `batches`."""
    opt = model.configure_optimizers(params)
    model.train()
    seconds, positives, done = 0.0, 0, 0
    start = time.perf_counter()
    for batch in loader:  # loading counts: it is the point of the comparison
        loss = naive_loss(model, batch, params, loss_name, seen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        done += 1
        now = time.perf_counter()
        if done > warmup:
            seconds += now - start
            positives += len(batch["user"])
        start = now
        if done >= warmup + batches:
            break
    return {"batches": done - warmup, "positives": positives, "seconds": seconds,
            "positives_per_second": positives / seconds if seconds else float("nan")}


def load(workdir: Path, sampler: str) -> tuple[TwoTower, Examples, PerRowExamples, config.TrainParams]:
    """The model (fresh weights, as train builds it) and the sampler's examples of a bench folder."""
    params_file = workdir / "params.yaml"
    where = config.load(config.Paths, "paths", params_file)
    prepared = Prepared(workdir / where.prepared)
    model_params = config.load(config.ModelParams, "model", params_file)
    params = config.load(config.TrainParams, "train", params_file)
    two_tower = model.build(prepared, model_params, params.seed)
    ex = Examples.from_frame(*read_negatives(workdir / where.negatives / sampler))
    return two_tower, ex, PerRowExamples(ex, prepared.item_features(), prepared.history(), model_params), params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True, help="a bench folder after its sample_negatives steps")
    parser.add_argument("--sampler", required=True)
    parser.add_argument("--batches", type=int, default=30, help="timed batches, after 5 of warm-up")
    args = parser.parse_args()
    model, _, dataset, params = load(args.workdir, args.sampler)
    loader = DataLoader(dataset, batch_size=params.batch_size, shuffle=True, collate_fn=pad_collate,
                        generator=torch.Generator().manual_seed(params.seed))
    loss_name = dataset.ex.loss if params.loss == "auto" else params.loss
    seen = dataset.ex.items_of_users() if params.mask_seen else None
    json.dump(measure(model, loader, params, loss_name, args.batches, warmup=5, seen=seen), sys.stdout)
    print()


if __name__ == "__main__":
    main()
