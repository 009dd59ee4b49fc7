import math
from contextlib import contextmanager

import numpy as np
import pytest
import torch

from gamerec import losses
from gamerec.csr import Csr
from gamerec import model as models
from gamerec.config import ModelParams, TrainParams
from gamerec.distributed import Dist
from gamerec.samplers import sample
from gamerec.training import Examples, batch_loss, fit, loss_for

U = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
I = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])


def batch_of(positives, negatives=None, weights=None, log_q=None):
    """A one-process batch of rows whose embeddings the test gives (user ids: the row numbers)."""
    b = len(positives)
    negatives = torch.zeros(b, 0, dtype=torch.long) if negatives is None else negatives
    users = torch.arange(b)
    return losses.Batch(users=users, positives=positives, weights=torch.ones(b) if weights is None else weights,
                        negatives=negatives, neg_log_q=None, batch_users=users, batch_positives=positives,
                        batch_log_q=torch.zeros(b) if log_q is None else log_q, offset=0)


def given(user_emb, item_emb):
    """A stand-in model: the embeddings the test chose, whatever it is asked for."""
    return lambda users, items, positives, sequences=None: (user_emb, item_emb)


def run_loss(name, user_emb, item_emb, batch, scale=1.0, logq=False):
    setup = losses.Setup(scale=scale, num_items=10, logq=logq, mixed_negatives=0, generator=torch.Generator())
    return float(losses.make(name, setup)(given(user_emb, item_emb), batch, Dist()))


def softmax_loss(user_emb, item_emb, items, scale, log_q=None):
    """The batch softmax (mean over rows) of given embeddings: the model is replaced by them."""
    return run_loss("batch_softmax", user_emb, item_emb, batch_of(items, log_q=log_q), scale, logq=log_q is not None)


def in_batch_logits(user_emb, item_emb, items, scale, log_q=None):
    logits = losses.batch_logits(user_emb, item_emb, scale)
    if log_q is not None:
        logits = losses.logq_correction(logits, log_q)
    return losses.mask_accidental_hits(logits, items, items, labels=torch.arange(len(items)))


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
    # one row: user [1, 0]; the positive and two negatives all score 0: (2 log 2 + 2 log 2) / (2 + 2)
    user, zero = torch.tensor([[1.0, 0.0]]), torch.zeros(3, 2)
    batch = batch_of(torch.tensor([1]), torch.tensor([[2, 3]]), weights=torch.tensor([2.0]))
    assert run_loss("bce", user, zero, batch) == pytest.approx(math.log(2))
    # the positive scores 2, its one negative -1, the positive weighted 3
    items = torch.tensor([[2.0, 0.0], [-1.0, 0.0]])
    manual = (3 * math.log(1 + math.exp(-2)) + math.log(1 + math.exp(-1))) / 4
    batch = batch_of(torch.tensor([1]), torch.tensor([[2]]), weights=torch.tensor([3.0]))
    assert run_loss("bce", user, items, batch) == pytest.approx(manual)
    # a padded negative (item 0) counts nothing
    padded = batch_of(torch.tensor([1]), torch.tensor([[2, 0]]), weights=torch.tensor([3.0]))
    assert run_loss("bce", user, torch.cat([items, torch.tensor([[5.0, 0.0]])]), padded) == pytest.approx(manual)


def test_sampled_softmax_corrects_negatives_by_log_k_q():
    # positive scores 1, two negatives score 0; each drawn with q = 1/4 of 2 draws: each stands for 2 items
    user, items = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    batch = batch_of(torch.tensor([1]), torch.tensor([[2, 3]]))
    assert run_loss("sampled_softmax", user, items, batch) == pytest.approx(-1 + math.log(math.e + 2))
    batch.neg_log_q = torch.log(torch.tensor([[0.25, 0.25]]))
    corrected = run_loss("sampled_softmax", user, items, batch, logq=True)
    assert corrected == pytest.approx(-1 + math.log(math.e + 2 * 2))  # exp(0 - log(2 * 0.25)) = 2 each


def test_hard_negatives_join_the_batch_softmax_row():
    # rows: positives 5 and 7, each with one own negative; logits [[1, 0 | 0], [0, 1 | 1]]
    user = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    items = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [0.0, 1.0]])  # positives, then the own negatives
    batch = batch_of(torch.tensor([5, 7]), torch.tensor([[8], [9]]))
    expected = ((-1 + math.log(math.e + 2)) + (-1 + math.log(2 * math.e + 1))) / 2
    assert run_loss("batch_softmax", user, items, batch) == pytest.approx(expected)


