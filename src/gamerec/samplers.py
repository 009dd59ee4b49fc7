"""Negative sampling: one function per strategy, one shared output contract.

Every sampler turns the train-split positives of the prepared data set into a `Negatives`:

  examples  one row per training example, grouped by positive: the positive's row(s) first,
            then its negatives. Columns user int32, item int32, label float32 (1 positive,
            0 negative), weight float32, positive int32 (the positive item the row belongs to:
            its own item for a positive; the train stage cuts a causal user history there);
            in_batch adds log_q float32.
  manifest  what the train stage needs to know: sampler, loss ("bce" | "softmax"), columns,
            seed (and mixed_negatives for in_batch).
  report    plain numbers for metrics/sampling/<name>.json.

"Seen" means the items a user interacted with in the TRAIN split only; val/test items are
not excluded, as the sampler must not look at evaluation data. Membership is checked on
sorted int64 keys `user * num_items + item` with np.searchsorted, so every step is
vectorised over rows and there is no Python loop over users or positives.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gamerec.config import SAMPLERS, AlsoViewParams, InBatchParams, OutBatchParams, SamplingParams
from gamerec.errors import GamerecError

MAX_ROUNDS = 32  # redraw rounds for seen candidates; what is still seen afterwards is dropped
# Bytes one gathered also_view candidate costs while it is filtered (int64 owner, item, seen
# key and random key, plus masks and sort buffers): sizes chunks under `sampling.memory_mb`.
BYTES_PER_CANDIDATE = 64
COLUMNS = ["user", "item", "label", "weight", "positive"]
EXAMPLES_FILE = "examples.parquet"
MANIFEST_FILE = "manifest.json"


@dataclass
class TrainPositives:
    """Train-split interactions plus what the samplers need from the prepared folder."""

    users: np.ndarray  # int64, one row per train interaction
    items: np.ndarray  # int64, 1..num_items-1
    num_items: int  # encoder size incl. row 0 (unknown)
    also_view_indptr: np.ndarray  # CSR row = item index, len num_items + 1
    also_view_indices: np.ndarray


@dataclass
class Negatives:
    """A sampler's output: the examples frame, its manifest and its report."""

    examples: pd.DataFrame
    manifest: dict[str, Any]
    report: dict[str, Any]


# ---------------------------------------------------------------------------------------------
# loading


def load_train_positives(prepared_dir: Path) -> TrainPositives:
    """Train interactions, item encoder size and the also_view CSR of a prepared folder."""
    prepared_dir = Path(prepared_dir)
    needed = ("interactions.parquet", "also_view.npz", "stats.json")
    missing = [name for name in needed if not (prepared_dir / name).is_file()]
    if missing:
        what = "not found" if not prepared_dir.is_dir() else f"missing {', '.join(missing)}"
        raise GamerecError(f"{prepared_dir}: {what}; run `dvc repro prepare` first")
    try:
        stats = json.loads((prepared_dir / "stats.json").read_text(encoding="utf-8"))
        num_items = int(stats["num_items"])
        df = pd.read_parquet(prepared_dir / "interactions.parquet", columns=["user", "item", "split"])
        with np.load(prepared_dir / "also_view.npz") as npz:
            indptr = npz["indptr"].astype(np.int64)
            indices = npz["indices"].astype(np.int32)
    except (ValueError, KeyError, OSError) as exc:
        raise GamerecError(
            f"{prepared_dir}: unreadable prepared data ({type(exc).__name__}: {exc}); "
            "run `dvc repro prepare` again"
        ) from None
    train = df["split"].to_numpy() == "train"
    users = df["user"].to_numpy(dtype=np.int64)[train]
    items = df["item"].to_numpy(dtype=np.int64)[train]
    if len(indptr) != num_items + 1:
        raise GamerecError(
            f"{prepared_dir}: also_view.npz has {len(indptr) - 1} rows but stats.json says "
            f"num_items = {num_items}; run `dvc repro prepare` again"
        )
    if not len(items):
        raise GamerecError(f"{prepared_dir}: no train interactions to sample from")
    if items.min() < 1 or items.max() >= num_items:
        raise GamerecError(f"{prepared_dir}: item ids outside 1..{num_items - 1}; run `dvc repro prepare` again")
    return TrainPositives(users, items, num_items, indptr, indices)


