"""Answering "what should this user play next", "what comes after these games" and "what is like this game".

One `Recommender` is loaded from the export stage's folder (by the CLI per command, by the
service at start and at every reload) and answers with JSON-ready dicts, so the CLI and the
HTTP service give the same answers by construction. Every answer names the model version
that produced it.

A question is a known user (their vector, precomputed in users.npy) or a list of games,
oldest first, that the user tower embeds at request time (`gamerec.tower`), as training and
evaluation embed a history. Filters (platform, brand, price range, games to leave out) and
the games the user already has are one faiss ID selector inside the search (`gamerec.ann`).
Each recommended game carries the user's (or the list's) game nearest to it in the item
tower's space: the "because you played".
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import pandas as pd

from gamerec import ann, tower
from gamerec.csr import Csr
from gamerec.errors import GamerecError
from gamerec.io import read_table

MAX_K = 100  # the most results one question may ask for
MAX_ITEMS = 1000  # the most games in one list (the games given, or the games to leave out)
MAX_BATCH = 1000  # the most questions in one batch
FILES = ("serving.json", "items.parquet", "users.parquet", "users.npy", "index.faiss")  # what `export` writes
ITEM_COLUMNS = ("asin", "title", "brand", "platform", "price", "popularity")
QUERY = {"user": None, "items": None, "k": 10, "platform": None, "brand": None,  # a question's keys and defaults
         "min_price": None, "max_price": None, "exclude": ()}
NEEDS_NO_USER_ID = ("recommendations from a list of games need model.user_id: false (the default); this model's "
                    "user tower also embeds the user id, which a list of games does not have")


class UnknownItem(GamerecError):
    """An ASIN that is not in the served catalogue."""


def check_k(k: int) -> int:
    """`k` if it is a valid result count, else a GamerecError saying what is."""
    if not 1 <= k <= MAX_K:
        raise GamerecError(f"k = {k} is out of range; expected 1 to {MAX_K}")
    return k


@dataclass
class _Plan:
    """A checked question: what to embed or look up, what to leave out, which rows a filter allows."""

    query: dict  # the question as answered, every key of QUERY
    user_row: int | None  # a known user's row of users.npy
    history: np.ndarray | None  # the user's or the list's games (items rows), oldest first; None: popularity
    exclude: np.ndarray  # rows never recommended: the history and the games to leave out
    allowed: np.ndarray | None  # bool per row, None when no filter is set


class Recommender:
    """The exported model: vectors, the faiss index, each user's own games and the user tower."""

    def __init__(self, models_dir: str | Path = "models"):
        folder = Path(models_dir)
        missing = [name for name in FILES if not (folder / name).is_file()]
        if missing:
            raise GamerecError(f"{folder}: {', '.join(missing)} not found; run `dvc repro export` first")
        self.manifest = json.loads((folder / "serving.json").read_text())
        self.items, item_vectors, _ = read_table(folder / "items.parquet")
        lacking = [c for c in ITEM_COLUMNS if c not in self.items.columns] + (
            [] if "user_tower" in self.manifest else ["serving.json's user_tower"])
        if lacking:
            raise GamerecError(f"{folder}: made by an older export (no {', '.join(lacking)}); run `dvc repro export`")
        users, _, lists = read_table(folder / "users.parquet")
        self.known = lists["known"]
        self.user_vectors = np.load(folder / "users.npy", mmap_mode="r")  # pages load as users are asked for
        self.index = faiss.read_index(str(folder / "index.faiss"))
        if self.index.ntotal != len(self.items) or self.index.d != item_vectors.shape[1]:
            raise GamerecError(f"{folder}/index.faiss does not match items.parquet; run `dvc repro export`")
        self.item_vectors = item_vectors
        self.tower = tower.load(folder, self.manifest["user_tower"])
        # plain dicts per row, built once: a request then costs the search, not pandas lookups
        self._fields = self.items[["asin", "title", "brand", "platform", "price"]].to_dict("records")
        for fields in self._fields:
            fields["price"] = None if math.isnan(fields["price"]) else fields["price"]
        self.row_of_user = dict(zip(users.user_id.tolist(), range(len(users))))
        self.row_of_item = dict(zip(self.items.asin.tolist(), range(len(self.items))))
        self.by_popularity = np.argsort(-self.items.popularity.to_numpy(), kind="stable")
        self.values = {name: _Values.of(self.items[name]) for name in ("platform", "brand")}  # the text filters
        self.prices = self.items.price.to_numpy(dtype=np.float64)
        self.ef_search = int(self.manifest.get("ef_search", 128))
        self.model_version = self.manifest["model_version"]

    def health(self) -> dict:
        """What is loaded: model version, index kind, catalogue and user counts, the user tower, the platforms."""
        return {
            "status": "ok",
            "model_version": self.model_version,
            "sampler": self.manifest.get("sampler"),
            "index": ann.kind_of(self.index),
            "items": len(self.items),
            "users": len(self.row_of_user),
            "user_tower": self.manifest["user_tower"],
            "platforms": sorted(self.values["platform"].by_name.values()),
        }

    def warm(self) -> "Recommender":
        """Load what a first question would otherwise load (a PyTorch user tower): the service calls it before serving."""
        if self.tower is not None:
            self.tower.load()
        return self

    def recommend(self, user: str | None = None, k: int = 10, **question) -> dict:
        """The k best games for a known `user`, or for the games `items=[ASIN, ...]` (oldest first).

        Keyword filters: `platform`, `brand`, `min_price`, `max_price` (games without a price
        fail a price filter), `exclude` (ASINs). A user not in the data gets the k most
        reviewed games that pass the filters, labelled so.
        """
        return self.recommend_many([{"user": user, "k": k, **question}])[0]

    def recommend_many(self, questions: Sequence[Mapping], name: str | None = "queries") -> list[dict]:
        """One answer per question (each a mapping of QUERY's keys); lists of games are embedded in one call.

        A bad question stops the batch with an error naming its position (`queries.3: ...`;
        `name` None: no position, for batches whose questions differ only in the user).
        """
        plans = []
        for position, question in enumerate(questions):
            try:
                plans.append(self._plan(question))
            except GamerecError as exc:
                message = f"{name}.{position}: {exc}" if name and len(questions) > 1 else str(exc)
                raise type(exc)(message) from None
        lists = [plan.history for plan in plans if plan.user_row is None and plan.history is not None]
        embedded = iter(self.tower.embed(_csr(lists)) if lists else ())
        return [self._recommend(plan, None if plan.history is None else
                                self.user_vectors[plan.user_row] if plan.user_row is not None else next(embedded))
                for plan in plans]

    def similar(self, asin: str, k: int = 10) -> dict:
        """The k games nearest to `asin` in the item tower's space (the game itself left out)."""
        check_k(k)
        (row,) = self._rows([asin], "item")
        scores, rows = ann.search(self.index, self.item_vectors[row : row + 1], k, _csr([np.array([row])]),
                                  self.ef_search)
        return {"model_version": self.model_version, "query": {"item": asin, "title": self._fields[row]["title"], "k": k},
                "source": "model", "items": self._games(rows[0], scores[0], [None] * k)}

    def _plan(self, question: Mapping) -> _Plan:
        unknown = sorted(set(question) - set(QUERY))
        if unknown:
            raise GamerecError(f"unknown question keys {', '.join(unknown)}; expected {', '.join(QUERY)}")
        query = {**QUERY, **question}
        query["exclude"] = list(query["exclude"] or ())
        if (query["user"] is None) == (query["items"] is None):
            raise GamerecError("give either a user or a list of items, not both or neither")
        check_k(query["k"])
        allowed, exclude = self._allowed(query), self._rows(query["exclude"], "exclude")
        if query["items"] is not None:
            query["items"] = list(query["items"])
            history = self._history(query["items"])
            return _Plan(query, None, history, np.union1d(history, exclude), allowed)
        row = self.row_of_user.get(query["user"])
        if row is None:
            return _Plan(query, None, None, exclude, allowed)
        known = self.known.indices[self.known.indptr[row] : self.known.indptr[row + 1]]
        return _Plan(query, row, known, np.union1d(known, exclude), allowed)

    def _rows(self, asins: Sequence[str], name: str) -> np.ndarray:
        """items.parquet rows of `asins`; an unknown one is UnknownItem (404 in the service)."""
        if len(asins) > MAX_ITEMS:
            raise GamerecError(f"{name}: {len(asins)} games given; at most {MAX_ITEMS}")
        rows = np.fromiter((self.row_of_item.get(asin, -1) for asin in asins), np.int64, len(asins))
        unknown = [asin for asin, row in zip(asins, rows) if row < 0]
        if unknown:
            more = f" and {len(unknown) - 3} more" if len(unknown) > 3 else ""
            verb = "is" if len(unknown) == 1 else "are"
            raise UnknownItem(f"{name} {', '.join(map(repr, unknown[:3]))}{more} {verb} not in the catalogue "
                              f"({len(self.items)} games in items.parquet)")
        return rows

    def _history(self, items: Sequence[str]) -> np.ndarray:
        """The rows of a list of games the tower embeds: at least one, each once."""
        if not items:
            raise GamerecError(f"items: no games given; expected 1 to {MAX_ITEMS} ASINs, oldest first")
        rows = self._rows(items, "items")
        values, counts = np.unique(rows, return_counts=True)
        if (counts > 1).any():
            repeated = self._fields[values[counts > 1][0]]["asin"]
            raise GamerecError(f"items: {repeated!r} is given more than once; list each game once (a history "
                               "holds a game once, at its first review)")
        if self.tower is None:
            raise GamerecError(NEEDS_NO_USER_ID)
        return rows

    def _allowed(self, query: dict) -> np.ndarray | None:
        """The rows the filters allow (None without a filter): platform, brand, price range."""
        conditions = [values.rows(name, query[name]) for name, values in self.values.items() if query[name] is not None]
        low, high = query["min_price"], query["max_price"]
        if low is not None or high is not None:
            low, high = (0.0 if low is None else low), (math.inf if high is None else high)
            if low < 0 or high < 0 or low > high:
                raise GamerecError(f"min_price = {query['min_price']}, max_price = {query['max_price']}: expected "
                                   "0 <= min_price <= max_price")
            conditions.append((self.prices >= low) & (self.prices <= high))  # a missing price (NaN) fails both
        return np.logical_and.reduce(conditions) if conditions else None

    def _recommend(self, plan: _Plan, vector: np.ndarray | None) -> dict:
        query, k = plan.query, plan.query["k"]
        answer = {"model_version": self.model_version, "query": query}
        if vector is None:
            order = self.by_popularity
            keep = ~np.isin(order, plan.exclude) & (True if plan.allowed is None else plan.allowed[order])
            rows = order[keep][:k]
            games = self._games(rows, self.items.popularity.to_numpy()[rows].astype(float), [None] * len(rows))
            note = (f"user {query['user']!r} is not in the data: the {len(rows)} most reviewed games instead "
                    "(score = reviews)")
            return {**answer, "source": "popularity", "owned": 0, "note": note, "items": games}
        scores, rows = ann.search(self.index, vector[None], k, _csr([plan.exclude]), self.ef_search, plan.allowed)
        games = self._games(rows[0], scores[0], self._because(rows[0][rows[0] >= 0], plan.history))
        return {**answer, "source": "model", "owned": len(plan.history), "note": None, "items": games}

    def _because(self, rows: np.ndarray, history: np.ndarray) -> list[dict]:
        """For each row, the game of `history` nearest to it in the item tower's space, and their similarity."""
        similarity = self.item_vectors[rows] @ self.item_vectors[history].T
        nearest = similarity.argmax(1)
        return [{"asin": self._fields[history[j]]["asin"], "title": self._fields[history[j]]["title"],
                 "similarity": round(float(similarity[i, j]), 6)} for i, j in enumerate(nearest.tolist())]

    def _games(self, rows: np.ndarray, scores: np.ndarray, because: list[dict | None]) -> list[dict]:
        keep = rows >= 0  # fewer than k left (a user who has nearly everything, a narrow filter)
        return [
            {"rank": rank, **self._fields[row], "score": round(score, 6), "because": reason}
            for rank, (row, score, reason) in enumerate(zip(rows[keep].tolist(), scores[keep].tolist(), because), 1)
        ]


