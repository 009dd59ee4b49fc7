"""The fixed protocol on a tiny real-format data set: same pairs for everyone, exclusions honoured."""

import numpy as np
import pandas as pd
import pytest
import torch

from gamerec.config import EvaluateParams
from gamerec.baselines import popularity
from gamerec.evaluation import evaluate, load_eval_data

PARAMS = EvaluateParams(negatives=20, k=[1, 10])


@pytest.fixture(scope="module")
def data(prepared):
    return load_eval_data(prepared, PARAMS)


@pytest.fixture(scope="module")
def interactions(prepared_dir):
    return pd.read_parquet(prepared_dir / "interactions.parquet")


def user_items(interactions, splits):
    df = interactions[interactions.split.isin(splits)]
    return df.groupby("user").item.apply(set).to_dict()


def test_sampled_negatives_are_fixed_and_never_interacted(prepared, data, interactions):
    again = load_eval_data(prepared, PARAMS)
    assert torch.equal(again.test.sampled.neg_items, data.test.sampled.neg_items)
    seen = user_items(interactions, ["train", "val", "test"])
    pairs = data.test.sampled
    users = data.test.holdout.users[pairs.neg_rows].tolist()
    assert all(item not in seen[u] for u, item in zip(users, pairs.neg_items.tolist()))
    assert len(pairs.neg_items) == PARAMS.negatives * len(pairs.pos_items)
    assert len(data.test.balanced.neg_items) == len(pairs.pos_items)  # 1:1 subset
    other = load_eval_data(prepared, EvaluateParams(negatives=20, seed=1))
    assert not torch.equal(other.test.sampled.neg_items, pairs.neg_items)