def test_exact_softmax_is_the_full_catalogue_softmax():
    torch.manual_seed(0)
    user, catalogue = torch.randn(3, 4), torch.randn(10, 4)
    positives = torch.tensor([2, 5, 9])
    items = torch.cat([catalogue[positives], catalogue])  # the positives, then every catalogue item
    logits = user @ catalogue.T
    logits[:, 0] = float("-inf")
    want = torch.nn.functional.cross_entropy(logits, positives)
    assert run_loss("exact_softmax", user, items, batch_of(positives)) == pytest.approx(float(want), rel=1e-6)


def test_catalogue_hits_are_the_users_other_items_and_item_0():
    # user 1 has items 2, 3 (row label 3), user 2 has item 4 (label 4): row 0 loses columns 0 and 2 only
    seen = Csr(torch.tensor([0, 0, 2, 3]), torch.tensor([2, 3, 4]))
    logits = losses.mask_catalogue_hits(torch.zeros(2, 5), torch.tensor([3, 4]), torch.tensor([1, 2]), seen)
    inf = float("-inf")
    assert logits.tolist() == [[inf, 0.0, inf, 0.0, 0.0], [inf, 0.0, 0.0, 0.0, 0.0]]
    assert losses.mask_catalogue_hits(torch.zeros(1, 3), torch.tensor([1]), torch.tensor([1])).tolist() == [[inf, 0.0, 0.0]]


def test_the_bce_that_trains_is_the_weighted_mean_of_its_rows(prepared):
    model, ex, _, params = build(prepared, "out_batch")
    model.eval()  # no dropout: the forwards below must agree
    idx = torch.arange(40)
    loss = batch_loss(model, loss_for(ex, model, params, torch.Generator()), ex, idx)
    rows = []
    for g in idx.tolist():  # one positive and its negatives at a time, by the model's own score
        items = torch.cat([ex.positives[g : g + 1], ex.negatives[g]])
        logits = model.score(ex.users[g].repeat(len(items)), items, ex.positives[g].repeat(len(items)))
        labels, weights = torch.zeros(len(items)), torch.ones(len(items))
        labels[0], weights[0] = 1.0, ex.weights[g]
        rows.append(torch.nn.functional.binary_cross_entropy_with_logits(logits, labels, weight=weights,
                                                                         reduction="sum") / weights.sum())
    assert float(loss.detach()) == pytest.approx(float(torch.stack(rows).mean().detach()), rel=1e-5)


def test_an_unknown_loss_is_a_one_line_error():
    from gamerec.errors import GamerecError

    with pytest.raises(GamerecError, match="loss 'hinge' is not known; expected one of bce, sampled_softmax, batch_softmax, exact_softmax"):
        losses.make("hinge", losses.Setup(1.0, 10, True, 0, torch.Generator()))


def test_examples_are_grouped_by_positive_with_their_negatives():
    import pandas as pd

    frame = pd.DataFrame({  # user 1: positive 3 oversampled twice, negatives 5, 6; user 2: positive 4, none
        "user": [1, 1, 1, 1, 2], "item": [3, 3, 5, 6, 4], "label": [1.0, 1.0, 0.0, 0.0, 1.0],
        "weight": [1.0, 1.0, 1.0, 1.0, 1.0], "positive": [3, 3, 3, 3, 4], "log_q": [0.0, 0.0, -1.5, -2.5, 0.0]})
    ex = Examples.from_frame(frame, {"loss": "bce"})
    assert ex.users.tolist() == [1, 2] and ex.positives.tolist() == [3, 4]
    assert ex.weights.tolist() == [2.0, 1.0]  # the oversampled copies weigh as one positive of weight 2
    assert ex.negatives.tolist() == [[5, 6], [0, 0]]  # 0: none
    assert ex.neg_log_q.tolist() == [[-1.5, -2.5], [0.0, 0.0]]
    assert ex.log_q.tolist() == pytest.approx([math.log(1 / 2), math.log(1 / 2)])


def test_in_batch_log_q_is_each_items_share_of_the_positives():
    import pandas as pd

    items = [1, 2, 1, 1, 3]
    frame = pd.DataFrame({"user": [1, 1, 2, 3, 3], "item": items, "label": 1.0, "weight": 1.0, "positive": items})
    ex = Examples.from_frame(frame, {"loss": "batch_softmax"})
    assert ex.negatives.shape == (5, 0)
    assert ex.log_q.tolist() == pytest.approx(list(np.log(np.array([3, 1, 3, 3, 1]) / 5)))