# ---------------------------------------------------------------------------------------------
# shared pieces


@dataclass
class InteractionIndex:
    """What every sampler derives from the positives once (see `interaction_index`)."""

    seen: np.ndarray  # sorted unique int64 keys user * num_items + item
    counts: np.ndarray  # int64 train count per item index (popularity)
    catalogue: np.ndarray  # int32 items with >= 1 train interaction, ascending


def interaction_index(positives: TrainPositives, with_seen: bool = True) -> InteractionIndex:
    """Seen (user, item) keys, item counts and the catalogue of the given interactions.

    Built from the train positives for sampling; `evaluate` builds one over every split to
    draw items a user never interacted with.
    """
    users = np.asarray(positives.users, dtype=np.int64)
    items = np.asarray(positives.items, dtype=np.int64)
    seen = np.zeros(0, dtype=np.int64)
    if with_seen:
        seen = np.sort(users * positives.num_items + items)  # sort + diff: np.unique hashes, slower
        seen = seen[np.concatenate([[True], seen[1:] != seen[:-1]])]
    counts = np.bincount(items, minlength=positives.num_items).astype(np.int64)
    catalogue = np.flatnonzero(counts).astype(np.int32)
    return InteractionIndex(seen, counts, catalogue[catalogue > 0])


def is_seen(seen: np.ndarray, users: np.ndarray, items: np.ndarray, num_items: int) -> np.ndarray:
    """Boolean mask: is each (user, item) pair among the sorted `seen` keys?"""
    if not len(seen) or not len(users):
        return np.zeros(len(users), dtype=bool)
    keys = users.astype(np.int64) * num_items + items
    pos = np.searchsorted(seen, keys)
    np.minimum(pos, len(seen) - 1, out=pos)
    return seen[pos] == keys


def draw_unseen(
    users: np.ndarray,
    index: InteractionIndex,
    num_items: int,
    rng: np.random.Generator,
    cdf: np.ndarray | None = None,
    max_rounds: int = MAX_ROUNDS,
) -> tuple[np.ndarray, np.ndarray, int]:
    """One catalogue item per entry of `users`, never one that user interacted with in train.

    Draws all at once, then redraws only the seen ones, for at most `max_rounds` rounds.
    `cdf` (cumulative weights over `index.catalogue`) makes draws proportional to the weights;
    None draws uniformly. Returns (items int32, 0 where still seen after the cap; ok mask;
    number of draws rejected because the user had interacted with the item).
    """
    n = len(users)
    items = np.zeros(n, dtype=np.int32)
    todo = np.arange(n, dtype=np.int64)
    cat = index.catalogue
    rejected = 0
    if not len(cat):
        return items, np.zeros(n, dtype=bool), 0
    for _ in range(max_rounds):
        if not len(todo):
            break
        if cdf is None:
            pick = rng.integers(0, len(cat), size=len(todo))
        else:
            pick = np.searchsorted(cdf, rng.random(len(todo)) * cdf[-1], side="right")
            np.minimum(pick, len(cat) - 1, out=pick)
        cand = cat[pick]
        hit = is_seen(index.seen, users[todo], cand, num_items)
        rejected += int(hit.sum())
        items[todo[~hit]] = cand[~hit]
        todo = todo[hit]
    ok = np.ones(n, dtype=bool)
    ok[todo] = False
    return items, ok, rejected


