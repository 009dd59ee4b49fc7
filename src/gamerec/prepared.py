"""The read side of a prepared folder: file names, one error policy, and what later stages read.

`gamerec.data.prepare.write_prepared` writes the folder under the file names named there; every
reader goes through `Prepared`, which reads each file once, on first use. A missing,
unreadable or inconsistent folder (made by another version, or half-deleted) is one line
that names it and says to run `dvc repro prepare`.

Derived views live here too, so that a stage never re-derives them: holdouts (who is ranked
for what, with what hidden), histories (each user's items in time order), item features
(the price standardisation included), and the samplers' train positives.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from gamerec.csr import Csr
from gamerec.data.files import ALSO_VIEW, FILES, INTERACTIONS, ITEMS, STATS, TEXT, USERS
from gamerec.errors import GamerecError

if TYPE_CHECKING:  # imported where a Holdout is built: torch takes 2 s to import, and the stages
    import torch  # that only read the prepared data (sample_negatives, choose_sampler) never need it

SIZES = ("num_users", "num_items", "num_brands", "num_tokens")  # encoder sizes, row 0 included


@dataclass
class Holdout:
    """Users to rank the catalogue for, what to hide from them, and what they really chose."""

    users: torch.Tensor  # [U] user ids
    exclude: Csr  # row r = items hidden from users[r]
    targets: Csr  # row r = held-out items of users[r]
    owner: torch.Tensor  # row of each held-out item, in the targets' order
    items: torch.Tensor  # the held-out items, in the same order

    def sample(self, n: int, seed: int) -> "Holdout":
        """n of these users drawn with `seed`, in id order; all of them when n is 0 or not fewer.

        Ranking a million users over the catalogue takes minutes; early stopping and model
        choices need a recall, not every user (50k users give it to about +-0.003).
        """
        if n == 0 or n >= len(self.users):
            return self
        import torch

        keep = torch.randperm(len(self.users), generator=torch.Generator().manual_seed(seed))[:n].sort().values
        targets = self.targets.select(keep)
        owner, items = targets.gather(torch.arange(n))
        return Holdout(self.users[keep], self.exclude.select(keep), targets, owner, items)


@dataclass
class ItemFeatures:
    """Per-item feature arrays indexed by encoded item id (row 0 = unknown, empty): the item tower's inputs."""

    brand: np.ndarray  # int, 0 = no brand
    log_price_z: np.ndarray  # float, standardised log(1 + price); 0 where missing
    price_missing: np.ndarray  # bool
    text: Csr  # description token ids


@dataclass
class TrainPositives:
    """The train split's (user, item) pairs, and what samplers need beside them."""

    users: np.ndarray  # int64, one row per train interaction
    items: np.ndarray  # int64, 1..num_items-1
    num_items: int  # encoder size incl. row 0 (unknown)
    also_view: Csr  # row = item index, num_items rows


