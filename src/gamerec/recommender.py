"""Answering "what should this user play next" and "what is like this game" from the export stage's files.

One `Recommender` is loaded once (by the CLI per command, by the service at start) and
answers with JSON-ready dicts, so the CLI and the HTTP service give the same answers by
construction. Every answer names the model version that produced it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import faiss
import numpy as np

from gamerec import ann
from gamerec.errors import GamerecError
from gamerec.io import read_table

MAX_K = 100  # the most results one query may ask for
FILES = ("serving.json", "items.parquet", "users.parquet", "users.npy", "index.faiss")  # what `export` writes


class UnknownItem(GamerecError):
    """An ASIN that is not in the served catalogue."""


def check_k(k: int) -> int:
    """`k` if it is a valid result count, else a GamerecError saying what is."""
    if not 1 <= k <= MAX_K:
        raise GamerecError(f"k = {k} is out of range; expected 1 to {MAX_K}")
    return k


class Recommender:
    """The exported model: item and user vectors, the faiss index, and each user's own games."""

    def __init__(self, models_dir: str | Path = "models"):
        folder = Path(models_dir)
        missing = [name for name in FILES if not (folder / name).is_file()]
        if missing:
            raise GamerecError(f"{folder}: {', '.join(missing)} not found; run `dvc repro export` first")
        self.manifest = json.loads((folder / "serving.json").read_text())
        self.items, item_vectors, _ = read_table(folder / "items.parquet")
        users, _, lists = read_table(folder / "users.parquet")
        self.known = lists["known"]
        self.user_vectors = np.load(folder / "users.npy", mmap_mode="r")  # pages load as users are asked for
        self.index = faiss.read_index(str(folder / "index.faiss"))
        if self.index.ntotal != len(self.items) or self.index.d != item_vectors.shape[1]:
            raise GamerecError(f"{folder}/index.faiss does not match items.parquet; run `dvc repro export`")
        self.item_vectors = item_vectors
        # plain dicts per row, built once: a request then costs the search, not pandas lookups
        self._fields = [
            {"asin": asin, "title": title, "brand": brand, "price": None if math.isnan(price) else price}
            for asin, title, brand, price in zip(self.items.asin.tolist(), self.items.title.tolist(),
                                                 self.items.brand.tolist(), self.items.price.tolist())
        ]
        self.row_of_user = dict(zip(users.user_id.tolist(), range(len(users))))
        self.row_of_item = dict(zip(self.items.asin.tolist(), range(len(self.items))))
        self.by_popularity = np.argsort(-self.items.popularity.to_numpy(), kind="stable")
        self.ef_search = int(self.manifest.get("ef_search", 128))
        self.model_version = self.manifest["model_version"]

    def health(self) -> dict:
        """What is loaded: model version, index kind, catalogue and user counts."""
        return {
            "status": "ok",
            "model_version": self.model_version,
            "sampler": self.manifest.get("sampler"),
            "index": ann.kind_of(self.index),
            "items": len(self.items),
            "users": len(self.row_of_user),
        }

    def recommend(self, user_id: str, k: int = 10) -> dict:
        """The k best games the user does not have; for a user not in the data, the k most reviewed games."""
        check_k(k)
        row = self.row_of_user.get(user_id)
        if row is None:
            rows = self.by_popularity[:k]
            scores = self.items.popularity.to_numpy()[rows].astype(float)
            return self._answer({"user": user_id, "k": k}, "popularity", rows, scores,
                                note=f"user {user_id!r} is not in the data: the {len(rows)} most reviewed games instead "
                                     "(score = reviews)")
        start, stop = self.known[0][row], self.known[0][row + 1]
        exclude = (np.array([0, stop - start]), self.known[1][start:stop])
        scores, rows = ann.search(self.index, self.user_vectors[row : row + 1], k, exclude, self.ef_search)
        return self._answer({"user": user_id, "k": k}, "model", rows[0], scores[0], owned=int(stop - start))

    def similar(self, asin: str, k: int = 10) -> dict:
        """The k games nearest to `asin` in the item tower's space (the game itself left out)."""
        check_k(k)
        row = self.row_of_item.get(asin)
        if row is None:
            raise UnknownItem(f"item {asin!r} is not in the catalogue ({len(self.items)} games in items.parquet)")
        exclude = (np.array([0, 1]), np.array([row]))
        scores, rows = ann.search(self.index, self.item_vectors[row : row + 1], k, exclude, self.ef_search)
        return self._answer({"item": asin, "title": self._fields[row]["title"], "k": k}, "model", rows[0], scores[0])

    def _answer(self, query: dict, source: str, rows: np.ndarray, scores: np.ndarray, **extra) -> dict:
        keep = rows >= 0  # fewer than k left (a user who has nearly everything)
        items = [
            {"rank": rank, **self._fields[row], "score": round(score, 6)}
            for rank, (row, score) in enumerate(zip(rows[keep].tolist(), scores[keep].tolist()), 1)
        ]
        return {"model_version": self.model_version, "query": query, "source": source, **extra, "items": items}
