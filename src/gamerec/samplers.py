"""Negative sampling: a registry of strategies, one shared output contract.

Every sampler turns the train-split positives of the prepared data set into a `Negatives`:

  examples  one row per training example, grouped by positive: the positive's row(s) first,
            then its negatives. Columns user int32, item int32, label float32 (1 positive,
            0 negative), weight float32, positive int32 (the positive item the row belongs to:
            its own item for a positive; the train stage cuts a causal user history there);
            samplers that know their negatives' draw probability add log_q float32 (negative
            rows: log q of the draw; positive rows: 0), for the sampled softmax's correction.
  manifest  what the train stage needs to know: sampler, loss (its default, a name in
            `gamerec.losses`; `train.loss` may choose another), columns, seed, params (and what
            a sampler adds: mixed_negatives, mining).
  report    plain numbers for metrics/sampling/<name>.json.

A sampler is added by writing its function and registering it with its params group
(`sampling.<name>` in params.yaml) and the loss its examples are for:

    @register("name", NameParams, loss="bce")
    def name(positives, params, rng, shared) -> Negatives: ...

Each sampler's random stream is seeded by (`sampling.seed`, its name), so adding or
reordering samplers never changes another sampler's negatives.

"Seen" means the items a user interacted with in the TRAIN split only; val/test items are
not excluded, as the sampler must not look at evaluation data.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gamerec import config
from gamerec.config import AlsoViewParams, InBatchParams, MinedParams, OutBatchParams, SamplingParams
from gamerec.errors import GamerecError
from gamerec.interactions import draw_unseen, interaction_index, is_seen
from gamerec.prepared import TrainPositives

# Bytes one gathered also_view candidate costs while it is filtered (int64 owner, item, seen
# key and random key, plus masks and sort buffers): sizes chunks under `sampling.memory_mb`.
BYTES_PER_CANDIDATE = 64
EXAMPLES_FILE = "examples.parquet"
MANIFEST_FILE = "manifest.json"


@dataclass
class Negatives:
    """A sampler's output: the examples frame, its report, and its manifest (`sample` completes it)."""

    examples: pd.DataFrame
    report: dict[str, Any]
    manifest: dict[str, Any] = field(default_factory=dict)


Draw = Callable[[TrainPositives, Any, np.random.Generator, SamplingParams], Negatives]


@dataclass(frozen=True)
class Sampler:
    """A registered sampler: its params group's type, the loss its examples are for, and its function."""

    params: type
    loss: str
    draw: Draw


SAMPLERS: dict[str, Sampler] = {}


def register(name: str, params: type, loss: str) -> Callable[[Draw], Draw]:
    """Register the decorated function as sampler `name` (params group `sampling.<name>`)."""

    def add(draw: Draw) -> Draw:
        SAMPLERS[name] = Sampler(params, loss, draw)
        return draw

    return add


def get(name: str) -> Sampler:
    """The sampler registered as `name`; an unknown name is a one-line error listing the known ones."""
    if name not in SAMPLERS:
        raise GamerecError(f"sampler {name!r} is not known; expected one of {', '.join(SAMPLERS)}")
    return SAMPLERS[name]


def seed_of(name: str) -> int:
    """A stable number of the sampler's name (CRC-32), the second half of its random stream's seed."""
    return zlib.crc32(name.encode())


def sample(name: str, positives: TrainPositives, shared: SamplingParams | None = None, params: Any = None) -> Negatives:
    """Run sampler `name` with its params (default: the group's defaults) and its own random stream."""
    entry = get(name)
    shared = shared or SamplingParams()
    params = entry.params() if params is None else params
    rng = np.random.default_rng([shared.seed, seed_of(name)])
    neg = entry.draw(positives, params, rng, shared)
    neg.manifest = {"sampler": name, "loss": entry.loss, "columns": list(neg.examples.columns),
                    "seed": shared.seed, "params": asdict(params), **neg.manifest}
    return neg


def load_params(name: str, path: Path = config.PARAMS_FILE) -> tuple[SamplingParams, Any]:
    """The shared `sampling` params and sampler `name`'s own group `sampling.<name>`, validated."""
    entry = get(name)
    group = config.read_params(path).get("sampling")
    shared = config.parse(SamplingParams, group, "sampling", subgroups=SAMPLERS)
    return shared, config.parse(entry.params, (group or {}).get(name), f"sampling.{name}")


def chosen(path: Path = config.PARAMS_FILE) -> str:
    """The `sampler` param: the negatives `train` reads, checked against the `samplers` list."""
    params = config.read_params(path)
    built = _built(params)
    name = params.get("sampler")
    if name not in built:
        raise GamerecError(f"params: sampler = {name!r} is not valid; expected one of {', '.join(built)}")
    return name


