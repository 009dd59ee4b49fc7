"""The user tower at request time: any list of games embedded as training and evaluation embed a history.

The `export` stage writes the tower into the serving folder in one of two kinds, and names
the kind in serving.json (`user_tower.kind`):

- `numpy` (`user_tower.npz`): the pooling tower (`model.UserTower`) as arrays, evaluated
  here in NumPy, so serving never imports PyTorch. Its arrays: `embedding` (the item id
  table, row r = items.parquet row r), `recency` (one weight per recency rank; zeros for a
  plain mean), `weight_<i>`/`bias_<i>` (the MLP's linear layers, ReLU between them) and the
  flags `normalize`, `history`, `user_id`.
- `numpy_attention` (`user_tower_attention.npz`): the attention tower (`model.AttentionTower`)
  as arrays, its causal Transformer blocks evaluated here in NumPy: `items` (the item tower's
  output per items.parquet row, the blocks' input), the tower's own weights under their
  PyTorch names (`start`, `position`, `blocks.layers.<i>.self_attn.in_proj_weight`, ...) and
  the flags `normalize`, `history`, `heads`, `layers`, `norm_first`, `input_norm`,
  `activation`, `eps`.
- `torch` (`user_tower.pt`): any other tower, as the model's checkpoint. PyTorch is imported
  on first use and the model's own `embed_users` runs on the given histories.

A tower that also embeds the user id (`model.user_id: true`) cannot embed a list of games,
which has no id: export writes kind `none` and serving says so.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gamerec.csr import Csr

FILES = {"numpy": "user_tower.npz", "numpy_attention": "user_tower_attention.npz", "torch": "user_tower.pt"}  # by kind


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


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def _gelu(x: np.ndarray) -> np.ndarray:
    from scipy.special import erf  # torch's default GELU is the exact one

    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


ACTIVATIONS = {"relu": lambda x: np.maximum(x, 0), "gelu": _gelu}


class NumpyAttentionTower:
    """`AttentionTower` at inference: the last `history` tokens of [START, games...], causal blocks, the last output."""

    def __init__(self, path: Path):
        with np.load(path) as arrays:
            self.w = {name: arrays[name] for name in arrays.files}
        flag = self.w.pop
        self.normalize, self.history, self.heads = bool(flag("normalize")), int(flag("history")), int(flag("heads"))
        self.layers, self.norm_first, self.input_norm = int(flag("layers")), bool(flag("norm_first")), bool(flag("input_norm"))
        self.activation, self.eps = ACTIVATIONS[str(flag("activation"))], float(flag("eps"))
        linears = [name[: -len(".weight")] for name in self.w if name.startswith("mlp.") and name.endswith(".weight")]
        self.outputs = sorted(linears, key=lambda name: int(name.split(".")[1]))  # mlp.0, mlp.3, ...

    def load(self) -> "NumpyAttentionTower":
        """Ready as it is: the arrays are read when the tower is made."""
        return self

    def _norm(self, x: np.ndarray, name: str) -> np.ndarray:
        return _layer_norm(x, self.w[f"{name}.weight"], self.w[f"{name}.bias"], self.eps)

    def _attend(self, x: np.ndarray, layer: str) -> np.ndarray:
        """Causal multi-head self-attention of [n, T, dim] inputs (padding at the end: no later token is seen)."""
        n, steps, dim = x.shape
        head = dim // self.heads
        qkv = x @ self.w[f"{layer}.self_attn.in_proj_weight"].T + self.w[f"{layer}.self_attn.in_proj_bias"]
        q, k, v = (part.reshape(n, steps, self.heads, head).transpose(0, 2, 1, 3) for part in np.split(qkv, 3, -1))
        logits = q @ k.transpose(0, 1, 3, 2) / np.sqrt(head)
        distance = np.arange(steps)[:, None] - np.arange(steps)[None, :]
        if "recency" in self.w:  # the learned bias per distance (model.recency_bias)
            logits = logits + self.w["recency"][distance.clip(min=0)]
        logits = np.where(distance < 0, -np.inf, logits)
        weights = np.exp(logits - logits.max(-1, keepdims=True))
        out = (weights / weights.sum(-1, keepdims=True)) @ v
        out = out.transpose(0, 2, 1, 3).reshape(n, steps, dim)
        return out @ self.w[f"{layer}.self_attn.out_proj.weight"].T + self.w[f"{layer}.self_attn.out_proj.bias"]

    def _feed_forward(self, x: np.ndarray, layer: str) -> np.ndarray:
        hidden = self.activation(x @ self.w[f"{layer}.linear1.weight"].T + self.w[f"{layer}.linear1.bias"])
        return hidden @ self.w[f"{layer}.linear2.weight"].T + self.w[f"{layer}.linear2.bias"]

    def embed(self, histories: Csr) -> np.ndarray:
        """[rows, dim] float32: one vector per row of `histories` (items.parquet rows, oldest first)."""
        n, indptr = histories.rows, np.asarray(histories.indptr, np.int64)
        # a row's tokens are [START, games...]: token t is START (t = 0) or game t - 1; its last `history`
        # tokens go in left-aligned (column = t - first), padding after them
        tokens = np.diff(indptr) + 1
        first = np.maximum(tokens - self.history, 0)
        steps = int(np.minimum(tokens, self.history).max(initial=1))
        owner = np.repeat(np.arange(n), np.diff(indptr))
        column = np.arange(indptr[0], indptr[-1]) - indptr[:-1][owner] + 1 - first[owner]
        keep = column >= 0
        x = np.zeros((n, steps, self.w["start"].shape[0]), np.float32)
        games = np.asarray(histories.indices, np.int64)[indptr[0]:indptr[-1]]
        x[owner[keep], column[keep]] = self.w["items"][games[keep]]
        x[first == 0, 0] = self.w["start"]
        x = x + self.w["position"][:steps]
        if self.input_norm:
            x = self._norm(x, "input_norm")
        for i in range(self.layers):
            layer = f"blocks.layers.{i}"
            if self.norm_first:
                x = x + self._attend(self._norm(x, f"{layer}.norm1"), layer)
                x = x + self._feed_forward(self._norm(x, f"{layer}.norm2"), layer)
            else:
                x = self._norm(x + self._attend(x, layer), f"{layer}.norm1")
                x = self._norm(x + self._feed_forward(x, layer), f"{layer}.norm2")
        x = x[np.arange(n), np.minimum(tokens, self.history) - 1]
        if self.norm_first:
            x = self._norm(x, "norm")
        for i, name in enumerate(self.outputs):  # the output layer (or MLP, ReLU between); none for sasrec
            x = x @ self.w[f"{name}.weight"].T + self.w[f"{name}.bias"]
            if i < len(self.outputs) - 1:
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


TOWERS = {"numpy": NumpyTower, "numpy_attention": NumpyAttentionTower, "torch": TorchTower}


def load(folder: Path, kind: str) -> NumpyTower | NumpyAttentionTower | TorchTower | None:
    """The tower of kind `kind` in an export folder; None for `none` (a tower that needs the user id)."""
    return None if kind == "none" else TOWERS[kind](folder / FILES[kind])