def _assemble(
    pos_users: np.ndarray,
    pos_items: np.ndarray,
    neg_group: np.ndarray,
    neg_items: np.ndarray,
    balance: str,
) -> pd.DataFrame:
    """Lay out examples grouped by positive: its positive row(s), then its negatives.

    `neg_group` (non-decreasing) names the positive each negative belongs to. balance
    "weight": the positive's weight is its negatives count (at least 1); "oversample": the
    positive row repeats that many times with weight 1; "none": one row, weight 1.
    """
    n = len(pos_users)
    counts = np.bincount(neg_group, minlength=n).astype(np.int64)
    mult = np.maximum(counts, 1)
    reps = mult if balance == "oversample" else np.ones(n, dtype=np.int64)
    size = reps + counts
    start = np.cumsum(size) - size
    total = int(size.sum())

    user = np.empty(total, dtype=np.int32)
    item = np.empty(total, dtype=np.int32)
    label = np.zeros(total, dtype=np.float32)
    weight = np.ones(total, dtype=np.float32)

    pos_group = np.repeat(np.arange(n, dtype=np.int64), reps)
    first_rep = np.cumsum(reps) - reps
    pos_at = start[pos_group] + (np.arange(len(pos_group), dtype=np.int64) - first_rep[pos_group])
    user[pos_at] = pos_users[pos_group]
    item[pos_at] = pos_items[pos_group]
    label[pos_at] = 1.0
    if balance == "weight":
        weight[pos_at] = mult[pos_group]

    first_neg = np.cumsum(counts) - counts
    neg_at = start[neg_group] + reps[neg_group] + (np.arange(len(neg_group), dtype=np.int64) - first_neg[neg_group])
    user[neg_at] = pos_users[neg_group]
    item[neg_at] = neg_items
    positive = item.copy()
    positive[neg_at] = pos_items[neg_group]
    return pd.DataFrame({"user": user, "item": item, "label": label, "weight": weight, "positive": positive})


def _report(examples: pd.DataFrame, positives: int, dropped: int) -> dict[str, Any]:
    label = examples["label"].to_numpy()
    weight = examples["weight"].to_numpy(dtype=np.float64)
    negatives = int((label == 0).sum())
    return {
        "examples": len(examples),
        "positives": positives,
        "positive_rows": int((label == 1).sum()),
        "negatives": negatives,
        "negatives_per_positive": negatives / positives if positives else 0.0,
        "dropped_interacted": dropped,
        "positive_weight": float(weight[label == 1].sum()),
        "negative_weight": float(weight[label == 0].sum()),
    }


def _manifest(name: str, loss: str, columns: list[str], seed: int | None, params: Any) -> dict[str, Any]:
    return {"sampler": name, "loss": loss, "columns": columns, "seed": seed, "params": asdict(params)}


# ---------------------------------------------------------------------------------------------
# the samplers


def sample(name: str, positives: TrainPositives, params: SamplingParams) -> Negatives:
    """Run sampler `name` with its params group and a seed derived from (seed, sampler)."""
    if name not in SAMPLERS:
        raise GamerecError(f"sampler {name!r} is not known; expected one of {', '.join(SAMPLERS)}")
    rng = np.random.default_rng([params.seed, SAMPLERS.index(name)])
    if name == "out_batch":
        neg = out_batch(positives, params.out_batch, rng)
    elif name == "in_batch":
        neg = in_batch(positives, params.in_batch)
    else:
        neg = also_view(positives, params.also_view, rng, params.memory_mb)
    neg.manifest["seed"] = params.seed  # the samplers themselves only see the rng
    return neg


def out_batch(positives: TrainPositives, params: OutBatchParams, rng: np.random.Generator) -> Negatives:
    """`negatives` random unseen catalogue items per positive, uniform or ~ popularity**alpha."""
    index = interaction_index(positives)
    users = np.asarray(positives.users, dtype=np.int64)
    n, k = len(users), params.negatives
    cdf = None
    if params.distribution == "popularity":
        cdf = np.cumsum(index.counts[index.catalogue].astype(np.float64) ** params.alpha)
    neg_group = np.repeat(np.arange(n, dtype=np.int64), k)
    neg_items, ok, rejected = draw_unseen(users[neg_group], index, positives.num_items, rng, cdf)
    examples = _assemble(
        users.astype(np.int32), np.asarray(positives.items, dtype=np.int32),
        neg_group[ok], neg_items[ok], params.balance,
    )
    report = _report(examples, n, rejected)
    report["unfilled"] = int((~ok).sum())  # draws still seen after MAX_ROUNDS, dropped
    report["catalogue"] = len(index.catalogue)
    manifest = _manifest("out_batch", "bce", COLUMNS, None, params)
    return Negatives(examples, manifest, report)


