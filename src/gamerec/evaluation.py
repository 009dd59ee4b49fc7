"""The fixed evaluation protocol: one test set for every sampler, and its baselines.

Everything here depends only on the prepared data and the `evaluate` params, never on the
sampler, so the metrics of two experiments are comparable with `dvc metrics diff`:

- ranking: each test user's held-out items ranked over the full catalogue, their train and
  validation items excluded (recall@K, ndcg@K, hit_rate@K, mrr, coverage@10);
- pairs: each test positive against `negatives` items the user never interacted with, drawn
  once with `seed` (auc); accuracy on a 1:1 subset at the threshold that is best on the same
  construction over validation (score scales differ between losses, so the threshold is
  learned, not fixed at 0);
- hard pairs: test positives against their also_view items the user never interacted with
  (auc_also_view).

At each split every scorer knows what the users chose before it, and nothing later: the
train items before validation, the train and validation items before test (the validation
interaction is the latest thing a deployed recommender would know). No scorer is ever fit
on validation; the history-pooling model and ALS (by fold-in) use it as input only. So
validation and test ask the same question, what comes next, and choices made on
validation carry over to test. `known_before_test: train` gives the stricter two-step
question (test users known by their train items only), for comparison.

A scorer is a function from (user ids, known history) to user embeddings plus an embedding
per item, so the two-tower model and the baselines go through exactly the same code.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from gamerec import metrics
from gamerec.baselines import Scorer, UserEmbedder
from gamerec.config import EvaluateParams
from gamerec.csr import Csr
from gamerec.interactions import InteractionIndex, draw_unseen, interaction_index, is_seen
from gamerec.model import TwoTower
from gamerec.prepared import Holdout, Prepared
from gamerec.retrieval import holdout_recall, rank_holdout

COVERAGE_K = 10


@dataclass
class Pairs:
    """Positive (user row, item) pairs and negative (user row, item) pairs to score."""

    pos_rows: torch.Tensor
    pos_items: torch.Tensor
    neg_rows: torch.Tensor
    neg_items: torch.Tensor


@dataclass
class Split:
    """One evaluation split: what to rank and which pairs to score."""

    holdout: Holdout
    known: Csr  # each user's interactions before this split, in time order
    sampled: Pairs  # each held-out item against its sampled never-interacted items
    balanced: Pairs  # each held-out item against its first sampled negative only (1:1)


@dataclass
class EvalData:
    """Everything the protocol needs, loaded once and shared by every scorer."""

    test: Split
    val: Split
    val_ranked: Holdout  # the validation users ranked to tune baselines (`val_users`; the ablation: a sample of them)
    also_view: Pairs
    popularity: torch.Tensor  # train interactions per item
    catalogue_items: int
    train_users: np.ndarray  # the train split's (user, item) pairs, for baselines to fit on
    train_items: np.ndarray
    num_users: int


def _paired(ho: Holdout, users: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, item) of the held-out items whose pairs are scored: every user's, or a seeded sample of `users` users'.

    An AUC over 5 million test users' pairs is as precise as one over 50,000 users' to the
    third decimal (reports/evaluate.json's `auc_standard_error` says how precise), and drawing
    100 negatives for each of them dominated `evaluate` at that scale.
    """
    if users == 0 or users >= len(ho.users):
        return ho.owner, ho.items
    chosen = torch.zeros(len(ho.users), dtype=torch.bool)
    chosen[torch.randperm(len(ho.users), generator=torch.Generator().manual_seed(seed))[:users]] = True
    keep = chosen[ho.owner]
    return ho.owner[keep], ho.items[keep]


def _split(prepared: Prepared, name: str, hide: tuple[str, ...], known: tuple[str, ...], index: InteractionIndex,
           negatives: int, rng: np.random.Generator, pair_users: int = 0, seed: int = 0) -> Split:
    ho = prepared.holdout(name, hide)
    owner, items = _paired(ho, pair_users, seed)
    neg_rows = owner.repeat_interleave(negatives)
    drawn, ok, _ = draw_unseen(ho.users[neg_rows].numpy(), index, rng)
    # int32: a split's 100 negatives per positive are 80 million pairs on 5 million reviews
    neg_rows, neg_items = neg_rows[torch.from_numpy(ok)].int(), torch.from_numpy(drawn[ok]).int()
    del drawn
    first = torch.from_numpy(np.flatnonzero(ok) % negatives == 0)  # each positive's first draw
    return Split(
        holdout=ho,
        known=prepared.history(known),
        sampled=Pairs(owner, items, neg_rows, neg_items),
        balanced=Pairs(owner, items, neg_rows[first], neg_items[first]),
    )


