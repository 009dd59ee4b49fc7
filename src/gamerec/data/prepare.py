"""Raw frames to the prepared data set every later stage reads.

Order matters and is the protocol: dedupe (user, item) keeping the earliest review, k-core
filter, temporal split, drop evaluation rows of users unseen in train, then encode. Encoders
give index 0 to "unknown", so every table and CSR matrix below has a row 0 with empty
features and arrays can be indexed by the encoded id directly.

The folder's files are named in `gamerec.data.files`, and read only through `gamerec.prepared`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gamerec.config import PrepareParams
from gamerec.csr import Csr
from gamerec.data.files import ALSO_VIEW, INTERACTIONS, ITEMS, SPLITS, STATS, TEXT, USERS, VOCAB
from gamerec.data.readers import RawData
from gamerec.errors import GamerecError
from gamerec.text import UNKNOWN, build_vocabulary, encode_csr, tokenize


@dataclass
class PreparedData:
    """Everything `prepare` produces, in memory; `write_prepared` puts it on disk."""

    interactions: pd.DataFrame
    users: pd.DataFrame
    items: pd.DataFrame
    brands: list[str]
    tokens: list[str]
    text: Csr
    also_view: Csr
    stats: dict[str, Any]
    report: dict[str, Any]


def dedupe_interactions(df: pd.DataFrame) -> pd.DataFrame:
    """Keep each (user, item) pair once, at its earliest review; ties keep file order."""
    df = df.sort_values("timestamp", kind="stable")
    return df.drop_duplicates(["user_id", "item_id"], keep="first")


def _places(ids: pd.Series) -> np.ndarray:
    """Ids as integer places 0.. in their sorted order (`prepare` passes them so already: `_ranked`)."""
    values = ids.to_numpy()
    if values.dtype.kind in "iu" and (len(values) == 0 or values.min() >= 0):
        return values
    return pd.factorize(ids, sort=True)[0]


def k_core(df: pd.DataFrame, k: int) -> pd.DataFrame:
    """Repeatedly drop users and items with fewer than `k` interactions until none are left."""
    while True:
        user, item = _places(df["user_id"]), _places(df["item_id"])
        keep = (np.bincount(user)[user] >= k) & (np.bincount(item)[item] >= k)
        if keep.all():
            return df
        df = df[keep]


def split_leave_last_out(df: pd.DataFrame) -> pd.Series:
    """Each user's last interaction is test and the one before it val; the rest train.

    Users with two interactions give their last to test only, users with one keep it in
    train, so every evaluated user has train history. Same-time ties are broken by item id.
    """
    user, item, timestamp = _places(df["user_id"]), _places(df["item_id"]), df["timestamp"].to_numpy()
    order = np.lexsort((item, timestamp, user))  # by user, then time, then item
    per_user = np.bincount(user)
    size = per_user[user[order]]
    from_end = np.cumsum(per_user)[user[order]] - 1 - np.arange(len(order))  # 0 = the user's last
    split = np.empty(len(order), dtype=object)
    split[order] = np.where(
        (from_end == 0) & (size >= 2), "test", np.where((from_end == 1) & (size >= 3), "val", "train")
    )
    return pd.Series(split, index=df.index)


def split_global_time(df: pd.DataFrame, val_quantile: float, test_quantile: float) -> pd.Series:
    """Split at two global time points, so no evaluated interaction precedes a train one."""
    t_val, t_test = np.quantile(df["timestamp"].to_numpy(), [val_quantile, test_quantile])
    ts = df["timestamp"].to_numpy()
    split = np.where(ts >= t_test, "test", np.where(ts >= t_val, "val", "train"))
    return pd.Series(split, index=df.index)


def also_view_csr(items: pd.DataFrame, item_index: pd.Index) -> tuple[Csr, int]:
    """Item-to-item CSR of also_view links between catalogue items.

    `items` has one row per catalogue item in encoded order (row 0 unknown). Links to ids
    outside the catalogue and self-links are dropped; repeated links count once, in list
    order. Returns the CSR and the number of links dropped as unknown.
    """
    pairs = items[["item", "also_view"]].explode("also_view").dropna(subset=["also_view"])
    dst = item_index.get_indexer(pairs["also_view"].astype(str)) + 1  # -1 (unknown) becomes 0
    src = pairs["item"].to_numpy(dtype=np.int64)
    unknown = int((dst == 0).sum())
    links = pd.DataFrame({"src": src, "dst": dst})
    links = links[(links.dst > 0) & (links.dst != links.src)].drop_duplicates()
    links = links.sort_values("src", kind="stable")
    return Csr.from_pairs(links.src.to_numpy(), links.dst.to_numpy().astype(np.int32), len(items)), unknown


def platform_of(categories: list[str]) -> str:
    """The second level of an item's category path, "" when it has none.

    In Video Games that level is the platform, in every format the readers know: 2018
    `category` ["Video Games", "PlayStation 3", "Games"], 2023 `categories` ["Video Games",
    "PC", ...], and 2014's first path of `categories` (the readers flatten the paths in
    order, so the first path's second entry stays second). Other categories name a
    sub-category there ("Gift Card Accessories"); a path of one level has none.
    """
    return str(categories[1]).strip() if len(categories) > 1 else ""


def _ranked(ids: pd.Series) -> tuple[np.ndarray, pd.Index]:
    """Each id's place among the sorted distinct ids, and those ids.

    The interaction steps (dedupe, k-core, split) then group and sort integers: on 5 million
    reviews grouping the id strings cost 30 s of prepare's 47. Places keep the ids' order, so
    every sort and tie-break is the one the strings would give.
    """
    places, names = pd.factorize(ids, sort=True)
    return places.astype(np.int64), pd.Index(names)


def _encode(places: pd.Series, names: pd.Index) -> tuple[np.ndarray, pd.Index]:
    """Codes 1..n for the sorted distinct ids left (0 stays free for unknown), and those ids."""
    kept = np.unique(places.to_numpy())
    return np.searchsorted(kept, places.to_numpy()) + 1, names[kept]


def prepare(raw: RawData, params: PrepareParams) -> PreparedData:
    """Dedupe, filter, split and encode raw frames into a `PreparedData` set."""
    interactions = raw.interactions
    user_places, user_names = _ranked(interactions["user_id"])
    item_places, item_names = _ranked(interactions["item_id"])
    df, cleaning = _filtered(interactions.assign(user_id=user_places, item_id=item_places), params)
    user_codes, user_index = _encode(df["user_id"], user_names)
    item_codes, item_index = _encode(df["item_id"], item_names)
    interactions = pd.DataFrame(
        {
            "user": user_codes.astype(np.int32),
            "item": item_codes.astype(np.int32),
            "timestamp": df["timestamp"].to_numpy(dtype=np.int64),
            "rating": df["rating"].to_numpy(dtype=np.float32),
            "split": pd.Categorical(df["split"], categories=SPLITS),
        }
    ).sort_values(["user", "timestamp", "item"], kind="stable", ignore_index=True)
    users = pd.DataFrame(
        {"user": np.arange(len(user_index) + 1, dtype=np.int32), "user_id": ["", *user_index]}
    )
    items, has_meta, cleaning["duplicate_metadata_lines"] = _catalogue(raw.items, item_index)
    brands = _encode_brands(items)
    items["platform"] = items["categories"].apply(platform_of)
    docs = [tokenize(f"{t} {d}") for t, d in zip(items["title"], items["description"])]
    docs[0] = []
    tokens = build_vocabulary(docs, params.text.min_count, params.text.max_vocab)
    text = encode_csr(docs, tokens, params.text.max_tokens)
    also_view, cleaning["also_view_unknown_ids"] = also_view_csr(items, item_index)
    real = slice(1, None)  # coverage is over catalogue items, not the unknown row
    cleaning["items_without_metadata"] = int((~has_meta[real]).sum())
    coverage = {
        "price": float((~items.price_missing[real]).mean()),
        "brand": float((items.brand[real] > 0).mean()),
        "description": float((items.description[real].str.strip() != "").mean()),
        "also_view": float((also_view.lengths()[real] > 0).mean()),
    }
    splits = {s: int((interactions.split == s).sum()) for s in SPLITS}
    sizes = {"num_users": len(users), "num_items": len(items), "num_brands": len(brands), "num_tokens": len(tokens)}
    report = {"interactions": len(interactions), "users": len(user_index), "items": len(item_index),
              "splits": splits, "coverage": coverage, "cleaning": cleaning, "raw": raw.report}
    columns = ["item", "item_id", "title", "brand", "brand_name", "platform", "price", "price_missing"]
    return PreparedData(interactions=interactions, users=users, items=items[columns], brands=brands, tokens=tokens,
                    text=text, also_view=also_view, stats={**sizes, "split": params.split, "splits": splits},
                    report=report)


def _filtered(raw: pd.DataFrame, params: PrepareParams) -> tuple[pd.DataFrame, dict[str, int]]:
    """Deduped, k-cored and split interactions of users seen in train, and what each step dropped."""
    raw_count = len(raw)
    df = dedupe_interactions(raw)
    duplicates = raw_count - len(df)
    df = k_core(df, params.min_interactions)
    if df.empty:
        raise GamerecError(
            f"prepare.min_interactions = {params.min_interactions} leaves no interactions of "
            f"{raw_count} in {params.raw_dir}; lower it"
        )
    after_k_core = len(df)
    if params.split == "leave_last_out":
        df = df.assign(split=split_leave_last_out(df))
    else:
        df = df.assign(split=split_global_time(df, params.val_quantile, params.test_quantile))
    train_users = df.loc[df.split == "train", "user_id"].unique()
    df = df[df.user_id.isin(train_users)]  # evaluation needs users the model has seen
    return df, {
        "raw_interactions": raw_count,
        "duplicate_interactions": duplicates,
        "dropped_by_k_core": raw_count - duplicates - after_k_core,
        "dropped_cold_eval_rows": after_k_core - len(df),
    }


def _catalogue(meta: pd.DataFrame, item_index: pd.Index) -> tuple[pd.DataFrame, np.ndarray, int]:
    """One row of metadata per encoded item (row 0 unknown; empty where an item has none).

    Returns the rows, which items had a metadata line, and the number of repeated lines dropped.
    """
    unique = meta.drop_duplicates("item_id", keep="first")
    catalogue = pd.DataFrame({"item_id": ["", *item_index]})
    items = catalogue.merge(unique, on="item_id", how="left", validate="one_to_one")
    has_meta = items["item_id"].isin(unique["item_id"]).to_numpy()
    items["item"] = np.arange(len(items), dtype=np.int32)
    for col in ("title", "brand", "description"):
        items[col] = items[col].fillna("").astype(str)
    for col in ("also_view", "categories"):
        items[col] = items[col].apply(lambda v: v if isinstance(v, list) else [])
    items["price"] = items["price"].astype(np.float64)
    items["price_missing"] = items["price"].isna()
    items.loc[0, "price_missing"] = True
    return items, has_meta, len(meta) - len(unique)


def _encode_brands(items: pd.DataFrame) -> list[str]:
    """Replace `items.brand` by codes (0 = none) and keep the name in `brand_name`; returns the vocabulary."""
    brand_names = items["brand"].str.strip()
    brands = [UNKNOWN, *sorted(set(brand_names[brand_names != ""]))]
    brand_codes = pd.Index(brands).get_indexer(brand_names)
    items["brand"] = np.where(brand_names == "", 0, brand_codes).astype(np.int32)
    items["brand_name"] = brand_names
    return brands


def write_prepared(prepared: PreparedData, out_dir: Path) -> None:
    """Write a `PreparedData` set into the (new) folder `out_dir`."""
    out_dir.mkdir(parents=True)
    for name, frame in ((INTERACTIONS, prepared.interactions), (USERS, prepared.users), (ITEMS, prepared.items)):
        frame.to_parquet(out_dir / name, index=False)
    for name, (indptr, indices) in ((TEXT, prepared.text), (ALSO_VIEW, prepared.also_view)):
        np.savez(out_dir / name, indptr=indptr, indices=indices)
    for name, obj in ((VOCAB, {"brands": prepared.brands, "tokens": prepared.tokens}), (STATS, prepared.stats)):
        (out_dir / name).write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