@dataclass(frozen=True)
class _Values:
    """A text column of the catalogue (platform, brand) as one code per row, for filters."""

    codes: np.ndarray  # per row
    by_name: dict[str, str]  # case-folded name -> the name as the catalogue spells it
    code_of: dict[str, int]  # the catalogue's name -> its code; "" (none) is never a filter value

    @classmethod
    def of(cls, column: pd.Series) -> "_Values":
        codes, names = pd.factorize(column.fillna(""))
        return cls(codes, {name.casefold(): name for name in names if name},
                   {name: code for code, name in enumerate(names) if name})

    def rows(self, name: str, value: str) -> np.ndarray:
        """Rows whose `name` is `value`, compared without case; another value is a GamerecError naming the known ones."""
        spelled = self.by_name.get(value.casefold())
        if spelled is None:
            close = difflib.get_close_matches(value, list(self.code_of), n=3, cutoff=0.5)
            hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
            known = f" (known: {', '.join(sorted(self.code_of))})" if len(self.code_of) <= 20 else ""
            raise GamerecError(f"{name} {value!r} is not in the catalogue{hint}{known}")
        return self.codes == self.code_of[spelled]


def _csr(rows: Sequence[np.ndarray]) -> Csr:
    """Lists of items rows as one CSR (row q = rows[q])."""
    indptr = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
    return Csr(indptr, np.concatenate(rows).astype(np.int64) if len(rows) else np.zeros(0, np.int64))