def _also_view_pairs(split: Split, also_view: Csr, index: InteractionIndex) -> Pairs:
    """Held-out items against their also_view items that the user never interacted with."""
    pos_rows, pos_items = split.sampled.pos_rows, split.sampled.pos_items
    which, items = also_view.gather(pos_items)
    rows = pos_rows[which]
    users = split.holdout.users[rows].numpy()
    keep = ~is_seen(index, users, items.numpy()) & (items != pos_items[which]).numpy()
    keep_t = torch.from_numpy(keep)
    has = torch.zeros(len(pos_items), dtype=torch.bool)
    has[which[keep_t]] = True
    return Pairs(pos_rows[has], pos_items[has], rows[keep_t], items[keep_t])


def load_eval_data(prepared: Prepared, params: EvaluateParams) -> EvalData:
    """Build the fixed test and validation pairs from the prepared data and `params.seed`."""
    interactions, num_items = prepared.interactions, prepared.num_items
    index = interaction_index(interactions.user.to_numpy(), interactions.item.to_numpy(), num_items)  # any split
    rng = np.random.default_rng(params.seed)
    known_before_test = tuple(params.known_before_test.split("+"))  # "train+val" -> ("train", "val")
    test = _split(prepared, "test", ("train", "val"), known_before_test, index, params.negatives, rng,
                  params.pair_users, params.seed)
    val = _split(prepared, "val", ("train",), ("train",), index, params.negatives, rng, params.pair_users, params.seed)
    train = prepared.split("train")
    return EvalData(
        test=test,
        val=val,
        val_ranked=val.holdout.sample(params.val_users, params.seed),
        also_view=_also_view_pairs(test, prepared.also_view.torch(), index),
        popularity=torch.from_numpy(np.bincount(train.item.to_numpy(), minlength=num_items)).double(),
        catalogue_items=num_items - 1,
        train_users=train.user.to_numpy(dtype=np.int64),
        train_items=train.item.to_numpy(dtype=np.int64),
        num_users=prepared.num_users,
    )


@dataclass
class Report:
    """A scorer's metrics and the curves behind the plots."""

    metrics: dict[str, float]
    roc: tuple[list[float], list[float]]  # (fpr grid, tpr)
    recall_curve: list[float]  # recall@K for K = 1..curve_max_k
    ranks: torch.Tensor  # rank of each held-out item (the test holdout's order), for paired comparisons
    intervals: dict[str, tuple[float, float]]  # 95% bootstrap interval over test users of the headline metrics
    users_evaluated: int = 0  # test users ranked
    ranking_seconds: float = 0.0  # wall time of the full-catalogue ranking of the test users


PAIR_CHUNK = 1 << 16  # pairs scored at once: two [chunk, dim] gathers, not [100 x users, dim]


