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
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset, default_collate

from gamerec import config
from gamerec.model import ItemFeatures, ModelConfig, TwoTower, UserHistory
from gamerec.samplers import read_negatives
from gamerec.training import Examples, bce_loss, in_batch_softmax_loss, item_features, optimizers, user_history

BATCH_SIZE = 512  # the older project's batch


class PerRowExamples(Dataset):
    """One training example per index, built from plain arrays on every call."""

    def __init__(self, ex: Examples, features: ItemFeatures, history: UserHistory, cfg: ModelConfig):
        self.ex, self.features, self.history, self.cfg = ex, features, history, cfg

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
        tokens = f.text_indices[f.text_indptr[item]: f.text_indptr[item + 1]]
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
    return F.normalize(x, dim=-1) if model.config.normalize else x


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
    if "log_q" not in batch:
        return bce_loss((user_emb * item_emb).sum(-1) * model.logit_scale(), batch["label"], batch["weight"])
    return in_batch_softmax_loss(user_emb, item_emb, items, model.logit_scale(), batch["log_q"] if logq else None)


def measure(model: TwoTower, loader: DataLoader, params: config.TrainParams, batches: int, warmup: int) -> dict:
    """Train `warmup` + `batches` batches; the steady-state rate counts the last `batches`."""
    opts = optimizers(model, params)
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
    prepared = workdir / "data/prepared"
    params_file = workdir / "params.yaml"
    stats = json.loads((prepared / "stats.json").read_text())
    model_params = config.load(config.ModelParams, "model", params_file)
    params = config.load(config.TrainParams, "train", params_file)
    cfg = ModelConfig.for_data(stats, **asdict(model_params))
    interactions = pd.read_parquet(prepared / "interactions.parquet")
    history = user_history(interactions, cfg.num_users)
    features = item_features(prepared, stats)
    torch.manual_seed(params.seed)
    model = TwoTower(cfg, features, history)
    frame, manifest = read_negatives(workdir / "data/negatives" / sampler)
    ex = Examples.from_frame(frame, manifest)
    return model, ex, PerRowExamples(ex, features, history, cfg), params


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
