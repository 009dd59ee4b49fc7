"""The two-tower model: a user tower and an item tower that meet in a dot product.

The model returns the two towers' embeddings; losses live in `training.py` (as in TorchRec's
retrieval example), so one model serves the BCE losses of out_batch/also_view and the batch
softmax of in_batch. Item features (brand, price, description tokens) are stored in the
item tower as buffers, so a checkpoint alone can embed any catalogue item.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from gamerec import csr


@dataclass
class ModelConfig:
    """Architecture and encoder sizes; saved in the checkpoint to rebuild the model."""

    num_users: int
    num_items: int
    num_brands: int
    num_tokens: int
    dim: int = 32  # output embedding size of both towers
    hidden: list[int] = field(default_factory=lambda: [64])  # MLP hidden layer sizes
    dropout: float = 0.1
    normalize: bool = True  # score = cosine / temperature instead of a raw dot product
    temperature: float = 0.1
    history: int = 0  # recent train items pooled into the user tower (0 = user id only)
    user_id: bool = True  # the user tower embeds the user id (off: history only, needs history > 0)
    causal: bool = False  # in training, pool only the items bought before the scored one
    pooling: str = "mean"  # mean | recency (a learned weight per recency rank)

    @classmethod
    def for_data(cls, stats: dict, **architecture) -> "ModelConfig":
        """Encoder sizes from prepare's stats.json; `architecture` is the `model` params group."""
        sizes = {name: stats[name] for name in ("num_users", "num_items", "num_brands", "num_tokens")}
        return cls(**sizes, **architecture)


def mlp(in_dim: int, hidden: list[int], out_dim: int, dropout: float) -> nn.Sequential:
    """Linear layers with ReLU and dropout between them; the last layer is linear."""
    layers: list[nn.Module] = []
    for size in hidden:
        layers += [nn.Linear(in_dim, size), nn.ReLU(), nn.Dropout(dropout)]
        in_dim = size
    layers.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


@dataclass
class ItemFeatures:
    """Per-item feature arrays indexed by encoded item id (row 0 = unknown, empty)."""

    brand: np.ndarray  # int, 0 = no brand
    log_price_z: np.ndarray  # float, standardised log(1 + price); 0 where missing
    price_missing: np.ndarray  # bool
    text_indptr: np.ndarray  # CSR of description token ids
    text_indices: np.ndarray


@dataclass
class UserHistory:
    """Each user's most recent train items, as CSR (row = user id; row 0 = unknown, empty)."""

    indptr: np.ndarray
    indices: np.ndarray


class _DataShapedBuffers(nn.Module):
    """Buffers whose length depends on the data (CSR arrays) take the checkpoint's shape on load."""

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name, buffer in self._buffers.items():
            saved = state_dict.get(prefix + name)
            if buffer is not None and saved is not None and saved.shape != buffer.shape:
                self._buffers[name] = torch.empty_like(saved)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class UserTower(_DataShapedBuffers):
    """User id embedding and/or the pooled item embeddings of the user's train history, then an MLP.

    Pooling the history (YouTube DNN style) serves users with few interactions from what they
    chose rather than from a barely trained id vector. The history is each user's whole train
    sequence in time order; the `history` most recent items are pooled. In training the item
    being scored must not see itself: with `causal` only the items bought before it are pooled
    (next-item prediction, as the test asks), otherwise it is just left out of the pool.
    `pooling="recency"` learns one weight per recency rank instead of a plain mean.
    """

    def __init__(self, cfg: ModelConfig, item_embedding: nn.Embedding, history: UserHistory | None = None):
        super().__init__()
        self.cfg = cfg
        self.pooled = cfg.history > 0
        self.embedding = nn.Embedding(cfg.num_users, cfg.dim) if cfg.user_id else None
        parts = int(cfg.user_id) + int(self.pooled)
        self.mlp = mlp(cfg.dim * parts, cfg.hidden, cfg.dim, cfg.dropout)
        if self.pooled:
            self.item_embedding = item_embedding  # shared with the item tower: one vector per item
            self.recency = nn.Parameter(torch.zeros(cfg.history)) if cfg.pooling == "recency" else None
            if history is None:  # shapes only; a checkpoint's state_dict fills them in
                history = UserHistory(np.zeros(cfg.num_users + 1, np.int64), np.zeros(0, np.int64))
            self.register_buffer("history_indptr", torch.as_tensor(history.indptr, dtype=torch.long))
            self.register_buffer("history_indices", torch.as_tensor(history.indices, dtype=torch.long))

    def pool(
        self, users: torch.Tensor, leave_out: torch.Tensor | None = None, history: UserHistory | None = None
    ) -> torch.Tensor:
        """[N, dim] pooled history of `users` (flat); `leave_out[n]` is the item scored for row n.

        `history` replaces the train history the model was built with, e.g. by everything
        known before the test interaction; the weights never change with it.
        """
        indptr, indices = self.history_indptr, self.history_indices
        if history is not None:
            indptr, indices = torch.as_tensor(history.indptr), torch.as_tensor(history.indices)
        # Whole rows are gathered, so a causal cut can find its positive; rows are short on
        # average (7.5 items on the real data), and the window below bounds what is embedded.
        owner, items = csr.gather(indptr, indices, users)
        lengths = indptr[users + 1] - indptr[users]
        device = items.device
        pos = torch.arange(len(items), device=device) - (torch.cumsum(lengths, 0) - lengths)[owner]  # rank in the sequence
        end = lengths.clone()  # the pool is the `history` items before position `end`
        keep = torch.ones_like(items, dtype=torch.bool)
        if leave_out is not None:
            hit = items == leave_out[owner]
            if self.cfg.causal:
                end[owner[hit]] = pos[hit]
            else:
                keep = ~hit
        back = end[owner] - 1 - pos  # 0 = the most recent pooled item
        keep &= (back >= 0) & (back < self.cfg.history)
        owner, items, back = owner[keep], items[keep], back[keep]
        weight = torch.ones(len(items), device=device)
        if self.recency is not None:
            weight = torch.exp(self.recency[back])
        embedded = self.item_embedding(items) * weight[:, None]
        total = torch.zeros(len(users), self.cfg.dim, device=device).index_add_(0, owner, embedded)
        norm = torch.zeros(len(users), device=device).index_add_(0, owner, weight).clamp(min=1e-6)
        return total / norm[:, None]

    def forward(
        self, users: torch.Tensor, leave_out: torch.Tensor | None = None, history: UserHistory | None = None
    ) -> torch.Tensor:
        flat = users.reshape(-1)
        parts = []
        if self.embedding is not None:
            parts.append(self.embedding(flat))
        if self.pooled:
            parts.append(self.pool(flat, None if leave_out is None else leave_out.reshape(-1), history))
        return self.mlp(torch.cat(parts, dim=-1)).reshape(*users.shape, -1)


