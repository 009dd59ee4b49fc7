import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gamerec import interactions, samplers
from gamerec.config import AlsoViewParams, InBatchParams, OutBatchParams, SamplingParams
from gamerec.csr import Csr
from gamerec.errors import GamerecError
from gamerec.prepared import TrainPositives
from gamerec.samplers import also_view, out_batch, read_negatives, sample, write_negatives


def positives(pairs, num_items, also=None):
    """TrainPositives from (user, item) pairs and an {item: [also_view items]} mapping."""
    users, items = (np.array(col, dtype=np.int64) for col in zip(*pairs)) if pairs else (np.zeros(0, np.int64),) * 2
    also = also or {}
    rows = [list(also.get(i, [])) for i in range(num_items)]
    indptr = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
    indices = np.array([x for r in rows for x in r], dtype=np.int32)
    return TrainPositives(users, items, num_items, Csr(indptr, indices))


def groups(df):
    """Split examples into (user, item, positive weight, repeats, negative items) per positive."""
    label = df["label"].to_numpy()
    user, item, weight = df["user"].to_numpy(), df["item"].to_numpy(), df["weight"].to_numpy()
    out = []
    for r in range(len(df)):
        new = label[r] == 1 and (
            not out or label[r - 1] == 0 or (user[r], item[r]) != (out[-1][0], out[-1][1])
        )
        if new:
            out.append([user[r], item[r], float(weight[r]), 1, []])
        elif label[r] == 1:
            out[-1][3] += 1
        else:
            out[-1][4].append(int(item[r]))
    return out


def train_sets(pos):
    seen = {}
    for u, i in zip(pos.users, pos.items):
        seen.setdefault(int(u), set()).add(int(i))
    return seen


def check_contract(neg, pos, k, balance):
    df = neg.examples
    assert list(df.columns[:5]) == ["user", "item", "label", "weight", "positive"]
    assert [str(t) for t in df.dtypes[:5]] == ["int32", "int32", "float32", "float32", "int32"]
    seen = train_sets(pos)
    gs = groups(df)
    # every row names the positive of its group, so train can cut the user's history there
    group_item = np.repeat([g[1] for g in gs], [g[3] + len(g[4]) for g in gs])
    np.testing.assert_array_equal(df["positive"].to_numpy(), group_item)
    assert [(g[0], g[1]) for g in gs] == list(zip(pos.users, pos.items))  # positives in order
    for u, _, w, reps, negs in gs:
        assert not seen[int(u)] & set(negs), "a user's own train item was used as a negative"
        assert len(negs) <= k
        assert all(0 < x < pos.num_items for x in negs)
        expect = max(len(negs), 1)
        if balance == "weight":
            assert (w, reps) == (expect, 1)
        elif balance == "oversample":
            assert (w, reps) == (1.0, expect)
        else:
            assert (w, reps) == (1.0, 1)
    assert (df.loc[df.label == 0, "weight"] == 1).all()
    r = neg.report
    assert r["examples"] == len(df)
    assert r["positives"] == len(pos.users)
    assert r["negatives"] == int((df.label == 0).sum())
    json.dumps(r)  # plain JSON
    return gs


# ---------------------------------------------------------------------------------------------
# out_batch

SMALL = [(1, 1), (1, 2), (2, 2), (2, 3), (3, 4), (3, 1), (4, 5)]  # 5 catalogue items, 4 users


def test_out_batch_exact_k_never_seen_and_weighted():
    pos = positives(SMALL, num_items=7)  # item 6 has no train interaction: never drawn
    neg = sample("out_batch", pos, SamplingParams(), OutBatchParams(negatives=3))
    gs = check_contract(neg, pos, 3, "weight")
    assert all(len(g[4]) == 3 for g in gs)
    assert set(neg.examples.loc[neg.examples.label == 0, "item"]) <= {1, 2, 3, 4, 5}
    assert neg.manifest["loss"] == "bce"
    assert neg.report["negatives_per_positive"] == 3
    assert neg.report["positive_weight"] == neg.report["negative_weight"] == 21
    assert neg.report["unfilled"] == 0


