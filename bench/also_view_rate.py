"""How often an item's also_view list holds what the same user buys later: one statistic, any prepared folder.

    python bench/also_view_rate.py [--prepared data/prepared]     # prints one JSON object

For every interaction (u, i) of the train split and every item j in i's also_view list
(j != i, in the catalogue), the candidates also_view would use as hard negatives:

- later_share: the share of candidates that u interacts with after i (later in u's own
  time order, in any split): the false negatives hard negatives bring;
- train_share: the share that u interacts with in train at all (what the sampler drops);
- test_in_lists: the share of test items found among the candidates of their user.

The synthetic generator's `synthetic.also_view_taste` sets how far its lists follow what
users buy; its default is chosen so that later_share matches the real Video Games data.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from gamerec.prepared import Prepared  # noqa: E402


def rates(prepared: Prepared) -> dict[str, float]:
    """The three shares above, for one prepared folder."""
    frame = prepared.interactions.sort_values(["user", "timestamp", "item"], kind="stable")
    user, item = frame.user.to_numpy(np.int64), frame.item.to_numpy(np.int64)
    order = np.arange(len(frame))  # position in the user's time order (users are contiguous)
    n = prepared.num_items
    key = user * n + item
    sort = np.argsort(key)
    keys, position = key[sort], order[sort]
    train = frame.split.to_numpy() == "train"
    owner, cand = prepared.also_view.gather(item[train])
    rows = np.flatnonzero(train)[owner]
    keep = cand != item[rows]
    rows, cand = rows[keep], cand[keep].astype(np.int64)
    where = np.searchsorted(keys, user[rows] * n + cand).clip(max=len(keys) - 1)
    has = keys[where] == user[rows] * n + cand
    later = has & (position[where] > order[rows])
    train_keys = np.sort(key[train])
    in_train = np.isin(user[rows] * n + cand, train_keys, assume_unique=False)
    test = np.flatnonzero(frame.split.to_numpy() == "test")
    listed = np.unique(user[rows] * n + cand)
    test_hit = np.isin(key[test], listed)
    return {"candidates": int(len(cand)), "later_share": float(later.mean()) if len(cand) else 0.0,
            "train_share": float(in_train.mean()) if len(cand) else 0.0,
            "test_in_lists": float(test_hit.mean()) if len(test) else 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    print(json.dumps(rates(Prepared(parser.parse_args().prepared)), indent=2))


if __name__ == "__main__":
    main()