FEATURES = ("id", "brand", "price", "description")  # the item tower's inputs, in order


class ItemTower(_DataShapedBuffers):
    """Item id + brand embeddings, price features and a description bag, then an MLP."""

    def __init__(self, cfg: ModelConfig, features: ItemFeatures | None = None):
        super().__init__()
        self.item = nn.Embedding(cfg.num_items, cfg.dim)
        self.brand = nn.Embedding(cfg.num_brands, cfg.dim, padding_idx=0)
        self.price = nn.Linear(2, cfg.dim)
        self.text = nn.EmbeddingBag(cfg.num_tokens, cfg.dim, mode="mean", padding_idx=0)
        self.mlp = mlp(4 * cfg.dim, cfg.hidden, cfg.dim, cfg.dropout)
        n = cfg.num_items
        if features is None:  # shapes only; a checkpoint's state_dict fills them in
            features = ItemFeatures(
                np.zeros(n, np.int64), np.zeros(n, np.float32), np.ones(n, bool),
                np.zeros(n + 1, np.int64), np.zeros(0, np.int64),
            )
        self.register_buffer("brand_of", torch.as_tensor(features.brand, dtype=torch.long))
        price = np.stack([features.log_price_z, features.price_missing], axis=1)
        self.register_buffer("price_of", torch.as_tensor(price, dtype=torch.float32))
        self.register_buffer("text_indptr", torch.as_tensor(features.text_indptr, dtype=torch.long))
        self.register_buffer("text_indices", torch.as_tensor(features.text_indices, dtype=torch.long))

    def forward(self, items: torch.Tensor, zero: tuple[str, ...] = ()) -> torch.Tensor:
        """Item embeddings; features named in `zero` (see FEATURES) are zeroed, for ablations."""
        flat_items = items.reshape(-1)
        owner, tokens = csr.gather(self.text_indptr, self.text_indices, flat_items)
        offsets = torch.searchsorted(owner, torch.arange(len(flat_items), device=items.device))
        parts = {
            "id": self.item(items),
            "brand": self.brand(self.brand_of[items]),
            "price": self.price(self.price_of[items]),
            "description": self.text(tokens, offsets).reshape(*items.shape, -1),
        }
        return self.mlp(torch.cat([p * 0 if name in zero else p for name, p in parts.items()], dim=-1))


class TwoTower(nn.Module):
    """User and item towers; `score` turns their embeddings into logits."""

    def __init__(self, cfg: ModelConfig, features: ItemFeatures | None = None, history: UserHistory | None = None):
        super().__init__()
        self.config = cfg
        self.item_tower = ItemTower(cfg, features)
        self.user_tower = UserTower(cfg, self.item_tower.item, history)

    def forward(
        self, users: torch.Tensor, items: torch.Tensor, positives: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings of `users` and `items` for training.

        `positives` (default: `items`) is the positive each row belongs to: a user's history is
        cut at it (see UserTower), so a negative sees the same history as its positive.
        """
        return self.embed_users(users, leave_out=items if positives is None else positives), self.embed_items(items)

    def embed_users(
        self, users: torch.Tensor, leave_out: torch.Tensor | None = None, history: UserHistory | None = None
    ) -> torch.Tensor:
        """User embeddings; `history` (default: the train history) is what the users are known to have chosen."""
        u = self.user_tower(users, leave_out, history)
        return F.normalize(u, dim=-1) if self.config.normalize else u

    def embed_items(self, items: torch.Tensor, zero: tuple[str, ...] = ()) -> torch.Tensor:
        i = self.item_tower(items, zero)
        return F.normalize(i, dim=-1) if self.config.normalize else i

    def logit_scale(self) -> float:
        """Scores are dot products times this (1 / temperature for normalised embeddings)."""
        return 1.0 / self.config.temperature if self.config.normalize else 1.0

    def score(self, users: torch.Tensor, items: torch.Tensor, positives: torch.Tensor | None = None) -> torch.Tensor:
        """Training logits of (user, item) pairs, elementwise (`positives` as in `forward`)."""
        u, i = self(users, items, positives)
        return (u * i).sum(-1) * self.logit_scale()

    def checkpoint(self) -> dict:
        """A `torch.load(weights_only=True)`-safe dict: config plus weights and feature buffers."""
        return {"config": asdict(self.config), "state_dict": self.state_dict()}

    @classmethod
    def from_checkpoint(cls, ckpt: dict) -> "TwoTower":
        model = cls(ModelConfig(**ckpt["config"]))
        model.load_state_dict(ckpt["state_dict"])
        return model