def built(path: Path = config.PARAMS_FILE) -> list[str]:
    """The `samplers` list that `dvc.yaml` builds negatives for, each a registered name."""
    return _built(config.read_params(path))


def _built(params: dict[str, Any]) -> list[str]:
    names = params.get("samplers")
    if not isinstance(names, list) or not names:
        raise GamerecError(f"params: samplers = {names!r} is not valid; expected a list of {', '.join(SAMPLERS)}")
    for name in names:
        if name not in SAMPLERS:
            raise GamerecError(f"params: samplers has {name!r}; expected names from {', '.join(SAMPLERS)}")
    return names


# ---------------------------------------------------------------------------------------------
# shared pieces


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


# ---------------------------------------------------------------------------------------------
# the samplers


def _index(positives: TrainPositives, with_seen: bool = True):
    return interaction_index(positives.users, positives.items, positives.num_items, with_seen)


@register("out_batch", OutBatchParams, loss="bce")
def out_batch(positives: TrainPositives, params: OutBatchParams, rng: np.random.Generator,
              shared: SamplingParams | None = None) -> Negatives:
    """`negatives` random unseen catalogue items per positive, uniform or ~ popularity**alpha."""
    index = _index(positives)
    users = np.asarray(positives.users, dtype=np.int64)
    n, k = len(users), params.negatives
    weights = np.ones(len(index.catalogue))
    if params.distribution == "popularity":
        weights = index.counts[index.catalogue].astype(np.float64) ** params.alpha
    cdf = np.cumsum(weights) if params.distribution == "popularity" else None
    neg_group = np.repeat(np.arange(n, dtype=np.int64), k)
    neg_items, ok, rejected = draw_unseen(users[neg_group], index, rng, cdf)
    examples = _assemble(
        users.astype(np.int32), np.asarray(positives.items, dtype=np.int32),
        neg_group[ok], neg_items[ok], params.balance,
    )
    log_q = np.zeros(positives.num_items)  # log probability of one draw, by item
    log_q[index.catalogue] = np.log(weights / weights.sum())
    examples["log_q"] = np.where(examples.label.to_numpy() == 0, log_q[examples.item.to_numpy()], 0.0).astype(np.float32)
    report = _report(examples, n, rejected)
    report["unfilled"] = int((~ok).sum())  # draws still seen after MAX_ROUNDS, dropped
    report["catalogue"] = len(index.catalogue)
    return Negatives(examples, report)


@register("in_batch", InBatchParams, loss="batch_softmax")
def in_batch(positives: TrainPositives, params: InBatchParams, rng: np.random.Generator | None = None,
             shared: SamplingParams | None = None) -> Negatives:
    """The train positives alone: the batch's other positives are the negatives.

    The train loop corrects the popularity bias of that implicit sampling by each item's
    share of the positives (logQ, Yi et al. 2019), which it counts itself.
    """
    index = _index(positives, with_seen=False)
    items = np.asarray(positives.items, dtype=np.int64)
    n = len(items)
    examples = pd.DataFrame(
        {
            "user": np.asarray(positives.users, dtype=np.int32),
            "item": items.astype(np.int32),
            "label": np.ones(n, dtype=np.float32),
            "weight": np.ones(n, dtype=np.float32),
            "positive": items.astype(np.int32),
        }
    )
    report = _report(examples, n, 0)
    report["negatives_per_positive"] = 0
    report["mixed_negatives"] = params.mixed_negatives
    report["catalogue"] = len(index.catalogue)
    return Negatives(examples, report, {"mixed_negatives": params.mixed_negatives})


