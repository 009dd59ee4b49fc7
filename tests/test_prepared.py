"""The read side of a prepared folder: one error policy, and the views every stage reads."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from gamerec.errors import GamerecError
from gamerec.prepared import Prepared

SPLITS = ["train", "val", "test"]


def write_folder(folder, num_items=4, num_users=3):
    """A hand-written prepared folder: users 1 and 2, items 1..3, one also_view link 1 -> 3."""
    folder.mkdir()
    pd.DataFrame({
        "user": np.array([1, 1, 1, 2, 2], dtype=np.int32),
        "item": np.array([1, 2, 3, 2, 3], dtype=np.int32),
        "timestamp": np.array([5, 6, 7, 3, 1], dtype=np.int64),
        "rating": np.ones(5, dtype=np.float32),
        "split": pd.Categorical(["train", "val", "test", "train", "train"], categories=SPLITS),
    }).to_parquet(folder / "interactions.parquet", index=False)
    pd.DataFrame({"user": np.arange(num_users, dtype=np.int32), "user_id": ["", "A", "B"][:num_users]}).to_parquet(
        folder / "users.parquet", index=False)
    pd.DataFrame({
        "item": np.arange(num_items, dtype=np.int32), "item_id": ["", "x", "y", "z"][:num_items],
        "title": [""] * num_items, "brand": np.array([0, 1, 0, 1][:num_items], dtype=np.int32),
        "brand_name": ["", "Acme", "", "Acme"][:num_items], "platform": ["", "PC", "", "Mac"][:num_items], "price": [np.nan, 9.0, np.nan, 99.0][:num_items],
        "price_missing": [True, False, True, False][:num_items],
    }).to_parquet(folder / "items.parquet", index=False)
    np.savez(folder / "also_view.npz", indptr=np.array([0, 0, 1, 1, 1]), indices=np.array([3], dtype=np.int32))
    np.savez(folder / "text.npz", indptr=np.array([0, 0, 2, 2, 3]), indices=np.array([1, 2, 1], dtype=np.int32))
    (folder / "vocab.json").write_text(json.dumps({"brands": ["<unk>", "Acme"], "tokens": ["<unk>", "a", "b"]}))
    stats = {"num_items": num_items, "num_users": num_users, "num_brands": 2, "num_tokens": 3}
    (folder / "stats.json").write_text(json.dumps(stats))
    return folder


def test_train_positives_and_also_view(tmp_path):
    pos = Prepared(write_folder(tmp_path / "prepared")).train_positives()
    assert pos.users.tolist() == [1, 2, 2] and pos.items.tolist() == [1, 2, 3] and pos.num_items == 4
    assert pos.users.dtype == np.int64 and pos.also_view.indptr.tolist() == [0, 0, 1, 1, 1]


def test_histories_are_in_time_order_per_user(tmp_path):
    prepared = Prepared(write_folder(tmp_path / "prepared"))
    train = prepared.history()
    assert train.indptr.tolist() == [0, 0, 1, 3] and train.indices.tolist() == [1, 3, 2]  # user 2: t=1 then t=3
    everything = prepared.history(("train", "val", "test"))
    assert everything.indices.tolist() == [1, 2, 3, 3, 2]


def test_item_features_standardise_the_log_price_of_priced_items(tmp_path):
    features = Prepared(write_folder(tmp_path / "prepared")).item_features()
    logs = [math.log1p(9.0), math.log1p(99.0)]
    mean, std = sum(logs) / 2, abs(logs[1] - logs[0]) / 2
    assert features.log_price_z.tolist() == pytest.approx([0.0, (logs[0] - mean) / std, 0.0, (logs[1] - mean) / std])
    assert features.price_missing.tolist() == [True, False, True, False]
    assert features.brand.tolist() == [0, 1, 0, 1] and features.text.indices.tolist() == [1, 2, 1]


def test_holdout_hides_the_named_splits(tmp_path):
    holdout = Prepared(write_folder(tmp_path / "prepared")).holdout("test", ("train", "val"))
    assert holdout.users.tolist() == [1] and holdout.items.tolist() == [3]
    assert holdout.exclude.indices.tolist() == [1, 2]


def test_a_missing_incomplete_or_inconsistent_folder_is_one_line(tmp_path):
    with pytest.raises(GamerecError, match=r"missing: not found; run `dvc repro prepare`$"):
        Prepared(tmp_path / "missing")
    folder = write_folder(tmp_path / "prepared")
    (folder / "also_view.npz").unlink()
    with pytest.raises(GamerecError, match=r"prepared: missing also_view.npz; run `dvc repro prepare`$"):
        Prepared(folder)
    stale = write_folder(tmp_path / "stale", num_items=3)  # stats and items say 3, the CSR files 4 rows
    with pytest.raises(GamerecError, match=r"also_view.npz has 4 rows but stats.json says num_items = 3"):
        Prepared(stale).also_view
    (stale / "stats.json").write_text("{not json")
    with pytest.raises(GamerecError, match=r"stats.json is unreadable .*; run `dvc repro prepare`$") as err:
        Prepared(stale)
    assert "\n" not in str(err.value)
    (stale / "stats.json").write_text(json.dumps({"num_items": 3}))
    with pytest.raises(GamerecError, match=r"stats.json lacks num_users, num_brands, num_tokens"):
        Prepared(stale)