def in_batch(positives: TrainPositives, params: InBatchParams) -> Negatives:
    """The train positives alone, with log_q = log(train count of the item / all positives).

    The batch's other positives are the negatives (softmax loss); log_q lets the train loop
    correct the popularity bias of that implicit sampling (Yi et al. 2019).
    """
    index = interaction_index(positives, with_seen=False)
    items = np.asarray(positives.items, dtype=np.int64)
    n = len(items)
    log_q = np.log(index.counts[items] / n) if n else np.zeros(0)
    examples = pd.DataFrame(
        {
            "user": np.asarray(positives.users, dtype=np.int32),
            "item": items.astype(np.int32),
            "label": np.ones(n, dtype=np.float32),
            "weight": np.ones(n, dtype=np.float32),
            "positive": items.astype(np.int32),
            "log_q": log_q.astype(np.float32),
        }
    )
    report = _report(examples, n, 0)
    report["negatives_per_positive"] = 0
    report["mixed_negatives"] = params.mixed_negatives
    report["catalogue"] = len(index.catalogue)
    manifest = _manifest("in_batch", "softmax", [*COLUMNS, "log_q"], None, params)
    manifest["mixed_negatives"] = params.mixed_negatives
    return Negatives(examples, manifest, report)


def also_view(
    positives: TrainPositives, params: AlsoViewParams, rng: np.random.Generator, memory_mb: float = 256
) -> Negatives:
    """Hard negatives from the positive item's also_view list, topped up with uniform ones.

    Candidates the user interacted with in train are dropped (and counted): keeping them made
    false negatives in the older project. At most `negatives` per positive, chosen at random
    when there are more; with top_up, short lists are filled with uniform unseen items, and
    `easy` more uniform unseen items are added to every positive (hard mixed with easy).
    Candidates are gathered in chunks that stay under `memory_mb`; chunking never changes
    the result.
    """
    index = interaction_index(positives)
    users = np.asarray(positives.users, dtype=np.int64)
    items = np.asarray(positives.items, dtype=np.int64)
    n, k, num_items = len(users), params.negatives, positives.num_items
    indptr = np.asarray(positives.also_view_indptr, dtype=np.int64)
    indices = np.asarray(positives.also_view_indices)
    lengths = indptr[items + 1] - indptr[items]

    # Gather candidates in chunks of positives so that long lists on big data stay bounded.
    ends = np.cumsum(lengths)
    chunk = max(1, int(memory_mb * 2**20) // BYTES_PER_CANDIDATE)
    cuts = np.searchsorted(ends, np.arange(chunk, int(ends[-1]) if n else 0, chunk), side="right")
    bounds = np.unique(np.concatenate([[0], cuts, [n]]))
    hard_group, hard_items = [], []
    dropped = candidates = 0
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        length = lengths[lo:hi]
        group = np.repeat(np.arange(lo, hi, dtype=np.int64), length)
        first = np.cumsum(length) - length
        within = np.arange(len(group), dtype=np.int64) - np.repeat(first, length)
        cand = indices[indptr[items[group]] + within].astype(np.int64)
        candidates += len(cand)
        keep = (cand != items[group]) & (cand > 0) & (cand < num_items)
        group, cand = group[keep], cand[keep]
        seen = is_seen(index.seen, users[group], cand, num_items)
        dropped += int(seen.sum())
        group, cand = group[~seen], cand[~seen]
        # Random subset of size <= k per positive: random key, sort within group, keep rank < k.
        order = np.argsort(group + rng.random(len(group)), kind="stable")
        group, cand = group[order], cand[order]
        cnt = np.bincount(group - lo, minlength=hi - lo)
        rank = np.arange(len(group), dtype=np.int64) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        keep = rank < k
        hard_group.append(group[keep])
        hard_items.append(cand[keep].astype(np.int32))
    hard_group = np.concatenate(hard_group) if hard_group else np.zeros(0, dtype=np.int64)
    hard_items = np.concatenate(hard_items) if hard_items else np.zeros(0, dtype=np.int32)
    hard_count = np.bincount(hard_group, minlength=n)

    easy_group = np.zeros(0, dtype=np.int64)
    easy_items = np.zeros(0, dtype=np.int32)
    top_up_rejected = unfilled = 0
    if params.top_up or params.easy:
        need = params.easy + (k - hard_count) * params.top_up
        easy_group = np.repeat(np.arange(n, dtype=np.int64), need)
        easy_items, ok, top_up_rejected = draw_unseen(users[easy_group], index, num_items, rng)
        unfilled = int((~ok).sum())
        easy_group, easy_items = easy_group[ok], easy_items[ok]

    group = np.concatenate([hard_group, easy_group])
    order = np.argsort(group, kind="stable")  # hard negatives first within each positive
    examples = _assemble(
        users.astype(np.int32), items.astype(np.int32),
        group[order], np.concatenate([hard_items, easy_items])[order], params.balance,
    )
    report = _report(examples, n, dropped)
    hard, easy = len(hard_items), len(easy_items)
    report.update(
        {
            "hard_candidates": candidates,
            "hard_negatives": hard,
            "easy_negatives": easy,
            "hard_share": hard / (hard + easy) if hard + easy else 0.0,
            "positives_with_hard": float((hard_count > 0).mean()) if n else 0.0,
            "top_up_rejected": top_up_rejected,
            "unfilled": unfilled,
            "catalogue": len(index.catalogue),
        }
    )
    manifest = _manifest("also_view", "bce", COLUMNS, None, params)
    return Negatives(examples, manifest, report)


# ---------------------------------------------------------------------------------------------
# on disk


def write_negatives(negatives: Negatives, out_dir: Path) -> None:
    """Write examples.parquet and manifest.json into the new folder `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True)
    negatives.examples.to_parquet(out_dir / EXAMPLES_FILE, index=False)
    (out_dir / MANIFEST_FILE).write_text(json.dumps(negatives.manifest, indent=2, sort_keys=True) + "\n")


def read_negatives(neg_dir: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The examples frame and manifest a sampler wrote; one-line GamerecError if incomplete."""
    neg_dir = Path(neg_dir)
    hint = f"run `dvc repro sample_negatives@{neg_dir.name}`"
    if not neg_dir.is_dir():
        raise GamerecError(f"{neg_dir}: not found; {hint}")
    missing = [name for name in (EXAMPLES_FILE, MANIFEST_FILE) if not (neg_dir / name).is_file()]
    if missing:
        raise GamerecError(f"{neg_dir}: missing {', '.join(missing)}; {hint}")
    try:
        manifest = json.loads((neg_dir / MANIFEST_FILE).read_text(encoding="utf-8"))
        examples = pd.read_parquet(neg_dir / EXAMPLES_FILE)
    except (ValueError, OSError) as exc:
        raise GamerecError(f"{neg_dir}: unreadable ({type(exc).__name__}); {hint}") from None
    columns = manifest.get("columns") if isinstance(manifest, dict) else None
    if not isinstance(columns, list) or "loss" not in manifest:
        raise GamerecError(f"{neg_dir}: {MANIFEST_FILE} lacks columns or loss; {hint}")
    absent = [c for c in columns if c not in examples.columns]
    if absent:
        raise GamerecError(f"{neg_dir}: {EXAMPLES_FILE} lacks columns {', '.join(absent)}; {hint}")
    return examples, manifest