@pytest.mark.parametrize("balance", ["weight", "oversample", "none"])
def test_out_batch_balance(balance):
    pos = positives(SMALL, num_items=6)
    neg = out_batch(pos, OutBatchParams(negatives=4, balance=balance), np.random.default_rng(1))
    check_contract(neg, pos, 4, balance)
    r = neg.report
    if balance == "none":
        assert r["positive_weight"] == len(SMALL) and r["positive_rows"] == len(SMALL)
    else:
        assert r["positive_weight"] == r["negative_weight"] == 4 * len(SMALL)
    assert r["positive_rows"] == (4 * len(SMALL) if balance == "oversample" else len(SMALL))


def test_out_batch_counts_rejected_draws_and_drops_users_with_nothing_left():
    # user 1 bought every catalogue item: each draw is rejected until the round cap
    pos = positives([(1, 1), (1, 2), (2, 1)], num_items=3)
    neg = out_batch(pos, OutBatchParams(negatives=2), np.random.default_rng(0))
    gs = check_contract(neg, pos, 2, "weight")
    assert [len(g[4]) for g in gs] == [0, 0, 2]
    assert gs[0][2] == 1.0  # weight at least 1 for a positive left without negatives
    assert neg.report["unfilled"] == 4
    assert neg.report["dropped_interacted"] >= 4 * interactions.MAX_ROUNDS
    assert neg.examples.loc[neg.examples.user == 2, "item"].tolist() == [1, 2, 2]


def test_out_batch_popularity_prefers_popular_items():
    # item 1: 60 buyers, item 2: 20, items 3..5: 5 each; each user bought exactly one item
    counts = {1: 60, 2: 20, 3: 5, 4: 5, 5: 5}
    pairs, u = [], 1
    for item, c in counts.items():
        for _ in range(c):
            pairs.append((u, item))
            u += 1
    pos = positives(pairs, num_items=6)
    share = {}
    for dist in ("uniform", "popularity"):
        p = OutBatchParams(negatives=400, distribution=dist, alpha=1.0)
        df = out_batch(pos, p, np.random.default_rng(3)).examples
        buyers3 = set(u for u, i in pairs if i == 3)
        negs = df[(df.label == 0) & df.user.isin(buyers3)]
        share[dist] = (negs.item == 1).mean()
    # users who bought item 3 draw from {1, 2, 4, 5}: item 1 has 60/90 of the mass, or 1/4
    assert share["popularity"] == pytest.approx(60 / 90, abs=0.05)
    assert share["uniform"] == pytest.approx(1 / 4, abs=0.05)


# ---------------------------------------------------------------------------------------------
# also_view

ALSO = {1: [2, 3, 4], 2: [1], 3: [5, 6, 7, 8, 9], 5: []}
AV_PAIRS = [(1, 1), (1, 4), (2, 3), (3, 2), (3, 5), (4, 6), (4, 7), (4, 8), (4, 9)]


def test_also_view_hard_negatives_from_row_without_bought_items():
    pos = positives(AV_PAIRS, num_items=10, also=ALSO)
    neg = also_view(pos, AlsoViewParams(negatives=3, top_up=False), np.random.default_rng(0))
    gs = check_contract(neg, pos, 3, "weight")
    by_pos = {(int(g[0]), int(g[1])): g[4] for g in gs}
    # user 1 bought 4: item 1's row {2,3,4} leaves {2,3}; 4 is dropped and counted
    assert sorted(by_pos[(1, 1)]) == [2, 3]
    assert by_pos[(1, 4)] == []
    # user 2, item 3: row has 5 candidates, capped at 3, all from the row
    assert len(by_pos[(2, 3)]) == 3 and set(by_pos[(2, 3)]) <= {5, 6, 7, 8, 9}
    assert by_pos[(3, 2)] == [1]  # row of 2 is [1], which user 3 did not buy
    assert by_pos[(3, 5)] == []  # empty row
    r = neg.report
    assert r["dropped_interacted"] >= 1
    assert r["easy_negatives"] == 0 and r["hard_negatives"] == r["negatives"]
    assert r["hard_share"] == 1.0


def test_also_view_drop_count_exact():
    pos = positives([(1, 1), (1, 4), (2, 1)], num_items=5, also={1: [2, 3, 4]})
    neg = also_view(pos, AlsoViewParams(negatives=4, top_up=False), np.random.default_rng(0))
    gs = check_contract(neg, pos, 4, "weight")
    assert neg.report["dropped_interacted"] == 1  # user 1 bought 4 from item 1's row
    assert sorted(gs[0][4]) == [2, 3] and sorted(gs[2][4]) == [2, 3, 4]
    assert neg.report["positives_with_hard"] == pytest.approx(2 / 3)


