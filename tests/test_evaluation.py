"""The fixed protocol on a tiny real-format data set: same pairs for everyone, exclusions honoured."""

import numpy as np
import pandas as pd
import pytest
import torch

from gamerec import csr
from gamerec.config import EvaluateParams
from gamerec.baselines import popularity
from gamerec.evaluation import evaluate, load_eval_data

PARAMS = EvaluateParams(negatives=20, k=[1, 10])


@pytest.fixture(scope="module")
def data(prepared_dir):
    return load_eval_data(prepared_dir, PARAMS)


@pytest.fixture(scope="module")
def interactions(prepared_dir):
    return pd.read_parquet(prepared_dir / "interactions.parquet")


def user_items(interactions, splits):
    df = interactions[interactions.split.isin(splits)]
    return df.groupby("user").item.apply(set).to_dict()


def test_sampled_negatives_are_fixed_and_never_interacted(prepared_dir, data, interactions):
    again = load_eval_data(prepared_dir, PARAMS)
    assert torch.equal(again.test.sampled.neg_items, data.test.sampled.neg_items)
    seen = user_items(interactions, ["train", "val", "test"])
    pairs = data.test.sampled
    users = data.test.holdout.users[pairs.neg_rows].tolist()
    assert all(item not in seen[u] for u, item in zip(users, pairs.neg_items.tolist()))
    assert len(pairs.neg_items) == PARAMS.negatives * len(pairs.pos_items)
    assert len(data.test.balanced.neg_items) == len(pairs.pos_items)  # 1:1 subset
    other = load_eval_data(prepared_dir, EvaluateParams(negatives=20, seed=1))
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
    owner, items = csr.gather(*ho.exclude, torch.arange(len(ho.users)))
    user_emb[owner, items] = 10.0  # train and val items: the highest scores, if they were visible
    user_emb[ho.owner, ho.items] = 5.0
    row_of = {int(u): r for r, u in enumerate(ho.users)}
    report = evaluate(lambda users: user_emb[[row_of[int(u)] for u in users]], torch.eye(n_items), data, PARAMS)
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
    assert m["users_evaluated"] == len(data.test.holdout.users)
    assert len(report.recall_curve) == PARAMS.curve_max_k
    assert report.recall_curve[9] == pytest.approx(m["recall@10"])


def test_a_memory_cap_that_forces_chunking_changes_nothing(data):
    whole = evaluate(*popularity(data.popularity), data, PARAMS)
    capped = EvaluateParams(negatives=20, k=[1, 10], memory_mb=0.01)  # a handful of users per chunk
    chunked = evaluate(*popularity(data.popularity), data, capped)
    assert chunked.metrics == whole.metrics and chunked.recall_curve == whole.recall_curve


def test_feature_ablation_zeroes_one_feature_at_a_time(prepared_dir, data):
    import json

    from gamerec.evaluation import feature_ablation
    from gamerec.model import ModelConfig, TwoTower
    from gamerec.training import item_features

    stats = json.loads((prepared_dir / "stats.json").read_text())
    torch.manual_seed(0)
    cfg = ModelConfig(stats["num_users"], stats["num_items"], stats["num_brands"], stats["num_tokens"], dim=8)
    model = TwoTower(cfg, item_features(prepared_dir, stats)).eval()
    result = feature_ablation(model, data, 10, 64)
    assert list(result) == ["none", "id", "brand", "price", "description"]
    assert all(0 <= v <= 1 for v in result.values())
    items = torch.arange(cfg.num_items)
    assert not torch.equal(model.embed_items(items, ("id",)), model.embed_items(items))
