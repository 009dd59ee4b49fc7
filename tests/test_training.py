import math

import pytest
import torch

from gamerec import losses
from gamerec import model as models
from gamerec.config import ModelParams, TrainParams
from gamerec.distributed import Dist
from gamerec.samplers import sample
from gamerec.training import Examples, batch_loss, fit, loss_for

U = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
I = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])


def batch_of(items, log_q=None):
    """A one-process batch of rows whose item embeddings the test gives (users and labels unused)."""
    ones = torch.ones(len(items))
    return losses.Batch(users=items, items=items, positives=items, labels=ones, weights=ones, batch_items=items,
                        batch_log_q=log_q, total_weight=float(len(items)), size=len(items), offset=0)


def softmax_loss(user_emb, item_emb, items, scale, log_q=None):
    """The batch softmax (mean over rows) of given embeddings: the model is replaced by them."""
    setup = losses.Setup(scale=scale, num_items=10, logq=log_q is not None, mixed_negatives=0, generator=torch.Generator())
    return losses.make("softmax", setup)(lambda users, items_, positives: (user_emb, item_emb), batch_of(items, log_q), Dist())


def in_batch_logits(user_emb, item_emb, items, scale, log_q=None):
    logits = losses.batch_logits(user_emb, item_emb, scale)
    if log_q is not None:
        logits = losses.logq_correction(logits, log_q)
    return losses.mask_accidental_hits(logits, items, items, offset=0)


def test_in_batch_loss_masks_accidental_hit_by_hand():
    # rows 0 and 2 share item 5: row 0 must not treat column 2 as a negative, nor row 2 column 0
    items = torch.tensor([5, 7, 5])
    loss = softmax_loss(U, I, items, scale=1.0)
    # logits [[1,0,x],[0,1,1],[x,1,1]] with x masked
    expected = (math.log(1 + math.exp(-1)) + (math.log(1 + 2 * math.e) - 1) + math.log(2)) / 3
    assert float(loss) == pytest.approx(expected, abs=1e-6)
    unmasked = (math.log(1 + 2 * math.exp(-1)) + (math.log(1 + 2 * math.e) - 1) + math.log(3)) / 3
    assert float(softmax_loss(U, I, torch.tensor([5, 7, 9]), scale=1.0)) == pytest.approx(unmasked, abs=1e-6)


def test_logq_shifts_each_logit_by_minus_log_q():
    items = torch.tensor([1, 2, 3])
    log_q = torch.log(torch.tensor([0.5, 0.3, 0.2]))
    plain = in_batch_logits(U, I, items, scale=2.0)
    corrected = in_batch_logits(U, I, items, scale=2.0, log_q=log_q)
    assert torch.allclose(corrected - plain, -log_q.expand(3, 3))


def test_mixed_negatives_are_extra_columns_with_hits_masked():
    items = torch.tensor([1, 2, 3])
    extra = torch.tensor([[1.0, 1.0], [2.0, 0.0]])
    logits = losses.with_extra_negatives(in_batch_logits(U, I, items, 1.0), U, extra, items, torch.tensor([9, 2]),
                                         1.0, 0.5)
    assert logits.shape == (3, 5)
    assert logits[0, 3] == pytest.approx(1.0 - 0.5) and logits[1, 4] == float("-inf")


def test_bce_weights_balance_positives():
    logits, labels = torch.tensor([0.0, 0.0, 0.0]), torch.tensor([1.0, 0.0, 0.0])
    weights = torch.tensor([2.0, 1.0, 1.0])
    assert float(losses.bce(logits, labels, weights, 1 / float(weights.sum()))) == pytest.approx(math.log(2))
    logits, weights = torch.tensor([2.0, -1.0]), torch.tensor([3.0, 1.0])
    manual = (3 * math.log(1 + math.exp(-2)) + math.log(1 + math.exp(-1))) / 4
    assert float(losses.bce(logits, torch.tensor([1.0, 0.0]), weights, 1 / float(weights.sum()))) == pytest.approx(manual)


def test_the_bce_that_trains_is_the_weighted_mean_of_its_rows(prepared):
    model, ex, _, params = build(prepared, "out_batch")
    model.eval()  # no dropout: the two forwards below must agree
    idx = torch.arange(40)
    loss = batch_loss(model, loss_for(ex, model, params, torch.Generator()), ex, idx)
    logits = model.score(ex.users[idx], ex.items[idx], ex.positives[idx])
    manual = torch.nn.functional.binary_cross_entropy_with_logits(logits, ex.labels[idx], weight=ex.weights[idx],
                                                                  reduction="sum") / ex.weights[idx].sum()
    assert float(loss.detach()) == pytest.approx(float(manual.detach()), rel=1e-6)