def test_also_view_excludes_the_positive_itself():
    pos = positives([(1, 1), (2, 2)], num_items=4, also={1: [1, 3]})
    gs = groups(also_view(pos, AlsoViewParams(negatives=4, top_up=False), np.random.default_rng(0)).examples)
    assert gs[0][4] == [3]


@pytest.mark.parametrize("top_up", [False, True])
def test_also_view_easy_adds_uniform_negatives_to_every_positive(top_up):
    pos = positives(AV_PAIRS, num_items=10, also=ALSO)
    base = also_view(pos, AlsoViewParams(negatives=2, top_up=top_up), np.random.default_rng(0))
    mixed = also_view(pos, AlsoViewParams(negatives=2, top_up=top_up, easy=2), np.random.default_rng(0))
    check_contract(mixed, pos, 4, "weight")
    assert mixed.report["hard_negatives"] == base.report["hard_negatives"]
    seen, catalogue = train_sets(pos), set(int(i) for i in pos.items)
    for (u, _, _, _, b), (_, _, _, _, m) in zip(groups(base.examples), groups(mixed.examples)):
        assert len(m) == len(b) + (2 if catalogue - seen[int(u)] else 0)


def test_also_view_top_up_fills_to_k_and_reports_mix():
    pos = positives(AV_PAIRS, num_items=10, also=ALSO)
    neg = also_view(pos, AlsoViewParams(negatives=3, top_up=True), np.random.default_rng(0))
    gs = check_contract(neg, pos, 3, "weight")
    seen = train_sets(pos)
    catalogue = set(int(i) for i in pos.items)
    room = {u: catalogue - s for u, s in seen.items()}
    for u, _, _, _, negs in gs:
        assert len(negs) == 3 if room[int(u)] else True
    r = neg.report
    assert r["hard_negatives"] + r["easy_negatives"] == r["negatives"] == sum(len(g[4]) for g in gs)
    assert r["easy_negatives"] > 0
    assert r["hard_share"] == pytest.approx(r["hard_negatives"] / r["negatives"])
    # the hard part equals the top_up=False run with the same rng stream
    hard = also_view(pos, AlsoViewParams(negatives=3, top_up=False), np.random.default_rng(0))
    assert hard.report["hard_negatives"] == r["hard_negatives"]
    for g, h in zip(gs, groups(hard.examples)):
        assert g[4][: len(h[4])] == h[4]  # hard negatives first, then easy ones


@pytest.mark.parametrize("balance", ["weight", "oversample", "none"])
def test_also_view_balance(balance):
    pos = positives(AV_PAIRS, num_items=10, also=ALSO)
    neg = also_view(pos, AlsoViewParams(negatives=2, balance=balance), np.random.default_rng(0))
    check_contract(neg, pos, 2, balance)


def test_also_view_chunking_gives_the_same_examples():
    pos = positives(AV_PAIRS, num_items=10, also=ALSO)
    params = AlsoViewParams(negatives=2)
    whole = also_view(pos, params, np.random.default_rng(5))
    tiny_cap = 2 * samplers.BYTES_PER_CANDIDATE / 2**20  # two candidates per chunk
    chunked = also_view(pos, params, np.random.default_rng(5), SamplingParams(memory_mb=tiny_cap))
    pd.testing.assert_frame_equal(whole.examples, chunked.examples)
    assert whole.report == chunked.report


# ---------------------------------------------------------------------------------------------
# in_batch


def test_in_batch_is_the_positives_and_its_manifest():
    pos = positives([(1, 1), (1, 2), (2, 1), (3, 1), (3, 3)], num_items=5)
    neg = sample("in_batch", pos, SamplingParams(), InBatchParams(mixed_negatives=7))
    df = neg.examples
    assert list(df.columns) == ["user", "item", "label", "weight", "positive"]
    assert (df.positive == df.item).all()
    assert df[["user", "item"]].values.tolist() == [[1, 1], [1, 2], [2, 1], [3, 1], [3, 3]]
    assert (df.label == 1).all() and (df.weight == 1).all()
    assert neg.manifest["loss"] == "batch_softmax" and neg.manifest["mixed_negatives"] == 7
    assert neg.manifest["columns"] == ["user", "item", "label", "weight", "positive"]
    assert neg.report["negatives_per_positive"] == 0 and neg.report["mixed_negatives"] == 7
    assert neg.report["examples"] == neg.report["positives"] == 5


