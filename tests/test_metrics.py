"""Each metric against hand-computed cases."""

import math

import numpy as np
import pytest
import torch

from gamerec import metrics

T = torch.tensor


def test_single_target_per_user_by_hand():
    # user 0: held-out item at rank 1, user 1: rank 3, user 2: rank 12, user 3: no held-out item
    ranks, owner = T([1, 3, 12]), T([0, 1, 2])
    m = metrics.ranking_metrics(ranks, owner, n_users=4, ks=[2, 10])
    assert m["recall@2"] == pytest.approx(1 / 3)  # user 3 is skipped, not counted as a miss
    assert m["hit_rate@10"] == pytest.approx(2 / 3)
    assert m["recall@10"] == pytest.approx(2 / 3)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / math.log2(4) + 0) / 3)
    assert m["ndcg@2"] == pytest.approx(1 / 3)
    assert m["mrr"] == pytest.approx((1 + 1 / 3 + 1 / 12) / 3)


def test_several_targets_per_user_by_hand():
    # user 0 holds out 3 items ranked 1, 4, 20; user 1 holds out one ranked 2
    ranks, owner = T([1, 4, 20, 2]), T([0, 0, 0, 1])
    m = metrics.ranking_metrics(ranks, owner, n_users=2, ks=[5])
    assert m["recall@5"] == pytest.approx((2 / 3 + 1) / 2)
    idcg0 = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    dcg0 = 1 + 1 / math.log2(5)
    assert m["ndcg@5"] == pytest.approx((dcg0 / idcg0 + 1 / math.log2(3)) / 2)
    assert m["hit_rate@5"] == 1.0
    assert m["mrr"] == pytest.approx((1 + 1 / 2) / 2)


def test_no_user_with_targets_gives_zeros_not_nan():
    m = metrics.ranking_metrics(T([], dtype=torch.long), T([], dtype=torch.long), n_users=3, ks=[10])
    assert m == {"recall@10": 0.0, "ndcg@10": 0.0, "hit_rate@10": 0.0, "mrr": 0.0}


def test_recall_curve_matches_recall_at_each_k():
    ranks, owner = T([1, 4, 20, 2, 7]), T([0, 0, 0, 1, 3])
    curve = metrics.recall_curve(ranks, owner, n_users=5, max_k=25)
    assert len(curve) == 25
    for k in (1, 2, 4, 7, 20, 25):
        assert curve[k - 1] == pytest.approx(metrics.ranking_metrics(ranks, owner, 5, [k])[f"recall@{k}"])


def test_coverage_counts_distinct_real_items():
    top = T([[1, 2, 3], [3, 2, 1], [4, 1, 0]])
    assert metrics.coverage(top, catalogue_items=10) == pytest.approx(0.4)


def test_auc_with_ties_counts_half():
    # positives 3, 1; negatives 1, 0: pairs (3>1),(3>0),(1=1 half),(1>0) -> 3.5/4
    assert metrics.auc(T([3.0, 1.0]), T([1.0, 0.0])) == pytest.approx(3.5 / 4)
    assert math.isnan(metrics.auc(T([1.0]), T([])))


def test_threshold_and_accuracy_by_hand():
    pos, neg = T([0.9, 0.8, 0.5]), T([0.1, 0.4, 0.85])
    threshold = metrics.best_threshold(pos, neg)
    # predict positive above 0.4: all positives right, negatives 0.1 and 0.4 right, 0.85 wrong
    # (above 0.1 gets 4/6, above 0.85 gets 4/6)
    assert threshold == pytest.approx(0.4)
    assert metrics.accuracy(pos, neg, threshold) == pytest.approx(5 / 6)
    assert metrics.accuracy(pos, neg, 1.0) == pytest.approx(3 / 6)  # everything negative


def test_roc_points_on_a_fixed_grid():
    auc, (fpr, tpr) = metrics.auc_and_roc(T([0.9, 0.8]), T([0.1, 0.85]), grid=11)
    assert fpr[0] == 0.0 and fpr[-1] == 1.0 and len(tpr) == 11
    # one positive (0.9) above both negatives; the second only after the 0.85 negative
    assert tpr[:5] == pytest.approx([0.5] * 5) and tpr[5:] == pytest.approx([1.0] * 6)  # top of the step at 0.5
    assert auc == pytest.approx(0.75)