def test_test_ranking_hides_train_and_val_items_only(data, interactions):
    hidden = user_items(interactions, ["train", "val"])
    test = user_items(interactions, ["test"])
    ho = data.test.holdout
    for row in (0, len(ho.users) // 2, len(ho.users) - 1):
        u = int(ho.users[row])
        excluded = set(ho.exclude[1][ho.exclude[0][row] : ho.exclude[0][row + 1]].tolist())
        assert excluded == hidden[u] and not excluded & test[u]


def test_also_view_pairs_are_never_interacted_also_view_items(prepared_dir, data, interactions):
    with np.load(prepared_dir / "also_view.npz") as z:
        indptr, indices = z["indptr"], z["indices"]
    seen = user_items(interactions, ["train", "val", "test"])
    av = data.also_view
    assert len(av.neg_items) > 0
    users = data.test.holdout.users
    pos_of_row = dict(zip(av.pos_rows.tolist(), av.pos_items.tolist()))
    for row, item in zip(av.neg_rows.tolist(), av.neg_items.tolist()):
        positive = pos_of_row[row]
        assert item in indices[indptr[positive] : indptr[positive + 1]]
        assert item not in seen[int(users[row])]


def test_train_items_are_really_excluded(data, interactions):
    """A scorer that loves each user's own train items still ranks the test item first."""
    ho = data.test.holdout
    n_items = len(data.popularity)
    user_emb = torch.zeros(len(ho.users), n_items)
    owner, items = ho.exclude.gather(torch.arange(len(ho.users)))
    user_emb[owner, items] = 10.0  # train and val items: the highest scores, if they were visible
    user_emb[ho.owner, ho.items] = 5.0
    row_of = {int(u): r for r, u in enumerate(ho.users)}
    report = evaluate(lambda users, known: user_emb[[row_of[int(u)] for u in users]], torch.eye(n_items), data, PARAMS)
    assert report.metrics["recall@1"] == 1.0 and report.metrics["mrr"] == 1.0


def test_popularity_baseline_matches_a_brute_force_ranking(data, interactions):
    report = evaluate(*popularity(data.popularity), data, PARAMS)
    pop = data.popularity.numpy()
    hidden = user_items(interactions, ["train", "val"])
    hits = []
    for user, item in interactions.loc[interactions.split == "test", ["user", "item"]].itertuples(index=False):
        visible = [i for i in range(1, len(pop)) if i not in hidden[user]]
        order = sorted(visible, key=lambda i: (-pop[i], i))  # ties by item id, as the protocol says
        hits.append(item in order[:10])
    assert report.metrics["recall@10"] == pytest.approx(np.mean(hits))
    m = report.metrics
    for key in ("auc", "accuracy", "auc_also_view", "recall@10", "ndcg@10", "hit_rate@10", "mrr", "coverage@10"):
        assert 0 <= m[key] <= 1, key
    assert report.users_evaluated == len(data.test.holdout.users) and "users_evaluated" not in m  # a count, not a metric
    assert len(report.recall_curve) == PARAMS.curve_max_k
    assert report.recall_curve[9] == pytest.approx(m["recall@10"])


def test_a_memory_cap_that_forces_chunking_changes_nothing(data):
    whole = evaluate(*popularity(data.popularity), data, PARAMS)
    capped = EvaluateParams(negatives=20, k=[1, 10], memory_mb=0.01)  # a handful of users per chunk
    chunked = evaluate(*popularity(data.popularity), data, capped)
    assert chunked.metrics == whole.metrics and chunked.recall_curve == whole.recall_curve


def test_feature_ablation_zeroes_one_feature_at_a_time(prepared, data):
    from gamerec import model as models
    from gamerec.config import ModelParams
    from gamerec.evaluation import feature_ablation, model_scorer, validation_recall

    arch = ModelParams(dim=8, hidden=[64], dropout=0.1, history=0, user_id=True, causal=False)
    model = models.build(prepared, arch, seed=0).eval()
    result = feature_ablation(model, data, 10, 64)
    recall = result["val_recall@10"]
    assert list(recall) == ["none", "id", "brand", "price", "description"]
    assert result["users"] == len(data.val_ranked.users)  # 0: every ranked validation user
    assert recall["none"] == pytest.approx(validation_recall(model_scorer(model), data, 10, 64), abs=1e-6)
    for name in ("id", "brand", "price", "description"):  # the change against none: mean, then its interval
        mean, low, high = result["change"][name]
        assert mean == pytest.approx(recall[name] - recall["none"], abs=2e-6) and low <= mean <= high
    items = torch.arange(model.config.num_items)
    assert not torch.equal(model.embed_items(items, ("id",)), model.embed_items(items))
    sampled = feature_ablation(model, data, 10, 64, users=50)
    assert sampled["users"] == 50 and sampled != result
    ids = models.build(prepared, ModelParams(dim=8, item_tower="id"), seed=0).eval()
    only = feature_ablation(ids, data, 10, 64)["val_recall@10"]  # the tower's own inputs, nothing it lacks
    assert list(only) == ["none", "id"] and only["id"] != only["none"]  # untrained: different, not better


def test_each_split_knows_what_came_before_it_in_time_order(data, interactions):
    """Validation users are known by their train items; test users by train then val items."""
    ordered = interactions.sort_values(["user", "timestamp", "item"], kind="stable")
    for split, known_splits in ((data.val, ["train"]), (data.test, ["train", "val"])):
        for u in split.holdout.users[:: max(1, len(split.holdout.users) // 7)].tolist():
            expect = ordered[(ordered.user == u) & ordered.split.isin(known_splits)].item.tolist()
            assert split.known.indices[split.known.indptr[u] : split.known.indptr[u + 1]].tolist() == expect
    last_known = lambda u: data.test.known.indices[data.test.known.indptr[u + 1] - 1]
    val_item = interactions[interactions.split == "val"].set_index("user").item
    users = data.test.holdout.users.tolist()
    assert all(last_known(u) == val_item[u] for u in users if u in val_item.index)


def test_evaluate_gives_each_split_its_own_history(data):
    calls = []

    def embed(users, known):
        calls.append((len(users), known))
        return torch.ones(len(users), 1)

    evaluate(embed, torch.ones(len(data.popularity), 1), data, PARAMS)
    given = {id(known): n for n, known in calls}
    assert given == {id(data.test.known): len(data.test.holdout.users), id(data.val.known): len(data.val.holdout.users)}


def test_als_folds_in_the_history_it_is_given(data):
    pytest.importorskip("implicit")
    from gamerec.baselines import fit_als
    from gamerec.csr import Csr

    num_items = len(data.popularity)
    embed, item_emb = fit_als(data.train_users, data.train_items, data.num_users, num_items, 8, 0.1, 10.0, 15, 0)
    assert item_emb.shape == (num_items, 8)
    users = data.test.holdout.users
    before_val, before_test = embed(users, data.val.known), embed(users, data.test.known)
    assert before_val.shape == (len(users), 8)
    assert not torch.allclose(before_val, before_test)  # the val item moved each test user
    # fold-in is deterministic and depends on the history only, not on the user id
    shifted = Csr(np.concatenate([[0], data.test.known.indptr]), data.test.known.indices)
    torch.testing.assert_close(embed(users + 1, shifted), before_test)
    empty = Csr.empty(data.num_users)
    assert torch.count_nonzero(embed(users, empty)) == 0


def test_known_before_test_train_only_hides_the_val_item(prepared, data):
    strict = load_eval_data(prepared, EvaluateParams(negatives=20, k=[1, 10], known_before_test="train"))
    for field in ("indptr", "indices"):
        np.testing.assert_array_equal(getattr(strict.test.known, field), getattr(data.val.known, field))
    assert torch.equal(strict.test.holdout.exclude[1], data.test.holdout.exclude[1])  # val items still excluded


def test_als_enabled_without_its_library_is_one_line_error(monkeypatch):
    import sys

    from gamerec.baselines import require_als
    from gamerec.errors import GamerecError

    monkeypatch.setitem(sys.modules, "implicit.als", None)  # as if it were not installed
    with pytest.raises(GamerecError, match=r"^evaluate.als.enabled = true but the ALS library cannot be imported") as err:
        require_als()
    assert "\n" not in str(err.value) and "evaluate.als.enabled: false" in str(err.value)


def test_the_als_grid_param_picks_the_small_or_the_full_grid():
    from gamerec.config import AlsParams, parse

    small, full = parse(AlsParams, {}, "evaluate.als"), parse(AlsParams, {"grid": "full"}, "evaluate.als")
    assert (small.points.factors, small.points.regularization, small.points.alpha) == ([32, 128], [1.0], [10.0])
    assert len(full.points.factors) * len(full.points.regularization) * len(full.points.alpha) == 18


def test_auc_pairs_come_from_a_seeded_sample_of_users(prepared):
    small = load_eval_data(prepared, EvaluateParams(negatives=20, pair_users=50))
    users = small.test.holdout.users[small.test.sampled.pos_rows.long()].unique()
    assert len(users) == 50 and len(small.test.sampled.neg_items) == 20 * len(small.test.sampled.pos_items)
    again = load_eval_data(prepared, EvaluateParams(negatives=20, pair_users=50))
    assert torch.equal(again.test.sampled.neg_items, small.test.sampled.neg_items)  # the seed decides
    full = load_eval_data(prepared, EvaluateParams(negatives=20))  # fewer test users than pair_users: all
    assert len(full.test.sampled.pos_items) == len(full.test.holdout.items)
    assert len(small.test.holdout.users) == len(full.test.holdout.users)  # the ranking still sees every user