@pytest.mark.parametrize("distribution", ["uniform", "popularity"])
def test_out_batch_writes_each_negatives_log_probability(distribution):
    pos = positives(SMALL, num_items=7)  # train counts: item 1: 2, 2: 2, 3: 1, 4: 1, 5: 1
    neg = out_batch(pos, OutBatchParams(negatives=3, distribution=distribution, alpha=1.0), np.random.default_rng(0))
    df = neg.examples
    counts = {1: 2, 2: 2, 3: 1, 4: 1, 5: 1}
    q = {i: (c / 7 if distribution == "popularity" else 1 / 5) for i, c in counts.items()}
    negatives = df[df.label == 0]
    np.testing.assert_allclose(negatives.log_q, np.log([q[i] for i in negatives.item]), rtol=1e-6)
    assert (df.log_q[df.label == 1] == 0).all() and str(df.log_q.dtype) == "float32"


def test_mined_starts_from_uniform_negatives_and_tells_training_how_to_mine():
    from gamerec.config import MinedParams

    pos = positives(AV_PAIRS, num_items=10, also=ALSO)
    neg = sample("mined", pos, SamplingParams(), MinedParams(negatives=2, skip_top=3, pool=4, refresh=2))
    check_contract(neg, pos, 2, "weight")
    assert neg.manifest["loss"] == "sampled_softmax"
    assert neg.manifest["mining"] == {"negatives": 2, "skip_top": 3, "pool": 4, "refresh": 2}


# ---------------------------------------------------------------------------------------------
# dispatch, determinism, files


@pytest.mark.parametrize("name", ["out_batch", "in_batch", "also_view"])
def test_same_seed_same_examples(name):
    pos = positives(AV_PAIRS, num_items=10, also=ALSO)
    a = sample(name, pos, SamplingParams(seed=4))
    b = sample(name, pos, SamplingParams(seed=4))
    pd.testing.assert_frame_equal(a.examples, b.examples)
    assert a.manifest == b.manifest and a.manifest["seed"] == 4 and a.manifest["sampler"] == name
    json.dumps(a.manifest)


def test_different_seed_changes_out_batch():
    pos = positives(AV_PAIRS, num_items=10, also=ALSO)
    a = sample("out_batch", pos, SamplingParams(seed=0)).examples
    b = sample("out_batch", pos, SamplingParams(seed=1)).examples
    assert not a.equals(b)


def test_each_sampler_draws_from_a_stream_of_its_own_name():
    # the stream is (seed, name): registering another sampler first changes nothing here
    pos = positives(AV_PAIRS, num_items=10, also=ALSO)
    before = sample("out_batch", pos, SamplingParams(seed=4)).examples
    rng = np.random.default_rng([4, samplers.seed_of("out_batch")])
    pd.testing.assert_frame_equal(before, out_batch(pos, OutBatchParams(), rng).examples)
    assert len({samplers.seed_of(name) for name in samplers.SAMPLERS}) == len(samplers.SAMPLERS)


def test_a_new_sampler_is_a_function_and_one_registry_entry(monkeypatch, prepared):
    """A throwaway sampler, registered here: sampled, written, read and trained like the shipped ones."""
    from dataclasses import dataclass

    import torch

    from gamerec import model
    from gamerec.config import ModelParams, TrainParams
    from gamerec.training import Examples, fit

    @dataclass(frozen=True)
    class NextItemParams:
        offset: int = 1  # the negative is the item `offset` ids above the positive

    monkeypatch.setattr(samplers, "SAMPLERS", dict(samplers.SAMPLERS))  # the registry is left as it was

    @samplers.register("next_item", NextItemParams, loss="bce")
    def next_item(positives, params, rng, shared):
        items = np.asarray(positives.items, dtype=np.int64)
        negative = 1 + (items - 1 + params.offset) % (positives.num_items - 1)
        examples = samplers._assemble(positives.users.astype(np.int32), items.astype(np.int32),
                                      np.arange(len(items)), negative.astype(np.int32), "weight")
        return samplers.Negatives(examples, samplers._report(examples, len(items), 0))

    neg = sample("next_item", prepared.train_positives(), SamplingParams(seed=3), NextItemParams(offset=2))
    assert neg.manifest == {"sampler": "next_item", "loss": "bce", "seed": 3, "params": {"offset": 2},
                            "columns": ["user", "item", "label", "weight", "positive"]}
    df = neg.examples
    assert (df.item[df.label == 0].to_numpy() == (df.positive[df.label == 0].to_numpy() + 1) % (prepared.num_items - 1) + 1).all()
    result = fit(model.build(prepared, ModelParams(dim=8, history=3), seed=0), Examples.from_frame(df, neg.manifest),
                 prepared.holdout("val"), TrainParams(epochs=1, batch_size=512), progress=False)
    assert result.best_epoch == 1 and torch.isfinite(torch.tensor(result.history[0]["loss"]))


