"""Is one scorer better than another beyond noise? A paired bootstrap over the test users of two runs.

`evaluate` writes each held-out item's rank under the model and each baseline
(`paths.ranks`). `gamerec compare A B` reads the ranks of two sides, each `REV[:SCORER]`:
REV is `workspace` (the files here), a git revision or a DVC experiment name (read with
`dvc.api`, from the local cache: no remote needed); SCORER is a column of the ranks file
(`model` by default, or `als`, `popularity`). Both sides must rank the same test items, so
they must come from the same prepared data and `evaluate` protocol. Users are resampled
together on both sides, so the interval of the difference is narrower than the two
intervals side by side suggest.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from gamerec import metrics
from gamerec.errors import GamerecError

WORKSPACE = "workspace"


def split_side(side: str) -> tuple[str, str]:
    """`REV[:SCORER]` as (rev, scorer)."""
    rev, _, scorer = side.partition(":")
    return rev or WORKSPACE, scorer or "model"


def read_ranks(rev: str, path: str) -> pd.DataFrame:
    """The ranks file of revision `rev` (`workspace`: as it is here)."""
    try:
        if rev == WORKSPACE:
            return pd.read_parquet(path)
        import dvc.api

        with dvc.api.open(path, rev=rev, mode="rb") as handle:
            return pd.read_parquet(handle)
    except Exception as exc:  # dvc raises its own kinds for a bad rev, a missing file or cache
        raise GamerecError(f"{path} at {rev}: cannot be read ({type(exc).__name__}: {exc}); "
                           "run `dvc repro evaluate` (or the experiment) first") from None


def user_values(frame: pd.DataFrame, scorer: str, k: int) -> pd.DataFrame:
    """Each test user's recall@k and ndcg@k under `scorer`, indexed by user."""
    if scorer not in frame.columns or scorer in ("user", "item"):
        known = [c for c in frame.columns if c not in ("user", "item")]
        raise GamerecError(f"scorer {scorer!r} is not in the ranks; expected one of {', '.join(known)}")
    users, owner = np.unique(frame.user.to_numpy(), return_inverse=True)
    scores = metrics.user_scores(torch.from_numpy(frame[scorer].to_numpy(np.int64)), torch.from_numpy(owner),
                                 len(users), k)
    return pd.DataFrame(scores, index=users)


def compare(a: str, b: str, path: str, k: int = 10, samples: int = 1000, seed: int = 0) -> list[dict]:
    """Per metric: A's and B's mean with their intervals, and B - A with its paired interval."""
    (rev_a, scorer_a), (rev_b, scorer_b) = split_side(a), split_side(b)
    ranks_a, ranks_b = read_ranks(rev_a, path), read_ranks(rev_b, path)
    targets = lambda f: set(zip(f.user.tolist(), f.item.tolist()))
    if len(ranks_a) != len(ranks_b) or targets(ranks_a) != targets(ranks_b):
        raise GamerecError(f"{a} and {b} did not rank the same test items; compare runs of the same prepared data")
    left, right = user_values(ranks_a, scorer_a, k), user_values(ranks_b, scorer_b, k)
    right = right.loc[left.index]
    rows = []
    for metric in left.columns:
        x, y = left[metric].to_numpy(), right[metric].to_numpy()
        diff, low, high = metrics.paired_difference(x, y, samples, seed)
        rows.append({"metric": metric, "a": float(x.mean()), "a_interval": metrics.interval(x, samples, seed),
                     "b": float(y.mean()), "b_interval": metrics.interval(y, samples, seed),
                     "difference": diff, "interval": (low, high), "beyond_noise": not low <= 0.0 <= high})
    return rows


def format_rows(a: str, b: str, rows: list[dict]) -> str:
    """The comparison as a small table of lines."""
    span = lambda pair: f"[{pair[0]:.4f}, {pair[1]:.4f}]"
    lines = [f"B - A, 95% paired bootstrap intervals over test users: A = {a}, B = {b}"]
    for r in rows:
        verdict = "beyond noise" if r["beyond_noise"] else "within noise"
        lines.append(f"{r['metric']:<10} A {r['a']:.4f} {span(r['a_interval'])}  B {r['b']:.4f} {span(r['b_interval'])}"
                     f"  B - A {r['difference']:+.4f} {span(r['interval'])}  {verdict}")
    return "\n".join(lines)