class Prepared:
    """A prepared folder, checked when opened; each file is read once, when first asked for."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise self.error("not found")
        missing = [name for name in FILES if not (self.folder / name).is_file()]
        if missing:
            raise self.error(f"missing {', '.join(missing)}")
        self.stats = self._read(STATS, lambda path: json.loads(path.read_text(encoding="utf-8")))
        absent = [key for key in SIZES if not isinstance(self.stats.get(key), int)]
        if absent:
            raise self.error(f"{STATS} lacks {', '.join(absent)}")
        self.sizes: dict[str, int] = {key: self.stats[key] for key in SIZES}
        self.num_users, self.num_items = self.sizes["num_users"], self.sizes["num_items"]

    def error(self, what: str) -> GamerecError:
        """The one error of a bad prepared folder: what is wrong, and how to rebuild it."""
        return GamerecError(f"{self.folder}: {what}; run `dvc repro prepare`")

    def _read(self, name: str, reader) -> Any:
        try:
            return reader(self.folder / name)
        except (ValueError, KeyError, OSError) as exc:
            raise self.error(f"{name} is unreadable ({type(exc).__name__}: {exc})") from None

    def _frame(self, name: str, columns: list[str], rows: int | None) -> pd.DataFrame:
        frame = self._read(name, pd.read_parquet)
        absent = [c for c in columns if c not in frame.columns]
        if absent:
            raise self.error(f"{name} lacks columns {', '.join(absent)}")
        if rows is not None and len(frame) != rows:
            raise self.error(f"{name} has {len(frame)} rows but {STATS} says {rows}")
        return frame

    def _csr(self, name: str) -> Csr:
        def load(path: Path) -> Csr:
            with np.load(path) as npz:
                return Csr(npz["indptr"].astype(np.int64), npz["indices"])

        matrix = self._read(name, load)
        if matrix.rows != self.num_items:
            raise self.error(f"{name} has {matrix.rows} rows but {STATS} says num_items = {self.num_items}")
        return matrix

    @cached_property
    def interactions(self) -> pd.DataFrame:
        """One row per (user, item) interaction, sorted by user and time."""
        frame = self._frame(INTERACTIONS, ["user", "item", "timestamp", "split"], None)
        if len(frame) and (frame.item.min() < 1 or frame.item.max() >= self.num_items):
            raise self.error(f"{INTERACTIONS} has item ids outside 1..{self.num_items - 1}")
        return frame

    @cached_property
    def items(self) -> pd.DataFrame:
        """One row per item id (row 0: unknown), in id order."""
        columns = ["item", "item_id", "title", "brand", "brand_name", "platform", "price", "price_missing"]
        return self._frame(ITEMS, columns, self.num_items).sort_values("item", ignore_index=True)

    @cached_property
    def users(self) -> pd.DataFrame:
        """One row per user id (row 0: unknown), in id order."""
        return self._frame(USERS, ["user", "user_id"], self.num_users).sort_values("user", ignore_index=True)

    @cached_property
    def also_view(self) -> Csr:
        """Item -> its also-viewed catalogue items (NumPy)."""
        return self._csr(ALSO_VIEW)

    @cached_property
    def text(self) -> Csr:
        """Item -> its description token ids (NumPy)."""
        return self._csr(TEXT)

    def split(self, *names: str) -> pd.DataFrame:
        """The interactions of the named splits."""
        return self.interactions[self.interactions.split.isin(names)]

    def history(self, splits: tuple[str, ...] = ("train",)) -> Csr:
        """Each user's items of `splits` in time order (NumPy CSR by user id), for the user tower."""
        known = self.split(*splits).sort_values(["user", "timestamp", "item"], kind="stable")
        return Csr.from_pairs(known.user.to_numpy(dtype=np.int64), known.item.to_numpy(dtype=np.int64), self.num_users)

    def holdout(self, split: str, hide: tuple[str, ...] = ("train",)) -> Holdout:
        """Holdout of the users with `split` interactions; their `hide` splits' items are excluded."""
        import torch

        held = self.split(split)
        users = np.unique(held.user.to_numpy())
        row_of = pd.Series(np.arange(len(users)), index=users)

        def csr_of(df: pd.DataFrame) -> Csr:
            df = df[df.user.isin(users)]
            rows = torch.tensor(row_of[df.user.to_numpy()].to_numpy(), dtype=torch.long)
            return Csr.from_pairs(rows, torch.tensor(df.item.to_numpy(), dtype=torch.long), len(users))

        targets = csr_of(held)
        owner, items = targets.gather(torch.arange(len(users)))
        return Holdout(torch.as_tensor(users, dtype=torch.long), csr_of(self.split(*hide)), targets, owner, items)

    def item_features(self) -> ItemFeatures:
        """The item tower's inputs: brand, standardised log(1 + price) with its missing flag, description tokens."""
        items = self.items
        price = items.price.to_numpy(dtype=np.float64)
        missing = items.price_missing.to_numpy(dtype=bool)
        known = np.log1p(price[~missing])
        mean = float(known.mean()) if len(known) else 0.0
        std = float(known.std()) if len(known) > 1 else 1.0
        z = (np.log1p(np.where(missing, 0.0, price)) - mean) / max(std, 1e-6)
        return ItemFeatures(
            brand=items.brand.to_numpy(dtype=np.int64),
            log_price_z=np.where(missing, 0.0, z).astype(np.float32),
            price_missing=missing,
            text=Csr(self.text.indptr, self.text.indices.astype(np.int64)),
        )

    def train_positives(self) -> TrainPositives:
        """The train split's pairs and the also_view links: what every sampler starts from."""
        train = self.split("train")
        if not len(train):
            raise GamerecError(f"{self.folder}: no train interactions to sample from")
        return TrainPositives(train.user.to_numpy(dtype=np.int64), train.item.to_numpy(dtype=np.int64),
                              self.num_items, Csr(self.also_view.indptr, self.also_view.indices.astype(np.int32)))