def test_unknown_sampler():
    with pytest.raises(GamerecError, match="expected one of out_batch, in_batch, also_view"):
        sample("random", positives(SMALL, 6), SamplingParams())


@pytest.mark.parametrize("name", ["out_batch", "in_batch"])
def test_write_read_round_trip(tmp_path, name):
    neg = sample(name, positives(SMALL, 6), SamplingParams())
    write_negatives(neg, tmp_path / name)
    df, manifest = read_negatives(tmp_path / name)
    pd.testing.assert_frame_equal(df, neg.examples)
    assert manifest == neg.manifest


def test_read_negatives_missing_or_incomplete(tmp_path):
    with pytest.raises(GamerecError, match=r"nowhere: not found; run `dvc repro sample_negatives@nowhere`"):
        read_negatives(tmp_path / "nowhere")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "manifest.json").write_text("{}")
    with pytest.raises(GamerecError, match=r"half: missing examples.parquet") as err:
        read_negatives(tmp_path / "half")
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------------------------------------
# property test


@st.composite
def data_sets(draw):
    num_items = draw(st.integers(2, 9))
    n_users = draw(st.integers(1, 6))
    all_pairs = [(u, i) for u in range(1, n_users + 1) for i in range(1, num_items)]
    pairs = draw(st.lists(st.sampled_from(all_pairs), min_size=1, max_size=len(all_pairs), unique=True))
    also = {
        i: draw(st.lists(st.integers(1, num_items - 1), max_size=6, unique=True))
        for i in range(1, num_items)
    }
    return positives(sorted(pairs), num_items, also)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pos=data_sets(),
    k=st.integers(1, 4),
    balance=st.sampled_from(["weight", "oversample", "none"]),
    top_up=st.booleans(),
    distribution=st.sampled_from(["uniform", "popularity"]),
    seed=st.integers(0, 2**16),
)
def test_property_negatives_are_never_train_items(pos, k, balance, top_up, distribution, seed):
    seen = train_sets(pos)
    catalogue = set(int(i) for i in pos.items)
    ob = out_batch(pos, OutBatchParams(negatives=k, balance=balance, distribution=distribution), np.random.default_rng(seed))
    for u, _, _, _, negs in check_contract(ob, pos, k, balance):
        assert set(negs) <= catalogue
        if not catalogue - seen[int(u)]:
            assert negs == []
    assert ob.report["negatives"] + ob.report["unfilled"] == k * len(pos.users)

    av = also_view(pos, AlsoViewParams(negatives=k, top_up=top_up, balance=balance), np.random.default_rng(seed))
    rows = {i: set(pos.also_view.indices[pos.also_view.indptr[i]: pos.also_view.indptr[i + 1]].tolist())
            for i in range(pos.num_items)}
    gs = check_contract(av, pos, k, balance)
    dropped = 0
    for u, i, _, _, negs in gs:
        legit = rows[int(i)] - {int(i)}
        dropped += len(legit & seen[int(u)])
        want_hard = min(k, len(legit - seen[int(u)]))
        assert set(negs[:want_hard]) <= legit  # hard ones first, from the positive's row
        if not top_up:
            assert len(negs) == want_hard
    r = av.report
    assert r["dropped_interacted"] == dropped
    assert r["hard_negatives"] + r["easy_negatives"] == r["negatives"]
    if not top_up:
        assert r["easy_negatives"] == 0


def test_the_sampling_stages_leave_torch_unimported():
    """torch takes seconds to import; sample_negatives and choose_sampler, run once per sampler and experiment, never use it."""
    code = "import sys, gamerec.samplers, gamerec.prepared, gamerec.io, gamerec.stage; print(sorted(m for m in sys.modules if m == 'torch'))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert (done.returncode, done.stdout.strip()) == (0, "[]"), done.stderr