def _dot_rows(user_emb: torch.Tensor, item_emb: torch.Tensor, rows: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """user_emb[rows[n]] . item_emb[items[n]] for every n, a chunk at a time."""
    out = torch.empty(len(rows), dtype=user_emb.dtype)
    for start in range(0, len(rows), PAIR_CHUNK):
        part = slice(start, start + PAIR_CHUNK)
        out[part] = torch.einsum("nd,nd->n", user_emb[rows[part]], item_emb[items[part]])
    return out


def _pair_scores(user_emb: torch.Tensor, item_emb: torch.Tensor, pairs: Pairs) -> tuple[torch.Tensor, torch.Tensor]:
    return (_dot_rows(user_emb, item_emb, pairs.pos_rows, pairs.pos_items),
            _dot_rows(user_emb, item_emb, pairs.neg_rows, pairs.neg_items))


def _embed_paired(embed_users: UserEmbedder, split: Split) -> torch.Tensor:
    """[split's users, dim] embeddings of the users its balanced pairs name (zeros elsewhere: never read).

    Validation feeds only the accuracy threshold, whose pairs come from `pair_users` users: at
    5m embedding all 794k validation users through the attention tower took 16 s for nothing.
    """
    pairs = split.balanced
    rows = torch.unique(torch.cat([pairs.pos_rows.long(), pairs.neg_rows.long()]))
    some = embed_users(split.holdout.users[rows], split.known)
    emb = torch.zeros(len(split.holdout.users), some.shape[1], dtype=some.dtype)
    emb[rows] = some
    return emb


@torch.no_grad()
def validation_recall(scorer: Scorer, data: EvalData, k: int, memory_mb: float, precision: str = "float32") -> float:
    """recall@k of the ranked validation users (train items excluded): what baselines are tuned on."""
    embed_users, item_emb = scorer
    ranked = data.val_ranked
    return holdout_recall(ranked, embed_users(ranked.users, data.val.known), item_emb, k, memory_mb, precision)


@torch.no_grad()
def evaluate(embed_users: UserEmbedder, item_emb: torch.Tensor, data: EvalData, params: EvaluateParams,
             name: str = "a scorer", device: torch.device | str = "cpu") -> Report:
    """Every metric of the protocol for one scorer (score = user embedding . item embedding), ranked on `device`.

    `name` labels its progress.
    """
    test, val = data.test, data.val
    test_emb = embed_users(test.holdout.users, test.known)
    val_emb = _embed_paired(embed_users, val)
    depth = COVERAGE_K  # the top lists feed coverage and popularity; recall and ndcg at any k come from the ranks
    start = time.perf_counter()
    ranks, top = rank_holdout(test.holdout, test_emb, item_emb, depth, params.memory_mb, f"evaluate: ranking {name}",
                              params.precision, device)
    ranking_seconds = time.perf_counter() - start
    n_users = len(test.holdout.users)
    result = metrics.ranking_metrics(ranks, test.holdout.owner, n_users, params.k)
    result[f"coverage@{COVERAGE_K}"] = metrics.coverage(top[:, :COVERAGE_K], data.catalogue_items)

    result["auc"], roc = metrics.auc_and_roc(*_pair_scores(test_emb, item_emb, test.sampled))
    pair_interval = metrics.auc_interval(result["auc"], len(test.sampled.pos_items), len(test.sampled.neg_items))
    threshold = metrics.best_threshold(*_pair_scores(val_emb, item_emb, val.balanced))
    result["accuracy"] = metrics.accuracy(*_pair_scores(test_emb, item_emb, test.balanced), threshold)
    result["auc_also_view"] = metrics.auc(*_pair_scores(test_emb, item_emb, data.also_view))
    result[f"popularity_percentile@{COVERAGE_K}"] = metrics.popularity_percentile(top[:, :COVERAGE_K], data.popularity)
    curve = metrics.recall_curve(ranks, test.holdout.owner, n_users, params.curve_max_k)
    per_user = metrics.user_scores(ranks, test.holdout.owner, n_users, params.k[0])
    intervals = {name: metrics.interval(values, params.bootstrap.samples, params.bootstrap.seed)
                 for name, values in per_user.items()}
    intervals["auc"] = pair_interval  # the standard error of the sampled pairs, not a bootstrap
    return Report(result, roc, curve, ranks, intervals, n_users, ranking_seconds)


def write_ranks(path, holdout: Holdout, ranks: dict[str, torch.Tensor]) -> None:
    """Each held-out item's rank under each scorer, as Parquet: user, item, then a column per scorer."""
    frame = pd.DataFrame({"user": holdout.users[holdout.owner].numpy().astype(np.int32),
                          "item": holdout.items.numpy().astype(np.int32),
                          **{name: r.numpy().astype(np.int32) for name, r in ranks.items()}})
    frame.to_parquet(path, index=False)


@torch.no_grad()
def feature_ablation(model: TwoTower, data: EvalData, k: int, memory_mb: float, precision: str = "float32",
                     users: int = 0, samples: int = 1000, seed: int = 0) -> dict:
    """Validation recall@k with each of the item tower's inputs zeroed in turn ("none": nothing zeroed).

    Ranks `users` of the ranked validation users (a seeded sample; 0 = all): the catalogue is
    ranked once per feature, and an ablation asks how much a feature matters, which a sample
    answers when the change's paired 95% bootstrap interval (`change`, against "none", users
    resampled together) is narrow against the change itself. On validation, never test, so
    that reading it cannot leak into model choices.
    """
    ranked = data.val_ranked.sample(users, seed)
    runs = {"none": (), **{name: (name,) for name in model.item_tower.inputs}}
    per_user = {}
    for name, zero in runs.items():
        embed_users, item_emb = model_scorer(model, zero)
        ranks, _ = rank_holdout(ranked, embed_users(ranked.users, data.val.known), item_emb, 1, memory_mb,
                                precision=precision)
        per_user[name] = metrics.per_user_recall(ranks, ranked.owner, len(ranked.users), k).numpy()
    change = {name: metrics.paired_difference(per_user["none"], values, samples, seed) for name, values in per_user.items()
              if name != "none"}
    return {"users": len(ranked.users),
            f"val_recall@{k}": {name: round(float(values.mean()), 6) for name, values in per_user.items()},
            "change": {name: [round(v, 6) for v in triple] for name, triple in change.items()}}


@torch.no_grad()
def model_scorer(model: TwoTower, zero: tuple[str, ...] = ()) -> Scorer:
    """The two-tower model as a scorer (in eval mode, on its device); embeddings come back to the CPU.

    Item features in `zero` are zeroed.
    """
    model.eval()
    device = next(model.parameters()).device
    embed_users = lambda users, known: model.embed_users(users.to(device), history=known).cpu()
    return embed_users, model.embed_items(torch.arange(model.config.num_items, device=device), zero).cpu()
