"""The reference loop: how the older project fed the same model, one example at a time.

A per-row `torch.utils.data.Dataset` returns one training example as a dict of tensors (its
user's history window cut in Python, its item's brand, price and description tokens); the
DataLoader's default collate stacks them, with descriptions padded to the longest in the
batch; batches of 512. The model, loss and optimiser are gamerec's own, so the only
difference from `gamerec.training.fit` is the data path: `naive_loss` equals `batch_loss`
on the same rows (tests/test_bench.py checks it).

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
from gamerec.model import TwoTower
from gamerec.prepared import ItemFeatures, Prepared
from gamerec.samplers import read_negatives
from gamerec.training import Examples

BATCH_SIZE = 512  # the older project's batch


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
        user, item, positive = int(ex.users[i]), int(ex.items[i]), int(ex.positives[i])
        tokens = f.text.indices[f.text.indptr[item]: f.text.indptr[item + 1]]
        row = {
            "user": torch.tensor(user),
            "item": torch.tensor(item),
            "label": torch.tensor(float(ex.labels[i])),
            "weight": torch.tensor(float(ex.weights[i])),
            "brand": torch.tensor(int(f.brand[item])),
            "price": torch.tensor([f.log_price_z[item], float(f.price_missing[item])], dtype=torch.float32),
            "description": torch.tensor(tokens, dtype=torch.long),
        }
        if self.cfg.history:
            row["history"] = self._window(user, positive)
        if ex.log_q is not None:
            row["log_q"] = torch.tensor(float(ex.log_q[i]))
        return row


def pad_collate(rows: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The default collate, with descriptions padded (token 0) to the longest in the batch."""
    descriptions = [row.pop("description") for row in rows]
    batch = default_collate(rows)
    batch["description"] = pad_sequence(descriptions, batch_first=True, padding_value=0)
    return batch


def _normalized(model: TwoTower, x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, dim=-1) if model.config.arch.normalize else x


def naive_loss(model: TwoTower, batch: dict[str, torch.Tensor], logq: bool) -> torch.Tensor:
    """The sampler's loss computed from a collated batch with the model's own layers."""
    items, tower = batch["item"], model.item_tower
    parts = [tower.item(items), tower.brand(batch["brand"]), tower.price(batch["price"]),
             tower.text(batch["description"])]  # a [B, L] bag with padding_idx 0: mean of the real tokens
    item_emb = _normalized(model, tower.mlp(torch.cat(parts, dim=-1)))
    users = model.user_tower
    parts = [users.embedding(batch["user"])] if users.embedding is not None else []
    if users.pooled:
        history = batch["history"]
        weight = (history > 0).float()
        if users.recency is not None:
            weight = weight * torch.exp(users.recency)[None, :]
        total = (users.item_embedding(history) * weight[..., None]).sum(1)
        parts.append(total / weight.sum(1).clamp(min=1e-6)[:, None])
    user_emb = _normalized(model, users.mlp(torch.cat(parts, dim=-1)))
    scale = model.logit_scale()
    if "log_q" not in batch:  # the library's weighted BCE
        return losses.bce((user_emb * item_emb).sum(-1) * scale, batch["label"], batch["weight"],
                          1 / float(batch["weight"].sum()))
    # the library's batch softmax, fed these embeddings instead of the model's forward
    ones = torch.ones(len(items))
    rows = losses.Batch(users=items, items=items, positives=items, labels=ones, weights=ones, batch_items=items,
                        batch_log_q=batch["log_q"] if logq else None, total_weight=float(len(items)),
                        size=len(items), offset=0)
    softmax = losses.BatchSoftmax(losses.Setup(scale, model.config.num_items, logq, 0, torch.Generator()))
    return softmax(lambda *_: (user_emb, item_emb), rows, Dist())


def measure(model: TwoTower, loader: DataLoader, params: config.TrainParams, batches: int, warmup: int) -> dict:
    """Train `warmup` + `batches` batches; the steady-state rate counts the last `batches`."""
    opts = model.configure_optimizers(params)
    model.train()
    seconds, positives, done = 0.0, 0, 0
    start = time.perf_counter()
    for batch in loader:  # loading counts: it is the point of the comparison
        loss = naive_loss(model, batch, params.logq)
        for opt in opts:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        for opt in opts:
            opt.step()
        done += 1
        now = time.perf_counter()
        if done > warmup:
            seconds += now - start
            positives += int((batch["label"] > 0).sum())
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
    loader = DataLoader(dataset, batch_size=BATCH_SIZE, shuffle=True, collate_fn=pad_collate,
                        generator=torch.Generator().manual_seed(params.seed))
    json.dump(measure(model, loader, params, args.batches, warmup=5), sys.stdout)
    print()


if __name__ == "__main__":
    main()
