import json

import numpy as np
import pandas as pd
import pytest

from gamerec.config import PrepareParams, TextParams
from gamerec.data.prepare import dedupe_interactions, k_core, prepare, write_prepared
from gamerec.data.readers import RawData
from gamerec.errors import GamerecError


def frame(rows):
    return pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"]).astype(
        {"rating": "float32", "timestamp": "int64"}
    )


def items_frame(rows):
    cols = ["item_id", "title", "brand", "price", "description", "also_view", "categories"]
    return pd.DataFrame(rows, columns=cols)


def make_raw(n_users=6, n_items=5, seed=0):
    """Every user reviews every item once, at shuffled distinct times."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        times = rng.permutation(n_items) * 100 + u
        rows += [(f"U{u}", f"I{i}", 5.0, int(times[i])) for i in range(n_items)]
    items = items_frame(
        [
            ("I0", "Racing Legends", "Speedy", 19.99, "<b>fast</b> cars", ["I1", "I2", "XX", "I0"],
             ["Video Games", "PlayStation 3", "Games"]),
            ("I1", "Puzzle Box", "", float("nan"), "", ["I0", "I0"], ["Video Games"]),
            ("I2", "Racing Two", "Speedy", 5.0, "cars again", [], []),
            ("I2", "dup line", "Other", 1.0, "", [], []),  # duplicate metadata: first wins
            ("I3", "Shooter", "Boom", float("nan"), "guns", ["I4"], []),
            ("NOREVIEWS", "Never reviewed", "Ghost", 3.0, "x", [], []),
        ]
    )  # I4 has no metadata line at all
    return RawData(interactions=frame(rows), items=items, report={"format": "test"})


PARAMS = PrepareParams(min_interactions=2, text=TextParams(min_count=1))


def test_dedupe_keeps_earliest_review():
    df = frame([("u", "i", 1.0, 50), ("u", "i", 2.0, 10), ("u", "j", 3.0, 20)])
    out = dedupe_interactions(df)
    assert sorted(zip(out.item_id, out.timestamp)) == [("i", 10), ("j", 20)]


def test_leave_last_out_breaks_same_time_ties_by_item_id_not_file_order():
    # each user's three items share one time; the file lists them z, b, a (and items are shared, for the k-core)
    rows = [(u, i, 1.0, 100) for u in ("u2", "u1") for i in ("z", "b", "a")]
    p = prepare(RawData(interactions=frame(rows), items=items_frame([]), report={}), PARAMS)
    item_id = dict(zip(p.items.item, p.items.item_id))
    user_id = dict(zip(p.users.user, p.users.user_id))
    got = {(user_id[u], item_id[i]): s for u, i, s in zip(p.interactions.user, p.interactions.item, p.interactions.split)}
    for user in ("u1", "u2"):  # sorted by id: a (train), b (val), z (test)
        assert [got[user, i] for i in ("a", "b", "z")] == ["train", "val", "test"]
    assert list(p.users.user_id) == ["", "u1", "u2"] and list(p.items.item_id) == ["", "a", "b", "z"]


def test_k_core_cascades_until_stable():
    # u3 has 2 interactions; dropping items with < 2 users removes i9, which drops u3 below 2.
    rows = [(u, i, 1.0, 0) for u in ("u1", "u2") for i in ("a", "b")]
    rows += [("u3", "a", 1.0, 0), ("u3", "i9", 1.0, 0)]
    out = k_core(frame(rows), 2)
    assert set(out.user_id) == {"u1", "u2"} and set(out.item_id) == {"a", "b"}


def test_leave_last_out_split_invariants():
    p = prepare(make_raw(), PARAMS)
    df = p.interactions
    assert p.report["splits"] == {"train": 18, "val": 6, "test": 6}
    for _, g in df.groupby("user"):
        g = g.sort_values("timestamp")
        assert g.split.tolist()[-2:] == ["val", "test"]
        assert g[g.split == "train"].timestamp.max() < g[g.split == "val"].timestamp.min()
    eval_users = set(df.loc[df.split != "train", "user"])
    assert eval_users <= set(df.loc[df.split == "train", "user"])
    # no interaction appears in two splits
    assert not df.duplicated(["user", "item"]).any()


def test_global_time_split_orders_splits_and_drops_cold_users():
    raw = make_raw()
    late = frame([("LATE", "I0", 1.0, 10_000), ("LATE", "I1", 1.0, 10_001)])
    raw = RawData(pd.concat([raw.interactions, late], ignore_index=True), raw.items, raw.report)
    params = PrepareParams(min_interactions=2, split="global_time", val_quantile=0.6, test_quantile=0.8)
    p = prepare(raw, params)
    df = p.interactions
    assert df[df.split == "train"].timestamp.max() < df[df.split == "val"].timestamp.min()
    assert df[df.split == "val"].timestamp.max() < df[df.split == "test"].timestamp.min()
    assert "LATE" not in set(p.users.user_id)  # only test rows, never seen in train
    assert p.report["cleaning"]["dropped_cold_eval_rows"] == 2


def test_encoders_features_and_csr_shapes():
    p = prepare(make_raw(), PARAMS)
    n_items = p.stats["num_items"]
    assert n_items == 6 and p.stats["num_users"] == 7  # 5 items / 6 users plus unknown row 0
    assert p.users.user_id[0] == "" and p.items.item_id[0] == ""
    assert p.interactions.user.min() >= 1 and p.interactions.item.min() >= 1
    items = p.items.set_index("item_id")
    assert items.loc["I0", "price"] == pytest.approx(19.99) and not items.loc["I0", "price_missing"]
    assert items.loc["I1", "price_missing"] and items.loc["I4", "price_missing"]
    assert items.loc["I2", "brand_name"] == "Speedy"  # first metadata line wins
    assert items.loc["I2", "brand"] == items.loc["I0", "brand"] > 0
    assert items.loc["I1", "brand"] == 0 and items.loc["I4", "brand"] == 0
    # the platform is the category path's second level; one level, no line or no metadata: none
    assert items.platform.to_dict() == {"": "", "I0": "PlayStation 3", "I1": "", "I2": "", "I3": "", "I4": ""}
    assert p.brands[0] == "<unk>" and p.tokens[0] == "<unk>"
    indptr, indices = p.text
    assert len(indptr) == n_items + 1 and indices.min() >= 1 and indices.max() < len(p.tokens)
    i4 = items.loc["I4", "item"]
    assert indptr[i4 + 1] == indptr[i4]  # no metadata, no tokens
    av_ptr, av_idx = p.also_view
    assert len(av_ptr) == n_items + 1
    code = dict(zip(p.items.item_id, p.items.item))
    row = lambda i: av_idx[av_ptr[code[i]] : av_ptr[code[i] + 1]].tolist()
    assert row("I0") == [code["I1"], code["I2"]]  # unknown XX and self-link dropped
    assert row("I1") == [code["I0"]]  # repeated link counted once
    assert row("I3") == [code["I4"]]
    cleaning = p.report["cleaning"]
    assert cleaning["duplicate_metadata_lines"] == 1
    assert cleaning["items_without_metadata"] == 1
    assert cleaning["also_view_unknown_ids"] == 1
    cov = p.report["coverage"]
    assert cov == {"price": 2 / 5, "brand": 3 / 5, "description": 3 / 5, "also_view": 3 / 5}


def test_k_core_leaving_nothing_is_a_clear_error():
    with pytest.raises(GamerecError, match="prepare.min_interactions = 50 leaves no interactions"):
        prepare(make_raw(), PrepareParams(min_interactions=50))


def test_written_files_round_trip(tmp_path):
    p = prepare(make_raw(), PARAMS)
    write_prepared(p, tmp_path / "prepared")
    out = tmp_path / "prepared"
    inter = pd.read_parquet(out / "interactions.parquet")
    pd.testing.assert_frame_equal(inter, p.interactions)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["num_items"] == len(pd.read_parquet(out / "items.parquet"))
    with np.load(out / "text.npz") as z:
        assert z["indptr"].shape == (stats["num_items"] + 1,)
    vocab = json.loads((out / "vocab.json").read_text())
    assert len(vocab["tokens"]) == stats["num_tokens"] and len(vocab["brands"]) == stats["num_brands"]