# the stale defaults these tests were written for: a 16-dim id tower with one hidden layer, no history
ID_TOWER = ModelParams(dim=16, hidden=[64], dropout=0.1, temperature=0.1, history=0, user_id=True, causal=False,
                       pooling="mean")


@contextmanager
def two_threads():
    """Torch on two threads, as a stage runs on this machine (a test process may have fewer)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


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


@pytest.mark.parametrize("sampler,loss", [("in_batch", "auto"), ("out_batch", "bce"), ("also_view", "batch_softmax")])
def test_same_seed_gives_identical_weights_on_two_threads(prepared, sampler, loss):
    """Bit for bit, with the threads of a real run and batches large enough to split among them."""
    runs = []
    with two_threads():
        for _ in range(2):
            model, ex, val, params = build(prepared, sampler, epochs=2, batch_size=4096, loss=loss)
            runs.append(fit(model, ex, val, params, progress=False).state_dict)
    assert runs[0].keys() == runs[1].keys()
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


def test_early_stopping_keeps_the_best_epoch(prepared):
    model, ex, val, params = build(prepared, "in_batch", epochs=30, patience=1, lr=0.05)
    result = fit(model, ex, val, params, progress=False)
    recalls = [row["val_recall@10"] for row in result.history]
    assert result.best_recall == max(recalls) and recalls[result.best_epoch - 1] == max(recalls)
    assert len(recalls) < 30 or result.best_epoch == 30
    # the time to the best epoch: part of the whole fit's, which ran on past it (patience 1)
    assert result.best_epoch < len(recalls) and 0 < result.seconds_to_best < result.seconds


def _two_steps(prepared, optimizer):
    """Train two one-positive batches that share no item; the items of each and the item table after each step."""
    model, ex, _, params = build(prepared, "out_batch", optimizer=optimizer, lr=0.1)
    items = lambda g: torch.cat([ex.positives[g : g + 1], ex.negatives[g]])
    first = 0
    second = next(g for g in range(1, len(ex)) if not set(items(g).tolist()) & set(items(first).tolist()))
    opt = model.configure_optimizers(params)
    objective = loss_for(ex, model, params, torch.Generator())
    tables = [model.item_tower.item.weight.detach().clone()]
    for group in (first, second):
        loss = batch_loss(model, objective, ex, torch.tensor([group]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        tables.append(model.item_tower.item.weight.detach().clone())
    return items(first), items(second), tables


def test_lazy_adam_moves_only_the_rows_a_batch_used(prepared):
    # step 2 uses other items: dense Adam keeps moving step 1's rows on their momentum, lazy Adam does not
    used, other, (start, after_1, after_2) = _two_steps(prepared, "lazy_adam")
    assert not torch.equal(start[used], after_1[used]) and torch.equal(after_1[used], after_2[used])
    assert torch.equal(start[other], after_1[other]) and not torch.equal(after_1[other], after_2[other])
    untouched = torch.ones(len(start), dtype=torch.bool)
    untouched[torch.cat([used, other])] = False
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


@pytest.mark.parametrize("loss", ["batch_softmax", "sampled_softmax", "exact_softmax"])
def test_the_attention_tower_learns_from_whole_sequences(prepared, loss):
    sampler = "in_batch" if loss == "batch_softmax" else "out_batch"
    negatives = sample(sampler, prepared.train_positives())
    ex = Examples.from_frame(negatives.examples, negatives.manifest)
    arch = ModelParams(dim=16, history=5, user_tower="attention", layers=1, heads=2, attention_dropout=0.1)
    model = models.build(prepared, arch, seed=0)
    params = TrainParams(epochs=3, batch_size=1024, patience=10, lr=0.01, loss=loss)
    with two_threads():
        result = fit(model, ex, prepared.holdout("val"), params, progress=False)
        again = fit(models.build(prepared, arch, seed=0), Examples.from_frame(negatives.examples, negatives.manifest),
                    prepared.holdout("val"), params, progress=False)
    losses_ = [row["loss"] for row in result.history]
    assert losses_[-1] < losses_[0] * 0.98 and ex.layout is not None and ex.layout.length == 5
    assert all(torch.equal(result.state_dict[k], again.state_dict[k]) for k in result.state_dict)  # deterministic
