"""The user tower at request time: any list of games embedded as training and evaluation embed a history.

The `export` stage writes the tower into the serving folder in one of two kinds, and names
the kind in serving.json (`user_tower.kind`):

- `numpy` (`user_tower.npz`): the pooling tower (`model.UserTower`) as arrays, evaluated
  here in NumPy, so serving never imports PyTorch. Its arrays: `embedding` (the item id
  table, row r = items.parquet row r), `recency` (one weight per recency rank; zeros for a
  plain mean), `weight_<i>`/`bias_<i>` (the MLP's linear layers, ReLU between them) and the
  flags `normalize`, `history`, `user_id`.
- `torch` (`user_tower.pt`): any other tower, as the model's checkpoint. PyTorch is imported
  on first use and the model's own `embed_users` runs on the given histories.

A tower that also embeds the user id (`model.user_id: true`) cannot embed a list of games,
which has no id: export writes kind `none` and serving says so.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gamerec.csr import Csr

FILES = {"numpy": "user_tower.npz", "torch": "user_tower.pt"}  # the tower's file, by kind


class NumpyTower:
    """`UserTower.pool` then its MLP: the last `history` items, weights exp(recency[rank]), a weighted mean."""

    def __init__(self, path: Path):
        with np.load(path) as arrays:
            self.embedding = arrays["embedding"]
            self.recency = arrays["recency"].astype(np.float32)
            layers = sum(name.startswith("weight_") for name in arrays.files)
            self.layers = [(arrays[f"weight_{i}"], arrays[f"bias_{i}"]) for i in range(layers)]
            self.normalize, self.history = bool(arrays["normalize"]), int(arrays["history"])

    def load(self) -> "NumpyTower":
        """Ready as it is: the arrays are read when the tower is made."""
        return self

    def embed(self, histories: Csr) -> np.ndarray:
        """[rows, dim] float32: one vector per row of `histories` (items.parquet rows, oldest first)."""
        n, indptr = histories.rows, np.asarray(histories.indptr, np.int64)
        position = np.arange(indptr[0], indptr[-1])
        owner = np.repeat(np.arange(n), np.diff(indptr))
        items = np.asarray(histories.indices, np.int64)[position]
        back = indptr[1:][owner] - 1 - position  # 0 = the most recent item of its row
        keep = back < self.history
        # a [rows, history] window, zero weight where a row has fewer items
        window = np.zeros((n, self.history), np.int64)
        weight = np.zeros((n, self.history), np.float32)
        window[owner[keep], back[keep]] = items[keep]
        weight[owner[keep], back[keep]] = np.exp(self.recency[back[keep]])
        pooled = np.einsum("nh,nhd->nd", weight, self.embedding[window])
        x = pooled / np.maximum(weight.sum(1), 1e-6)[:, None]
        for i, (w, b) in enumerate(self.layers):
            x = x @ w.T + b
            if i < len(self.layers) - 1:
                x = np.maximum(x, 0)
        if self.normalize:  # as torch.nn.functional.normalize
            x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        return np.ascontiguousarray(x, dtype=np.float32)


class TorchTower:
    """Any other user tower: the exported checkpoint's `embed_users`, PyTorch imported on first use."""

    def __init__(self, path: Path):
        self.path = path
        self._model = None

    def load(self):
        """The model (loaded once); the service loads it before it serves, the CLI when first asked."""
        if self._model is None:
            import torch

            from gamerec.model import TwoTower

            self._model = TwoTower.from_checkpoint(torch.load(self.path, weights_only=True)).eval()
        return self._model

    def embed(self, histories: Csr) -> np.ndarray:
        """As `NumpyTower.embed`; row r of `histories` is pooled as user r's history."""
        import torch

        model = self.load()
        indptr, indices = histories.torch()
        with torch.no_grad():  # the model's items are items.parquet rows + 1 (0 is "unknown")
            vectors = model.embed_users(torch.arange(histories.rows), history=Csr(indptr, indices + 1))
        return np.ascontiguousarray(vectors.numpy(), dtype=np.float32)


TOWERS = {"numpy": NumpyTower, "torch": TorchTower}


def load(folder: Path, kind: str) -> NumpyTower | TorchTower | None:
    """The tower of kind `kind` in an export folder; None for `none` (a tower that needs the user id)."""
    return None if kind == "none" else TOWERS[kind](folder / FILES[kind])
