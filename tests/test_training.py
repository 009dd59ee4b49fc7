import json
import math

import pandas as pd
import pytest
import torch

from gamerec.config import SamplingParams, TrainParams
from gamerec.model import ModelConfig, TwoTower
from gamerec.samplers import load_train_positives, sample
from gamerec.training import (
    Examples,
    bce_loss,
    fit,
    holdout,
    in_batch_logits,
    in_batch_softmax_loss,
    item_features,
)

U = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
I = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])


def test_in_batch_loss_masks_accidental_hit_by_hand():
    # rows 0 and 2 share item 5: row 0 must not treat column 2 as a negative, nor row 2 column 0
    items = torch.tensor([5, 7, 5])
    loss = in_batch_softmax_loss(U, I, items, scale=1.0)
    # logits [[1,0,x],[0,1,1],[x,1,1]] with x masked
    expected = (math.log(1 + math.exp(-1)) + (math.log(1 + 2 * math.e) - 1) + math.log(2)) / 3
    assert float(loss) == pytest.approx(expected, abs=1e-6)
    unmasked = (math.log(1 + 2 * math.exp(-1)) + (math.log(1 + 2 * math.e) - 1) + math.log(3)) / 3
    assert float(in_batch_softmax_loss(U, I, torch.tensor([5, 7, 9]), scale=1.0)) == pytest.approx(unmasked, abs=1e-6)


def test_logq_shifts_each_logit_by_minus_log_q():
    items = torch.tensor([1, 2, 3])
    log_q = torch.log(torch.tensor([0.5, 0.3, 0.2]))
    plain = in_batch_logits(U, I, items, scale=2.0)
    corrected = in_batch_logits(U, I, items, scale=2.0, log_q=log_q)
    assert torch.allclose(corrected - plain, -log_q.expand(3, 3))


def test_mixed_negatives_are_extra_columns_with_hits_masked():
    items = torch.tensor([1, 2, 3])
    extra = torch.tensor([[1.0, 1.0], [2.0, 0.0]])
    logits = in_batch_logits(U, I, items, 1.0, extra_emb=extra, extra_items=torch.tensor([9, 2]), extra_log_q=0.5)
    assert logits.shape == (3, 5)
    assert logits[0, 3] == pytest.approx(1.0 - 0.5) and logits[1, 4] == float("-inf")


def test_bce_weights_balance_positives():
    logits, labels = torch.tensor([0.0, 0.0, 0.0]), torch.tensor([1.0, 0.0, 0.0])
    assert float(bce_loss(logits, labels, torch.tensor([2.0, 1.0, 1.0]))) == pytest.approx(math.log(2))
    logits = torch.tensor([2.0, -1.0])
    manual = (3 * math.log(1 + math.exp(-2)) + math.log(1 + math.exp(-1))) / 4
    assert float(bce_loss(logits, torch.tensor([1.0, 0.0]), torch.tensor([3.0, 1.0]))) == pytest.approx(manual)


def build(prepared_dir, sampler, seed=0, **train):
    stats = json.loads((prepared_dir / "stats.json").read_text())
    negatives = sample(sampler, load_train_positives(prepared_dir), SamplingParams())
    ex = Examples.from_frame(negatives.examples, negatives.manifest)
    val = holdout(pd.read_parquet(prepared_dir / "interactions.parquet"), "val")
    torch.manual_seed(seed)
    cfg = ModelConfig(stats["num_users"], stats["num_items"], stats["num_brands"], stats["num_tokens"], dim=16)
    model = TwoTower(cfg, item_features(prepared_dir, stats))
    params = TrainParams(**{"seed": seed, "epochs": 4, "batch_size": 128, "patience": 10, **train})
    return model, ex, val, params


@pytest.mark.parametrize("sampler", ["out_batch", "in_batch", "also_view"])
def test_short_training_lowers_the_loss(prepared_dir, sampler):
    model, ex, val, params = build(prepared_dir, sampler)
    result = fit(model, ex, val, params, progress=False)
    losses = [row["loss"] for row in result.history]
    assert losses[-1] < losses[0] * 0.95
    assert 1 <= result.best_epoch <= 4 and 0 <= result.best_recall <= 1


def test_same_seed_gives_identical_weights(prepared_dir):
    runs = []
    for _ in range(2):
        model, ex, val, params = build(prepared_dir, "in_batch", epochs=2)
        runs.append(fit(model, ex, val, params, progress=False).state_dict)
    assert runs[0].keys() == runs[1].keys()
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


def test_early_stopping_keeps_the_best_epoch(prepared_dir):
    model, ex, val, params = build(prepared_dir, "in_batch", epochs=30, patience=1, lr=0.05)
    result = fit(model, ex, val, params, progress=False)
    recalls = [row["val_recall@10"] for row in result.history]
    assert result.best_recall == max(recalls) and recalls[result.best_epoch - 1] == max(recalls)
    assert len(recalls) < 30 or result.best_epoch == 30


def _two_steps(prepared_dir, optimizer):
    """Train two one-row batches of different items; the item table before and after each step."""
    from gamerec.training import batch_loss, optimizers

    model, ex, _, params = build(prepared_dir, "out_batch", optimizer=optimizer, lr=0.1)
    first, second = 0, int(torch.nonzero(ex.items != ex.items[0]).flatten()[0])
    opts = optimizers(model, params)
    tables = [model.item_tower.item.weight.detach().clone()]
    for row in (first, second):
        loss = batch_loss(model, ex, torch.tensor([row]), params, torch.Generator())
        for opt in opts:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        for opt in opts:
            opt.step()
        tables.append(model.item_tower.item.weight.detach().clone())
    return int(ex.items[first]), int(ex.items[second]), tables


def test_lazy_adam_moves_only_the_rows_a_batch_used(prepared_dir):
    # step 2 uses another item: dense Adam keeps moving step 1's row on its momentum, lazy Adam does not
    used, other, (start, after_1, after_2) = _two_steps(prepared_dir, "lazy_adam")
    assert not torch.equal(start[used], after_1[used]) and torch.equal(after_1[used], after_2[used])
    assert torch.equal(start[other], after_1[other]) and not torch.equal(after_1[other], after_2[other])
    untouched = torch.ones(len(start), dtype=torch.bool)
    untouched[[used, other]] = False
    assert torch.equal(start[untouched], after_2[untouched])
    used, other, (start, after_1, after_2) = _two_steps(prepared_dir, "adam")
    assert not torch.equal(after_1[used], after_2[used])


def test_a_sampled_holdout_keeps_each_users_own_rows(prepared_dir):
    full = holdout(pd.read_parquet(prepared_dir / "interactions.parquet"), "val")
    assert full.sample(0, seed=0) is full and full.sample(len(full.users), seed=0) is full
    part = full.sample(20, seed=1)
    assert len(part.users) == 20 and torch.equal(part.users, part.users.sort().values)
    assert torch.equal(part.users, full.sample(20, seed=1).users)  # the seed decides
    row_of = {int(u): r for r, u in enumerate(full.users)}
    for r, user in enumerate(part.users.tolist()):
        for mine, theirs in ((part.exclude, full.exclude), (part.targets, full.targets)):
            f = row_of[user]
            assert torch.equal(mine[1][mine[0][r]: mine[0][r + 1]], theirs[1][theirs[0][f]: theirs[0][f + 1]])
    assert torch.equal(part.items, part.targets[1]) and len(part.owner) == len(part.items)
