"""The export stage's library: vectors for every served item and user, round trips, and index quality."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from gamerec import ann, export, io
from gamerec.config import ExportParams, ModelParams
from gamerec.model import UserTower, build


@pytest.fixture(scope="module")
def catalogue(tiny_model, prepared):
    return export.embed(tiny_model, prepared, "train+val+test")


def test_items_are_the_catalogue_without_unknown_in_model_order(catalogue, tiny_model, prepared_dir):
    items = pd.read_parquet(prepared_dir / "items.parquet").sort_values("item")
    assert list(catalogue.items.asin) == list(items.item_id[1:])
    assert len(catalogue.item_vectors) == tiny_model.config.num_items - 1
    want = tiny_model.embed_items(torch.arange(1, tiny_model.config.num_items)).detach().numpy()
    assert np.allclose(catalogue.item_vectors, want, atol=1e-6)
    priced = ~items.price_missing.to_numpy()[1:]
    assert np.isnan(catalogue.items.price.to_numpy()[~priced]).all()
    assert np.allclose(catalogue.items.price.to_numpy()[priced], items.price.to_numpy()[1:][priced])


def test_users_know_all_their_items_in_time_order_and_popularity_counts_them(catalogue, prepared_dir):
    interactions = pd.read_parquet(prepared_dir / "interactions.parquet")
    users = pd.read_parquet(prepared_dir / "users.parquet").sort_values("user")
    assert list(catalogue.users.user_id) == list(users.user_id[1:])
    indptr, indices = catalogue.known
    for user in (1, 2, len(users) - 1):
        mine = interactions[interactions.user == user].sort_values(["timestamp", "item"], kind="stable")
        assert list(indices[indptr[user - 1] : indptr[user]]) == list(mine.item - 1)
    counts = interactions.item.value_counts()
    assert catalogue.items.popularity.iloc[counts.index[0] - 1] == counts.iloc[0]
    assert set(catalogue.test_users + 1) == set(interactions.user[interactions.split == "test"])


def test_user_vectors_pool_the_known_splits(tiny_model, prepared):
    everything = export.embed(tiny_model, prepared, "train+val+test")
    before_test = export.embed(tiny_model, prepared, "train+val")
    assert not np.allclose(everything.user_vectors, before_test.user_vectors)  # the test item is in the pool
    assert np.diff(everything.known[0]).sum() - np.diff(before_test.known[0]).sum() == len(everything.test_users)


def test_vectors_and_lists_round_trip_through_parquet(catalogue, tmp_path):
    io.write_table(tmp_path / "users.parquet", catalogue.users, catalogue.user_vectors, known=catalogue.known)
    frame, vectors, lists = io.read_table(tmp_path / "users.parquet")
    assert frame.equals(catalogue.users) and np.array_equal(vectors, catalogue.user_vectors)
    assert all(np.array_equal(a, b) for a, b in zip(lists["known"], catalogue.known))
    io.write_table(tmp_path / "items.parquet", catalogue.items)
    frame, vectors, lists = io.read_table(tmp_path / "items.parquet")
    assert frame.equals(catalogue.items) and vectors is None and lists == {}


def test_exact_top_k_is_brute_force_without_known_items(catalogue):
    users = catalogue.test_users[:20]
    top = export.exact_top_k(catalogue, users, 5)
    for row, user in zip(top, users):
        scores = catalogue.item_vectors @ catalogue.user_vectors[user]
        scores[catalogue.known[1][catalogue.known[0][user] : catalogue.known[0][user + 1]]] = -np.inf
        assert np.allclose(scores[row], np.sort(scores)[::-1][:5], atol=1e-6)


def test_recall_against_counts_the_overlap_and_ignores_padding():
    exact = np.array([[1, 2, 3], [4, -1, -1], [-1, -1, -1]])
    found = np.array([[3, 9, 1], [4, -1, -1], [-1, -1, -1]])
    assert export.recall_against(found, exact) == pytest.approx((2 / 3 + 1) / 2)


def test_flat_index_matches_exact_search_and_hnsw_is_measured_too(catalogue):
    indexes, report = export.build_and_measure(catalogue, ExportParams(eval_users=200, k=10))
    assert set(indexes) == {"flat", "hnsw"} and report["query_users"] == 200
    assert report["flat"]["recall@10"] == 1.0
    assert 0.9 <= report["hnsw"]["recall@10"] <= 1.0
    for kind in ("flat", "hnsw"):
        assert 0 < report[kind]["timings"]["query_ms_p50"] <= report[kind]["timings"]["query_ms_p99"]


def test_auto_serves_flat_up_to_the_size_param():
    params = ExportParams(flat_max_items=100)
    assert export.served_kind(params, 100) == "flat" and export.served_kind(params, 101) == "hnsw"
    assert export.served_kind(ExportParams(index="hnsw"), 10) == "hnsw"


def test_model_and_prepared_data_of_different_runs_are_one_clear_error(tiny_model, prepared_dir, tmp_path):
    import json
    import shutil

    from gamerec.errors import GamerecError
    from gamerec.prepared import Prepared

    other = tmp_path / "prepared"  # a consistent folder of another run: one item fewer
    shutil.copytree(prepared_dir, other)
    items = pd.read_parquet(other / "items.parquet")
    items.iloc[:-1].to_parquet(other / "items.parquet")
    stats = json.loads((other / "stats.json").read_text())
    (other / "stats.json").write_text(json.dumps({**stats, "num_items": stats["num_items"] - 1}))
    with pytest.raises(GamerecError, match="the model was trained on"):
        export.embed(tiny_model, Prepared(other), "train+val+test")


def test_the_pooling_tower_goes_as_arrays_any_other_as_the_checkpoint_and_an_id_tower_not_at_all(
        tiny_model, prepared, tmp_path):
    pooled = build(prepared, ModelParams(dim=8, hidden=[6], history=3, user_id=False, pooling="mean"), seed=0)
    kind, arrays = export.user_tower(pooled)
    assert kind == "numpy" and arrays["embedding"].shape == (prepared.num_items - 1, 8)  # row 0 (unknown) dropped
    assert np.array_equal(arrays["embedding"], pooled.item_tower.item.weight[1:].detach().numpy())
    assert arrays["recency"].tolist() == [0, 0, 0]  # a plain mean: every weight exp(0)
    assert [arrays[f"weight_{i}"].shape for i in range(2)] == [(6, 8), (8, 6)] and "weight_2" not in arrays
    assert (bool(arrays["normalize"]), int(arrays["history"]), bool(arrays["user_id"])) == (True, 3, False)
    catalogue = export.embed(pooled, prepared, "train+val")
    export.write_serving(tmp_path / "serving", catalogue, ann.build(catalogue.item_vectors, "flat"), {})
    assert sorted(p.name for p in (tmp_path / "serving").glob("user_tower.*")) == ["user_tower.npz"]
    assert json.loads((tmp_path / "serving" / "serving.json").read_text())["user_tower"] == "numpy"
    assert export.user_tower(tiny_model) == ("none", {})  # model.user_id: a list of games has no id

    class OtherTower(UserTower):
        """Any tower but the pooling one itself (and the attention tower: NumPy too)."""

    pooled.user_tower.__class__ = OtherTower
    kind, checkpoint = export.user_tower(pooled)
    assert kind == "torch" and set(checkpoint) == {"config", "state_dict"}


@pytest.mark.parametrize("arch", [
    dict(block="sasrec", item_tower="id", normalize=False, init="normal"),  # SASRec's layout: no layer after the blocks
    dict(block="pre_norm", hidden=[12], recency_bias=True),  # a final norm, an MLP after it, a bias per distance
])
def test_the_attention_tower_goes_as_arrays_that_numpy_evaluates_as_the_model_does(prepared, tmp_path, arch):
    from gamerec.csr import Csr
    from gamerec.tower import NumpyAttentionTower

    params = ModelParams(**{"dim": 8, "history": 4, "user_id": False, "user_tower": "attention", "heads": 2, **arch})
    model = build(prepared, params, seed=0).eval()
    with torch.no_grad():  # weights away from their initial values, so every one of them matters
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    kind, arrays = export.user_tower(model)
    assert kind == "numpy_attention" and arrays["items"].shape == (prepared.num_items - 1, 8)
    np.savez(tmp_path / "tower.npz", **arrays)
    tower = NumpyAttentionTower(tmp_path / "tower.npz")
    # lists of items.parquet rows: empty, shorter than the window, as long, longer (START falls out)
    lists = [[], [3], [5, 1, 7], [2, 4, 6, 8], [9, 1, 2, 3, 4, 5]]
    indptr = np.cumsum([0] + [len(games) for games in lists])
    got = tower.embed(Csr(indptr, np.array([g for games in lists for g in games], np.int64)))
    with torch.no_grad():  # the model's own users: items are rows + 1 (0 is "unknown")
        want = model.embed_users(torch.arange(len(lists)), history=Csr(torch.tensor(indptr),
                                 torch.tensor([g + 1 for games in lists for g in games], dtype=torch.long)))
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-5)
    assert not np.allclose(got[1], got[2])  # the lists give different users
