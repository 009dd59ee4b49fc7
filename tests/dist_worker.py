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

CASES = [  # (sampler, mixed negatives, optimizer, loss, user tower): each negative set under each kind of loss
    ("in_batch", 0, "lazy_adam", "auto", "pool"), ("in_batch", 7, "adam", "auto", "pool"),
    ("in_batch", 0, "lazy_adam", "bce", "pool"), ("out_batch", 0, "lazy_adam", "auto", "pool"),
    ("out_batch", 0, "adam", "sampled_softmax", "pool"), ("also_view", 0, "adam", "auto", "pool"),
    ("also_view", 0, "lazy_adam", "batch_softmax", "pool"), ("mined", 0, "adam", "exact_softmax", "pool"),
    ("in_batch", 0, "lazy_adam", "auto", "attention"), ("out_batch", 0, "adam", "sampled_softmax", "attention"),
    ("in_batch", 0, "lazy_adam", "auto", "sasrec"),  # the default's layout and item tower
]
BATCH = 101  # odd: the two processes' parts differ in size


ARCHS = {"pool": ModelParams(dim=16, hidden=[8], dropout=0.0, temperature=0.1, history=5, user_id=True, causal=True,
                              pooling="recency"),
         "attention": ModelParams(dim=16, hidden=[8], temperature=0.1, history=5, user_tower="attention",
                                  attention_dropout=0.0),
         "sasrec": ModelParams(dim=16, temperature=0.1, history=5, user_tower="attention", layers=3, block="sasrec",
                               item_tower="id_plus_features", init="normal", attention_dropout=0.0, input_dropout=0.0)}


def build(folder: Path, sampler: str, mixed: int, tower: str = "pool") -> tuple[model.TwoTower, Examples]:
    """The same model and examples in every process (and in the test)."""
    prepared = Prepared(folder)
    params = InBatchParams(mixed_negatives=mixed) if sampler == "in_batch" else None
    negatives = sample(sampler, prepared.train_positives(), SamplingParams(), params)
    return model.build(prepared, ARCHS[tower], seed=0), Examples.from_frame(negatives.examples, negatives.manifest)


def loss_and_grads(prepared: Path, case: tuple, dist: distributed.Dist) -> tuple[float, dict]:
    """The batch's loss and every parameter's gradient (dense), as this job computes them."""
    sampler, mixed, optimizer, loss_name, tower = case
    two_tower, ex = build(prepared, sampler, mixed, tower)
    params = TrainParams(optimizer=optimizer, loss=loss_name)
    two_tower.configure_optimizers(params)  # lazy_adam: the embedding tables get sparse gradients
    net = dist.wrap(two_tower, two_tower.sparse_tables())  # as `fit` does
    # one global batch as training draws it: random positives, or whole chunks of sequences (attention)
    idx = ex.batches(BATCH, torch.Generator().manual_seed(1), two_tower.sequence_length())[0][:BATCH]
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
