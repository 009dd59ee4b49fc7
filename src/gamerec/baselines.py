"""Baselines scored by the same protocol as the model: popularity and ALS (the `implicit` library).

A scorer is (function from user ids and their known history to user embeddings, one
embedding per item): the evaluation scores user . item for every model alike.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
import torch
from threadpoolctl import threadpool_limits

from gamerec import progress
from gamerec.config import AlsParams
from gamerec.csr import Csr
from gamerec.errors import GamerecError

UserEmbedder = Callable[[torch.Tensor, Csr], torch.Tensor]  # (user ids, what they chose before)
Scorer = tuple[UserEmbedder, torch.Tensor]


def popularity(train_counts: torch.Tensor) -> Scorer:
    """Every user gets the same scores: log(1 + train interactions) of each item.

    float32 like the model's scores (half the memory traffic when ranking a million users);
    distinct counts stay distinct and equal ones equal, so every rank and AUC is unchanged.
    """
    return (lambda users, known: torch.ones(len(users), 1)), torch.log1p(train_counts.double()).float()[:, None]


def require_als() -> None:
    """ALS is enabled by default: a missing or broken `implicit` is one error line, never a silent skip."""
    try:
        import implicit.als  # noqa: F401
    except ImportError as exc:
        raise GamerecError(
            f"evaluate.als.enabled = true but the ALS library cannot be imported ({exc}); "
            "reinstall the project (pip install -e .) or set evaluate.als.enabled: false"
        ) from None


def fit_als(users: np.ndarray, items: np.ndarray, num_users: int, num_items: int,
            factors: int, regularization: float, alpha: float, iterations: int, seed: int) -> Scorer:
    """Implicit-feedback ALS (Hu, Koren and Volinsky 2008) on the (user, item) train pairs.

    Item factors are fit on the train pairs only. A user's factors are solved from the
    history the scorer is given (the exact least-squares step of ALS with the item factors
    fixed, "fold-in"), so ALS uses what a user chose before validation or test as input, as
    the history-pooling two-tower does, without ever being fit on it.
    """
    from implicit.als import AlternatingLeastSquares

    matrix = sp.csr_matrix((np.ones(len(users), np.float32), (users, items)), shape=(num_users, num_items))
    with threadpool_limits(1, "blas"):  # implicit parallelises itself; nested BLAS threads only slow it
        model = AlternatingLeastSquares(factors=factors, regularization=regularization, alpha=alpha,
                                        iterations=iterations, random_state=seed, use_gpu=False,
                                        num_threads=torch.get_num_threads())  # this stage's share of the cores
        model.fit(matrix, show_progress=False)

    def embed_users(users: torch.Tensor, known: Csr) -> torch.Tensor:
        owner, items = known.torch().gather(users)
        rows = sp.csr_matrix(
            (np.ones(len(items), np.float32), (owner.numpy(), items.numpy())), shape=(len(users), num_items)
        )
        with threadpool_limits(1, "blas"):
            return torch.from_numpy(np.asarray(model.recalculate_user(users.numpy(), rows), dtype=np.float32))

    return embed_users, torch.from_numpy(np.asarray(model.item_factors, dtype=np.float32))


def tune_als(users: np.ndarray, items: np.ndarray, num_users: int, num_items: int, params: AlsParams,
             validate: Callable[[Scorer], float]) -> tuple[Scorer, dict[str, float]]:
    """Fit ALS for every point of the chosen grid; keep the best by `validate` (validation recall)."""
    require_als()
    grid = params.points
    best: tuple[float, Scorer, dict[str, float]] | None = None
    points = list(itertools.product(grid.factors, grid.regularization, grid.alpha))
    for factors, reg, alpha in progress.bar(points, desc=f"evaluate: ALS {params.grid} grid", unit="fit"):
        scorer = fit_als(users, items, num_users, num_items, factors, reg, alpha, params.iterations, params.seed)
        score = validate(scorer)
        if best is None or score > best[0]:
            best = (score, scorer, {"factors": factors, "regularization": reg, "alpha": alpha, "val_recall": score})
    assert best is not None  # the grid lists are validated non-empty
    return best[1], best[2]
