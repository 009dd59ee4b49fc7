"""Started by tests/test_distributed.py under torchrun: the loss and gradients of one global batch.

Each process computes its share (`training.batch_loss` with its `Dist`) through DDP; rank 0
writes the batch loss (the mean of the shares) and the all-reduced gradients, for the test
to compare with one process computing the whole batch.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import torch

from gamerec import distributed
from gamerec.config import InBatchParams, SamplingParams, TrainParams
from gamerec.model import ModelConfig, TwoTower
from gamerec.samplers import load_train_positives, sample
from gamerec.training import Examples, batch_loss, item_features, optimizers, sparse_tables, user_history

CASES = [("in_batch", 0, "lazy_adam"), ("in_batch", 7, "adam"), ("out_batch", 0, "lazy_adam"), ("also_view", 0, "adam")]
BATCH = 101  # odd: the two processes' parts differ in size


def build(prepared: Path, sampler: str, mixed: int) -> tuple[TwoTower, Examples]:
    """The same model and examples in every process (and in the test)."""
    negatives = sample(sampler, load_train_positives(prepared), SamplingParams(in_batch=InBatchParams(mixed_negatives=mixed)))
    stats = json.loads((prepared / "stats.json").read_text())
    interactions = pd.read_parquet(prepared / "interactions.parquet")
    torch.manual_seed(0)
    cfg = ModelConfig.for_data(stats, dim=16, hidden=[8], dropout=0.0, history=5, user_id=True, causal=True,
                               pooling="recency")
    model = TwoTower(cfg, item_features(prepared, stats), user_history(interactions, cfg.num_users))
    return model, Examples.from_frame(negatives.examples, negatives.manifest)


def loss_and_grads(prepared: Path, case: tuple, dist: distributed.Dist) -> tuple[float, dict]:
    """The batch's loss and every parameter's gradient (dense), as this job computes them."""
    sampler, mixed, optimizer = case
    model, ex = build(prepared, sampler, mixed)
    params = TrainParams(optimizer=optimizer)
    optimizers(model, params)  # lazy_adam: the embedding tables get sparse gradients
    net = dist.wrap(model, sparse_tables(model))  # as `fit` does
    idx = torch.randperm(len(ex), generator=torch.Generator().manual_seed(1))[:BATCH]
    loss = batch_loss(net, ex, idx, params, torch.Generator().manual_seed(2), dist)
    loss.backward()
    dist.average_sparse_grads(sparse_tables(model))
    grads = {name: p.grad.to_dense() for name, p in model.named_parameters() if p.grad is not None}
    return dist.total(loss.item()) / dist.world, grads


if __name__ == "__main__":
    prepared, out = Path(sys.argv[1]), Path(sys.argv[2])
    dist = distributed.init("cpu")
    results = [loss_and_grads(prepared, case, dist) for case in CASES]
    if dist.is_main:
        torch.save(results, out)
    distributed.shutdown()
