"""Started by tests/test_distributed.py under torchrun: the loss and gradients of one global batch.

Each process computes its share (`training.batch_loss` with its `Dist`) through DDP; rank 0
writes the batch loss (the mean of the shares) and the all-reduced gradients, for the test
to compare with one process computing the whole batch.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from gamerec import distributed, model
from gamerec.config import InBatchParams, ModelParams, SamplingParams, TrainParams
from gamerec.prepared import Prepared
from gamerec.samplers import sample
from gamerec.training import Examples, batch_loss, loss_for

CASES = [  # (sampler, mixed negatives, optimizer, loss): each negative set under each kind of loss
    ("in_batch", 0, "lazy_adam", "auto"), ("in_batch", 7, "adam", "auto"), ("in_batch", 0, "lazy_adam", "bce"),
    ("out_batch", 0, "lazy_adam", "auto"), ("out_batch", 0, "adam", "sampled_softmax"),
    ("also_view", 0, "adam", "auto"), ("also_view", 0, "lazy_adam", "batch_softmax"),
    ("mined", 0, "adam", "exact_softmax"),
]
BATCH = 101  # odd: the two processes' parts differ in size


ARCH = ModelParams(dim=16, hidden=[8], dropout=0.0, temperature=0.1, history=5, user_id=True, causal=True,
                   pooling="recency")


def build(folder: Path, sampler: str, mixed: int) -> tuple[model.TwoTower, Examples]:
    """The same model and examples in every process (and in the test)."""
    prepared = Prepared(folder)
    params = InBatchParams(mixed_negatives=mixed) if sampler == "in_batch" else None
    negatives = sample(sampler, prepared.train_positives(), SamplingParams(), params)
    return model.build(prepared, ARCH, seed=0), Examples.from_frame(negatives.examples, negatives.manifest)


def loss_and_grads(prepared: Path, case: tuple, dist: distributed.Dist) -> tuple[float, dict]:
    """The batch's loss and every parameter's gradient (dense), as this job computes them."""
    sampler, mixed, optimizer, loss_name = case
    two_tower, ex = build(prepared, sampler, mixed)
    params = TrainParams(optimizer=optimizer, loss=loss_name)
    two_tower.configure_optimizers(params)  # lazy_adam: the embedding tables get sparse gradients
    net = dist.wrap(two_tower, two_tower.sparse_tables())  # as `fit` does
    idx = torch.randperm(len(ex), generator=torch.Generator().manual_seed(1))[:BATCH]
    loss = batch_loss(net, loss_for(ex, two_tower, params, torch.Generator().manual_seed(2)), ex, idx, dist)
    loss.backward()
    dist.average_sparse_grads(two_tower.sparse_tables())
    grads = {name: p.grad.to_dense() for name, p in two_tower.named_parameters() if p.grad is not None}
    return dist.total(loss.item()) / dist.world, grads


if __name__ == "__main__":
    prepared, out = Path(sys.argv[1]), Path(sys.argv[2])
    dist = distributed.init("cpu")
    results = [loss_and_grads(prepared, case, dist) for case in CASES]
    if dist.is_main:
        torch.save(results, out)
    distributed.shutdown(finished=True)