@register("also_view", AlsoViewParams, loss="bce")
def also_view(positives: TrainPositives, params: AlsoViewParams, rng: np.random.Generator,
              shared: SamplingParams | None = None) -> Negatives:
    """Hard negatives from the positive item's also_view list, topped up with uniform ones.

    Candidates the user interacted with in train are dropped (and counted): keeping them
    makes false negatives. At most `negatives` per positive, chosen at random when there are
    more; with top_up, short lists are filled with uniform unseen items, and `easy` more
    uniform unseen items are added to every positive (hard mixed with easy). Candidates are
    gathered in chunks that stay under `sampling.memory_mb`; chunking never changes the result.
    """
    index = _index(positives)
    users = np.asarray(positives.users, dtype=np.int64)
    items = np.asarray(positives.items, dtype=np.int64)
    n, k = len(users), params.negatives
    hard_group, hard_items, hard = _hard_negatives(positives, index, k, rng, (shared or SamplingParams()).memory_mb)
    hard_count = np.bincount(hard_group, minlength=n)

    easy_group = np.zeros(0, dtype=np.int64)
    easy_items = np.zeros(0, dtype=np.int32)
    top_up_rejected = unfilled = 0
    if params.top_up or params.easy:
        need = params.easy + (k - hard_count) * params.top_up
        easy_group = np.repeat(np.arange(n, dtype=np.int64), need)
        easy_items, ok, top_up_rejected = draw_unseen(users[easy_group], index, rng)
        unfilled = int((~ok).sum())
        easy_group, easy_items = easy_group[ok], easy_items[ok]

    group = np.concatenate([hard_group, easy_group])
    order = np.argsort(group, kind="stable")  # hard negatives first within each positive
    examples = _assemble(
        users.astype(np.int32), items.astype(np.int32),
        group[order], np.concatenate([hard_items, easy_items])[order], params.balance,
    )
    report = _report(examples, n, hard["dropped"])
    n_hard, n_easy = len(hard_items), len(easy_items)
    report.update(
        {
            "hard_candidates": hard["candidates"],
            "hard_negatives": n_hard,
            "easy_negatives": n_easy,
            "hard_share": n_hard / (n_hard + n_easy) if n_hard + n_easy else 0.0,
            "positives_with_hard": float((hard_count > 0).mean()) if n else 0.0,
            "top_up_rejected": top_up_rejected,
            "unfilled": unfilled,
            "catalogue": len(index.catalogue),
        }
    )
    return Negatives(examples, report)


@register("mined", MinedParams, loss="sampled_softmax")
def mined(positives: TrainPositives, params: MinedParams, rng: np.random.Generator,
          shared: SamplingParams | None = None) -> Negatives:
    """Uniform negatives for the first epoch; then the model being trained redraws them (gamerec.mining).

    What a stage can precompute it does: the positives, their first negatives, and the
    mining params in the manifest, which tell the train loop to redraw every `refresh` epochs
    from the model's ranks `skip_top` .. `skip_top + pool` of each user's unseen items.
    """
    first = out_batch(positives, OutBatchParams(negatives=params.negatives, balance=params.balance), rng, shared)
    mining = {"negatives": params.negatives, "skip_top": params.skip_top, "pool": params.pool, "refresh": params.refresh}
    return Negatives(first.examples, {**first.report, **{f"mining_{k}": v for k, v in mining.items()}}, {"mining": mining})


def _hard_negatives(positives: TrainPositives, index, k: int, rng: np.random.Generator,
                    memory_mb: float) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Up to k unseen also_view items per positive, drawn at random: (positive of each, item, counts).

    Candidates are gathered in chunks of positives, so that long lists on big data stay
    under `memory_mb`; the counts are the candidates gathered and those dropped as seen.
    """
    users = np.asarray(positives.users, dtype=np.int64)
    items = np.asarray(positives.items, dtype=np.int64)
    n, num_items = len(users), positives.num_items
    indptr, indices = np.asarray(positives.also_view.indptr, dtype=np.int64), np.asarray(positives.also_view.indices)
    lengths = indptr[items + 1] - indptr[items]
    ends = np.cumsum(lengths)
    chunk = max(1, int(memory_mb * 2**20) // BYTES_PER_CANDIDATE)
    cuts = np.searchsorted(ends, np.arange(chunk, int(ends[-1]) if n else 0, chunk), side="right")
    bounds = np.unique(np.concatenate([[0], cuts, [n]]))
    hard_group, hard_items = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int32)]
    counts = {"candidates": 0, "dropped": 0}
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        length = lengths[lo:hi]
        group = np.repeat(np.arange(lo, hi, dtype=np.int64), length)
        first = np.cumsum(length) - length
        within = np.arange(len(group), dtype=np.int64) - np.repeat(first, length)
        cand = indices[indptr[items[group]] + within].astype(np.int64)
        counts["candidates"] += len(cand)
        keep = (cand != items[group]) & (cand > 0) & (cand < num_items)
        group, cand = group[keep], cand[keep]
        seen = is_seen(index, users[group], cand)
        counts["dropped"] += int(seen.sum())
        group, cand = group[~seen], cand[~seen]
        # Random subset of size <= k per positive: random key, sort within group, keep rank < k.
        order = np.argsort(group + rng.random(len(group)), kind="stable")
        group, cand = group[order], cand[order]
        cnt = np.bincount(group - lo, minlength=hi - lo)
        rank = np.arange(len(group), dtype=np.int64) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        hard_group.append(group[rank < k])
        hard_items.append(cand[rank < k].astype(np.int32))
    return np.concatenate(hard_group), np.concatenate(hard_items), counts


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