def test_an_unknown_loss_is_a_one_line_error():
    from gamerec.errors import GamerecError

    with pytest.raises(GamerecError, match="loss 'hinge' is not known; expected one of bce, softmax"):
        losses.make("hinge", losses.Setup(1.0, 10, True, 0, torch.Generator()))


# the stale defaults these tests were written for: a 16-dim id tower with one hidden layer, no history
ID_TOWER = ModelParams(dim=16, hidden=[64], dropout=0.1, temperature=0.1, history=0, user_id=True, causal=False,
                       pooling="mean")


def build(prepared, sampler, seed=0, **train):
    negatives = sample(sampler, prepared.train_positives())
    ex = Examples.from_frame(negatives.examples, negatives.manifest)
    val = prepared.holdout("val")
    model = models.build(prepared, ID_TOWER, seed)
    params = TrainParams(**{"seed": seed, "epochs": 4, "batch_size": 128, "patience": 10, **train})
    return model, ex, val, params


@pytest.mark.parametrize("sampler", ["out_batch", "in_batch", "also_view"])
def test_short_training_lowers_the_loss(prepared, sampler):
    model, ex, val, params = build(prepared, sampler)
    result = fit(model, ex, val, params, progress=False)
    losses = [row["loss"] for row in result.history]
    assert losses[-1] < losses[0] * 0.95
    assert 1 <= result.best_epoch <= 4 and 0 <= result.best_recall <= 1


def test_same_seed_gives_identical_weights(prepared):
    runs = []
    for _ in range(2):
        model, ex, val, params = build(prepared, "in_batch", epochs=2)
        runs.append(fit(model, ex, val, params, progress=False).state_dict)
    assert runs[0].keys() == runs[1].keys()
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


def test_early_stopping_keeps_the_best_epoch(prepared):
    model, ex, val, params = build(prepared, "in_batch", epochs=30, patience=1, lr=0.05)
    result = fit(model, ex, val, params, progress=False)
    recalls = [row["val_recall@10"] for row in result.history]
    assert result.best_recall == max(recalls) and recalls[result.best_epoch - 1] == max(recalls)
    assert len(recalls) < 30 or result.best_epoch == 30


def _two_steps(prepared, optimizer):
    """Train two one-row batches of different items; the item table before and after each step."""
    model, ex, _, params = build(prepared, "out_batch", optimizer=optimizer, lr=0.1)
    first, second = 0, int(torch.nonzero(ex.items != ex.items[0]).flatten()[0])
    opts = model.configure_optimizers(params)
    objective = loss_for(ex, model, params, torch.Generator())
    tables = [model.item_tower.item.weight.detach().clone()]
    for row in (first, second):
        loss = batch_loss(model, objective, ex, torch.tensor([row]))
        for opt in opts:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        for opt in opts:
            opt.step()
        tables.append(model.item_tower.item.weight.detach().clone())
    return int(ex.items[first]), int(ex.items[second]), tables


def test_lazy_adam_moves_only_the_rows_a_batch_used(prepared):
    # step 2 uses another item: dense Adam keeps moving step 1's row on its momentum, lazy Adam does not
    used, other, (start, after_1, after_2) = _two_steps(prepared, "lazy_adam")
    assert not torch.equal(start[used], after_1[used]) and torch.equal(after_1[used], after_2[used])
    assert torch.equal(start[other], after_1[other]) and not torch.equal(after_1[other], after_2[other])
    untouched = torch.ones(len(start), dtype=torch.bool)
    untouched[[used, other]] = False
    assert torch.equal(start[untouched], after_2[untouched])
    used, other, (start, after_1, after_2) = _two_steps(prepared, "adam")
    assert not torch.equal(after_1[used], after_2[used])


def test_a_sampled_holdout_keeps_each_users_own_rows(prepared):
    full = prepared.holdout("val")
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


def test_the_epoch_bar_ends_at_the_epoch_where_early_stopping_ended_training(prepared, monkeypatch):
    import io
    import sys

    class Terminal(io.StringIO):
        def isatty(self) -> bool:  # bars show on a terminal only
            return True

    screen = Terminal()
    monkeypatch.setattr(sys, "stderr", screen)
    model, ex, val, params = build(prepared, "in_batch", epochs=30, patience=1, lr=0.05)
    result = fit(model, ex, val, params, progress=True)
    epochs = len(result.history)
    assert epochs < 30  # it did stop early
    assert f"| {epochs}/{epochs} [" in screen.getvalue().rstrip("\n").split("\r")[-1]  # 100%, not 7/30