@pytest.mark.parametrize("ties", [False, True])
def test_auc_and_roc_match_scikit_learn(ties):
    from sklearn.metrics import roc_auc_score, roc_curve

    g = torch.Generator().manual_seed(int(ties))
    for _ in range(100):
        n, m = (int(x) for x in torch.randint(1, 60, (2,), generator=g))
        pos = torch.randint(0, 10, (n,), generator=g).double()
        neg = torch.randint(0, 8, (m,), generator=g).double()
        if not ties:
            pos, neg = pos + torch.rand(n, generator=g), neg + torch.rand(m, generator=g)
        labels, scores = np.r_[np.ones(n), np.zeros(m)], torch.cat([pos, neg]).numpy()
        auc, (grid, tpr) = metrics.auc_and_roc(pos, neg)
        assert auc == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
        fpr_ref, tpr_ref, _ = roc_curve(labels, scores, drop_intermediate=False)
        # the curve through scikit-learn's corners; at a vertical step, its top
        expected = [tpr_ref[np.isclose(fpr_ref, x)].max() if np.isclose(fpr_ref, x).any()
                    else np.interp(x, fpr_ref, tpr_ref) for x in grid]
        assert tpr == pytest.approx(expected, abs=1e-9)


def test_user_scores_by_hand():
    # user 0: targets ranked 1 and 20 (k = 10: recall 1/2); user 1: none; user 2: one target at rank 3
    ranks, owner = torch.tensor([1, 20, 3]), torch.tensor([0, 0, 2])
    scores = metrics.user_scores(ranks, owner, 3, 10)
    assert scores["recall@10"].tolist() == [0.5, 1.0]  # users without a target are left out
    ideal_two = 1 + 1 / np.log2(3)
    assert scores["ndcg@10"].tolist() == pytest.approx([1 / ideal_two, 1 / np.log2(4)])
    means = metrics.ranking_metrics(ranks, owner, 3, [10])
    assert means["recall@10"] == pytest.approx(scores["recall@10"].mean())
    assert means["ndcg@10"] == pytest.approx(scores["ndcg@10"].mean())


def test_bootstrap_of_two_identical_scorers_contains_zero():
    rng = np.random.default_rng(0)
    hits = (rng.random(2000) < 0.3).astype(float)
    diff, low, high = metrics.paired_difference(hits, hits.copy(), samples=200, seed=1)
    assert diff == 0.0 and low <= 0.0 <= high


def test_bootstrap_of_a_worse_scorer_by_construction_excludes_zero():
    rng = np.random.default_rng(0)
    hits = (rng.random(2000) < 0.3).astype(float)
    worse = hits * (rng.random(2000) > 0.2)  # loses a fifth of its hits: about -0.06
    diff, low, high = metrics.paired_difference(hits, worse, samples=200, seed=1)
    assert diff < 0 and high < 0 and low <= diff <= high
    low_a, high_a = metrics.interval(hits, samples=200, seed=1)
    assert low_a < hits.mean() < high_a and high_a - low_a < 0.06  # about 4 standard errors of 0.01
    assert metrics.interval(np.full(50, 0.25), samples=50) == (0.25, 0.25)


def test_bootstrap_by_distinct_values_matches_resampling_users():
    """Few distinct values take the multinomial path; its interval is the users-resampled one's, within Monte Carlo error."""
    rng = np.random.default_rng(0)
    ndcg = np.where(rng.random(4000) < 0.3, 1 / np.log2(rng.integers(1, 11, 4000) + 1), 0.0)  # 11 values
    picks = np.random.default_rng(5).integers(0, len(ndcg), size=(2000, len(ndcg)))
    by_users = np.percentile(ndcg[picks].mean(axis=1), [2.5, 97.5])  # the definition: resample users
    low, high = metrics.interval(ndcg, samples=2000, seed=1)
    se = ndcg.std() / np.sqrt(len(ndcg))  # about 0.0055
    assert low == pytest.approx(by_users[0], abs=0.3 * se) and high == pytest.approx(by_users[1], abs=0.3 * se)
    assert low < ndcg.mean() < high and high - low == pytest.approx(2 * 1.96 * se, rel=0.1)


def test_popularity_percentile_by_hand():
    counts = torch.tensor([0, 10, 5, 5, 1])  # catalogue items 1..4; item 0 unknown
    # less popular than item 1: 3 of 3 others -> 100; items 2 and 3 tie: 1 below + half a tie -> 50; item 4: 0
    top = torch.tensor([[1, 2], [4, -1]])
    assert metrics.popularity_percentile(top, counts) == pytest.approx((100 + 50 + 0) / 3)


def test_auc_interval_narrows_with_more_pairs():
    low, high = metrics.auc_interval(0.8, 100, 10_000)
    assert low < 0.8 < high and 0.05 < high - low < 0.2
    low2, high2 = metrics.auc_interval(0.8, 10_000, 1_000_000)
    assert (high2 - low2) == pytest.approx((high - low) / 10, rel=0.05)  # 100x the pairs: a tenth the width
