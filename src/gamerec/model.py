"""The two-tower model: a user tower and an item tower that meet in a dot product.

The model returns the two towers' embeddings; losses live in `losses.py` (as in TorchRec's
retrieval example), so one model serves the BCE of out_batch/also_view and the batch softmax
of in_batch. Item features (brand, price, description tokens) are stored in the item tower
as buffers, so a checkpoint alone can embed any catalogue item. The architecture is the
`model` params group (`config.ModelParams`, its only defaults); the model also owns its
optimiser (`optim.Adam`) and its FLOP count.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from gamerec import config
from gamerec.config import ModelParams, TrainParams
from gamerec.csr import Csr
from gamerec.errors import GamerecError
from gamerec.optim import Adam
from gamerec.prepared import ItemFeatures, Prepared


@dataclass(frozen=True)
class ModelConfig:
    """Encoder sizes of the data (row 0 = unknown included) and the architecture; the checkpoint keeps both."""

    num_users: int
    num_items: int
    num_brands: int
    num_tokens: int
    arch: ModelParams

    def to_dict(self) -> dict:
        """The flat form saved in checkpoints: the sizes, then the `model` params."""
        sizes = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "arch"}
        return {**sizes, **asdict(self.arch)}

    @classmethod
    def from_dict(cls, flat: dict) -> "ModelConfig":
        """What `to_dict` wrote; the architecture is validated as the params group is."""
        sizes = {f.name: flat[f.name] for f in fields(cls) if f.name != "arch"}
        arch = {key: value for key, value in flat.items() if key not in sizes}
        return cls(**sizes, arch=config.parse(ModelParams, arch, "model"))

    def flops_per_positive(self, loss: str, batch_size: int, negatives: float, tokens_per_item: float,
                           history_per_user: float) -> float:
        """Training FLOPs per positive, counted from the architecture (a multiply-add is 2 FLOPs).

        Forward, per positive: the user tower once (pool: history pool, items x dim, weighted;
        its MLP; normalising, 3 x dim. attention, which trains on whole sequences, one token per
        positive: the token's item through the item tower, then per block the four projections
        (4 x 2 dim^2), the feed-forward (2 x 2 x dim x its width) and the causal attention of a
        query over the window's earlier tokens (2 x 2 x dim each, (T + 1) / 2 of them on average,
        T = min(history per user + 1, history)); its output layer if any, normalising); the item
        tower for the positive and each of its `negatives`
        (features: description mean, tokens x dim; price layer, 2 x 2 x dim; MLP from 4 x dim;
        id: a lookup; then normalising); the scores: one dot product per item (bce), plus about 5 FLOPs a logit
        for a softmax, over its own items (sampled_softmax), the batch's and its own
        (batch_softmax), or the whole catalogue, whose item tower then runs once per batch
        (exact_softmax). Backward costs about twice forward: training is 3x forward.
        Embedding lookups and optimiser updates move memory and count 0 here.
        """
        arch, d = self.arch, self.arch.dim

        def mlp(width: int) -> float:
            flops = 0.0
            for size in [*arch.hidden, d]:
                flops, width = flops + 2 * width * size, size
            return flops

        towers = {"features": tokens_per_item * d + 4 * d + mlp(4 * d), "id": 0.0,  # an id tower only looks up
                  "id_plus_features": tokens_per_item * d + 4 * d + mlp(3 * d) + d}
        item = towers[arch.item_tower] + 3 * d
        parts = int(arch.user_id) + int(arch.history > 0)
        layout, window = BLOCKS[arch.block], min(history_per_user + 1, arch.history)
        block = 8 * d * d + 4 * layout.feedforward * d * d + 4 * d * (window + 1) / 2
        users = {"pool": 2 * min(history_per_user, arch.history) * d + mlp(parts * d) + 3 * d,
                 "attention": towers[arch.item_tower] + arch.layers * block + (mlp(d) if layout.output_layer else 0)
                 + 3 * d}
        user = users[arch.user_tower]
        columns, extra_items = {"bce": (1 + negatives, 0.0), "sampled_softmax": (1 + negatives, 0.0),
                                "batch_softmax": (batch_size + negatives, 0.0),
                                "exact_softmax": (self.num_items, self.num_items / batch_size)}[loss]
        per_logit = 2 * d + (0 if loss == "bce" else 5)
        return 3 * (user + (1 + negatives + extra_items) * item + columns * per_logit)


def mlp(in_dim: int, hidden: list[int], out_dim: int, dropout: float) -> nn.Sequential:
    """Linear layers with ReLU and dropout between them; the last layer is linear."""
    layers: list[nn.Module] = []
    for size in hidden:
        layers += [nn.Linear(in_dim, size), nn.ReLU(), nn.Dropout(dropout)]
        in_dim = size
    layers.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


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

    def __init__(self, cfg: ModelConfig, item_embedding: nn.Embedding, history: Csr | None = None):
        super().__init__()
        arch = self.arch = cfg.arch
        self.pooled = arch.history > 0
        self.embedding = nn.Embedding(cfg.num_users, arch.dim) if arch.user_id else None
        parts = int(arch.user_id) + int(self.pooled)
        self.mlp = mlp(arch.dim * parts, arch.hidden, arch.dim, arch.dropout)
        if self.pooled:
            self.item_embedding = item_embedding  # shared with the item tower: one vector per item
            self.recency = nn.Parameter(torch.zeros(arch.history)) if arch.pooling == "recency" else None
            history = (history or Csr.empty(cfg.num_users)).torch()  # empty: a checkpoint's state_dict fills it in
            self.register_buffer("history_indptr", history.indptr)
            self.register_buffer("history_indices", history.indices)

    def sequence_length(self) -> int:
        """0: trained one positive at a time (see AttentionTower.sequence_length)."""
        return 0

    def own_parameters(self) -> list[nn.Parameter]:
        """Weights that learn at `train.attention_lr`: none (the pool's table is the item tower's)."""
        return []

    def pool(self, users: torch.Tensor, leave_out: torch.Tensor | None = None, history: Csr | None = None) -> torch.Tensor:
        """[N, dim] pooled history of `users` (flat); `leave_out[n]` is the item scored for row n.

        `history` replaces the train history the model was built with, e.g. by everything
        known before the test interaction; the weights never change with it.
        """
        known = Csr(self.history_indptr, self.history_indices) if history is None else history.torch()
        # Whole rows are gathered, so a causal cut can find its positive; rows are short on
        # average (7.5 items on the real data), and the window below bounds what is embedded.
        owner, items = known.gather(users)
        lengths = known.lengths(users)
        device = items.device
        pos = torch.arange(len(items), device=device) - (torch.cumsum(lengths, 0) - lengths)[owner]  # rank in the sequence
        end = lengths.clone()  # the pool is the `history` items before position `end`
        keep = torch.ones_like(items, dtype=torch.bool)
        if leave_out is not None:
            hit = items == leave_out[owner]
            if self.arch.causal:
                end[owner[hit]] = pos[hit]
            else:
                keep = ~hit
        back = end[owner] - 1 - pos  # 0 = the most recent pooled item
        keep &= (back >= 0) & (back < self.arch.history)
        owner, items, back = owner[keep], items[keep], back[keep]
        weight = torch.ones(len(items), device=device)
        if self.recency is not None:
            weight = torch.exp(self.recency[back])
        embedded = self.item_embedding(items) * weight[:, None]
        total = torch.zeros(len(users), self.arch.dim, device=device).index_add_(0, owner, embedded)
        norm = torch.zeros(len(users), device=device).index_add_(0, owner, weight).clamp(min=1e-6)
        return total / norm[:, None]

    def forward(self, users: torch.Tensor, leave_out: torch.Tensor | None = None, history: Csr | None = None) -> torch.Tensor:
        flat = users.reshape(-1)
        parts = []
        if self.embedding is not None:
            parts.append(self.embedding(flat))
        if self.pooled:
            parts.append(self.pool(flat, None if leave_out is None else leave_out.reshape(-1), history))
        return self.mlp(torch.cat(parts, dim=-1)).reshape(*users.shape, -1)


class ItemTower(_DataShapedBuffers):
    """Item id + brand embeddings, price features and a description bag, then an MLP."""

    inputs = ("id", "brand", "price", "description")  # in order; what `forward`'s `zero` can name

    def __init__(self, cfg: ModelConfig, features: ItemFeatures | None = None):
        super().__init__()
        dim = cfg.arch.dim
        self.item = nn.Embedding(cfg.num_items, dim)
        self.brand = nn.Embedding(cfg.num_brands, dim, padding_idx=0)
        self.price = nn.Linear(2, dim)
        self.text = nn.EmbeddingBag(cfg.num_tokens, dim, mode="mean", padding_idx=0)
        self.mlp = mlp(4 * dim, cfg.arch.hidden, dim, cfg.arch.dropout)
        n = cfg.num_items
        if features is None:  # shapes only; a checkpoint's state_dict fills them in
            features = ItemFeatures(np.zeros(n, np.int64), np.zeros(n, np.float32), np.ones(n, bool), Csr.empty(n))
        self.register_buffer("brand_of", torch.as_tensor(features.brand, dtype=torch.long))
        price = np.stack([features.log_price_z, features.price_missing], axis=1)
        self.register_buffer("price_of", torch.as_tensor(price, dtype=torch.float32))
        text = features.text.torch()
        self.register_buffer("text_indptr", text.indptr)
        self.register_buffer("text_indices", text.indices)

    def parts(self, items: torch.Tensor, zero: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
        """Each input's embedding of `items`, in `inputs` order; those named in `zero` zeroed (ablations)."""
        flat_items = items.reshape(-1)
        owner, tokens = Csr(self.text_indptr, self.text_indices).gather(flat_items)
        offsets = torch.searchsorted(owner, torch.arange(len(flat_items), device=items.device))
        parts = {
            "id": self.item(items),
            "brand": self.brand(self.brand_of[items]),
            "price": self.price(self.price_of[items]),
            "description": self.text(tokens, offsets).reshape(*items.shape, -1),
        }
        return {name: p * 0 if name in zero else p for name, p in parts.items()}

    def forward(self, items: torch.Tensor, zero: tuple[str, ...] = ()) -> torch.Tensor:
        """Item embeddings; features named in `zero` (see `inputs`) are zeroed, for ablations."""
        return self.mlp(torch.cat(list(self.parts(items, zero).values()), dim=-1))


class IdPlusFeaturesItemTower(ItemTower):
    """The item id's embedding plus a linear layer (or MLP) over brand, price and description.

    Where items have no features (the real 2014 sample) this is the id tower plus one vector
    shared by every item; where they have them, they add to what the id learnt. Unlike the
    feature tower, the id's own vector is not multiplied by a layer: under small initial
    weights (`init: normal`) that product starts near zero and learns slowly (docs/user_tower.md).
    """

    def __init__(self, cfg: ModelConfig, features: ItemFeatures | None = None):
        super().__init__(cfg, features)
        self.mlp = mlp(3 * cfg.arch.dim, cfg.arch.hidden, cfg.arch.dim, cfg.arch.dropout)  # brand, price, description

    def forward(self, items: torch.Tensor, zero: tuple[str, ...] = ()) -> torch.Tensor:
        parts = self.parts(items, zero)
        return parts.pop("id") + self.mlp(torch.cat(list(parts.values()), dim=-1))


class IdItemTower(nn.Module):
    """The item id's embedding alone, as SASRec's item table: one learned vector per item, no layer after it.

    Where items have no brand, price or description (the real 2014 sample), the feature
    tower's linear layer over [id, 0, 0, 0] only multiplies one small factor by another:
    with small initial weights (`init: normal`) both start near zero and learn slowly.
    """

    inputs = ("id",)

    def __init__(self, cfg: ModelConfig, features: ItemFeatures | None = None):
        super().__init__()
        self.item = nn.Embedding(cfg.num_items, cfg.arch.dim)

    def forward(self, items: torch.Tensor, zero: tuple[str, ...] = ()) -> torch.Tensor:
        """Item embeddings; zeroed when `zero` names "id" (the ablation's "no input")."""
        embedded = self.item(items)
        return embedded * 0 if "id" in zero else embedded


ITEM_TOWERS = {"features": ItemTower, "id": IdItemTower, "id_plus_features": IdPlusFeaturesItemTower}


START = -1  # the attention tower's first token of every sequence: "nothing chosen yet" (0 is padding)


@dataclass
class Sequences:
    """Chunks of users' train sequences for the attention tower, and where each row's output is.

    `tokens[c]` is a chunk of `[START, item 1, item 2, ...]` (0 = padding past a sequence's end);
    row n's user embedding is the tower's output at `tokens[chunk[n], column[n]]`: what the
    user had chosen up to that token, which predicts the next item.
    """

    tokens: torch.Tensor  # [chunks, history]
    chunk: torch.Tensor  # [rows]
    column: torch.Tensor  # [rows]


class BiasedLayer(nn.TransformerEncoderLayer):
    """A Transformer block that always takes the plain path, which adds float masks to the logits.

    Outside training `nn.TransformerEncoderLayer` takes a fused fast path that reads a float mask
    as a boolean one (any value but 0 masked), which breaks a learned bias; the weights and the
    arithmetic of the plain path are the parent's own, pre-norm or post-norm.
    """

    def forward(self, src: torch.Tensor, src_mask: torch.Tensor | None = None,
                src_key_padding_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        if self.norm_first:
            x = src + self._sa_block(self.norm1(src), src_mask, src_key_padding_mask, is_causal=is_causal)
            return x + self._ff_block(self.norm2(x))
        x = self.norm1(src + self._sa_block(src, src_mask, src_key_padding_mask, is_causal=is_causal))
        return self.norm2(x + self._ff_block(x))


@dataclass(frozen=True)
class BlockLayout:
    """Where an attention tower's layer norms sit, and its feed-forward sublayer."""

    norm_first: bool  # a norm before each sublayer (and one on the output) | after each residual sum
    activation: str
    feedforward: int  # the feed-forward's width, per dim
    input_norm: bool  # a norm on item + position embeddings, before the blocks
    output_layer: bool  # a linear layer (or MLP, `model.hidden`) after the blocks | the blocks' output is the user
    inner_dropout: bool  # dropout inside the feed-forward, after its activation (beside those after each sublayer)


BLOCKS = {"pre_norm": BlockLayout(norm_first=True, activation="relu", feedforward=2, input_norm=False, output_layer=True,
                                  inner_dropout=True),
          # RecBole's SASRec (the reference implementation's layout, with GELU): post-norm, 4x, a norm on the
          # input, no dropout inside the feed-forward, and the last block's output is the user, with no layer
          # after it: a linear layer at SASRec's N(0, 0.02) shrank the user vector about 6x and the whole
          # tower learnt that much slower (docs/user_tower.md)
          "sasrec": BlockLayout(norm_first=False, activation="gelu", feedforward=4, input_norm=True, output_layer=False,
                                inner_dropout=False)}


class AttentionTower(_DataShapedBuffers):
    """Causal self-attention over the item tower's embeddings of the user's last `history` items (SASRec).

    A user's sequence is `[START, i1, i2, ...]` in time order, with a learned embedding per
    position; `layers` Transformer blocks (their layout: `BLOCKS`), each token attending to
    itself and the tokens before it; the output at a token is the user after it. In evaluation a user is the
    output at the last of the last `history` tokens; in training whole sequences go through
    once (`Sequences`), every token's output predicting the next item.
    """

    EMBED_ROWS = 2048  # users per pass outside training, sorted by their window's length

    def __init__(self, cfg: ModelConfig, item_tower: ItemTower | IdItemTower, history: Csr | None = None):
        super().__init__()
        arch = self.arch = cfg.arch
        self.item_tower = item_tower  # shared: the history is embedded as the catalogue is
        self.start = nn.Parameter(torch.zeros(arch.dim))
        # a dense table (not nn.Embedding): lazy_adam gives embedding modules sparse gradients, and all
        # positions are used in every step
        self.position = nn.Parameter(torch.randn(arch.history, arch.dim) * 0.02)
        layout = BLOCKS[arch.block]
        layer = BiasedLayer if arch.recency_bias else nn.TransformerEncoderLayer
        block = layer(arch.dim, arch.heads, dim_feedforward=layout.feedforward * arch.dim,
                      dropout=arch.attention_dropout, activation=layout.activation, batch_first=True,
                      norm_first=layout.norm_first)
        if not layout.inner_dropout:
            block.dropout = nn.Identity()  # the one between the feed-forward's two layers (dropout1/2 stay)
        self.blocks = nn.TransformerEncoder(block, arch.layers, enable_nested_tensor=False)
        self.input_norm = nn.LayerNorm(arch.dim) if layout.input_norm else nn.Identity()
        self.norm = nn.LayerNorm(arch.dim) if layout.norm_first else nn.Identity()  # post-norm blocks end in one
        self.mlp = mlp(arch.dim, arch.hidden, arch.dim, arch.dropout) if layout.output_layer else nn.Identity()
        self.recency = nn.Parameter(torch.zeros(arch.history)) if arch.recency_bias else None
        self.input_dropout = nn.Dropout(arch.input_dropout)  # SASRec drops out its input embeddings too
        history = (history or Csr.empty(cfg.num_users)).torch()  # empty: a checkpoint's state_dict fills it in
        self.register_buffer("history_indptr", history.indptr)
        self.register_buffer("history_indices", history.indices)

    def sequence_length(self) -> int:
        """Tokens per chunk of the whole sequences this tower trains on (`Sequences`)."""
        return self.arch.history

    def own_parameters(self) -> list[nn.Parameter]:
        """This tower's weights without the item tower it shares: they learn at `train.attention_lr`."""
        shared = {id(p) for p in self.item_tower.parameters()}
        return [p for p in self.parameters() if id(p) not in shared]

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        """[n, T, dim] outputs of token sequences [n, T] (START, items, 0 padding at the end)."""
        return self.attend(self.embed_tokens(tokens), tokens)

    def embed_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """[n, T, dim] the blocks' inputs: item embeddings (START's own) plus positions, the input norm, dropout."""
        # each distinct item through the item tower once (a window names popular items many times);
        # index_select's backward adds rows in a fixed order (see TwoTower.embed_items)
        distinct, where = torch.unique(tokens.clamp(min=0), return_inverse=True)
        x = self.item_tower(distinct).index_select(0, where.reshape(-1)).reshape(*tokens.shape, -1)
        x = torch.where((tokens == START)[..., None], self.start, x) + self.position[: tokens.shape[1]]
        return self.input_dropout(self.input_norm(x))

    def attend(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """The causal blocks over inputs `x` of `tokens` (padding 0 masked), then the output layer."""
        steps = tokens.shape[1]
        later = torch.triu(torch.ones(steps, steps, dtype=torch.bool, device=tokens.device), 1)
        if self.recency is None:
            x = self.blocks(x, mask=later, src_key_padding_mask=tokens == 0, is_causal=True)
        else:  # float masks are added to the logits: the learned bias of each distance, -inf after the query
            step = torch.arange(steps, device=tokens.device)
            bias = self.recency[(step[:, None] - step).clamp(min=0)].masked_fill(later, float("-inf"))
            padding = torch.zeros(tokens.shape, device=tokens.device).masked_fill(tokens == 0, float("-inf"))
            x = self.blocks(x, mask=bias, src_key_padding_mask=padding)
        return self.mlp(self.norm(x))

    # passes per doubling of width in `encode_by_width` (a pass pads its rows by under 42%); measured on
    # the real data's epoch: one pass at full width 33 s, 1 step 21.3 s, 2 steps 21.1 s, 3 steps 25.9 s
    WIDTH_STEPS = 2

    def encode_by_width(self, tokens: torch.Tensor) -> torch.Tensor:
        """`encode`'s outputs (zeros past each row's end), rows of alike width through the blocks together.

        A row's width is its tokens before the padding; a pass is cut to its widest row, so a
        batch of short and long chunks costs about its tokens, not rows x the longest. The
        item tower runs once for the whole batch.
        """
        x = self.embed_tokens(tokens)
        width = (tokens != 0).sum(1)
        bucket = torch.floor(torch.log2(width.clamp(min=1).double()) * self.WIDTH_STEPS)
        order = torch.argsort(bucket, stable=True)
        out = torch.zeros_like(x)
        _, counts = torch.unique_consecutive(bucket[order], return_counts=True)
        for rows in torch.split(order, counts.tolist()):
            w = int(width[rows].max())
            out[rows, :w] = self.attend(x[rows, :w], tokens[rows, :w])
        return out

    def windows(self, users: torch.Tensor, history: Csr, cut_at: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Each user's last `history` tokens of `[START, their items...]` (before `cut_at[n]`, when given), and the last one's column."""
        owner, items = history.gather(users)
        lengths = history.lengths(users)
        rank = torch.arange(len(items), device=items.device) - (torch.cumsum(lengths, 0) - lengths)[owner]
        end = lengths.clone()  # items before position `end` are known
        if cut_at is not None:
            hit = items == cut_at[owner]
            end[owner[hit]] = rank[hit]
        size = self.arch.history
        first = (end + 1 - size).clamp(min=0)  # the window's first token (token 0 = START, token p + 1 = item p)
        column = rank + 1 - first[owner]
        keep = (rank < end[owner]) & (column >= 0)
        tokens = torch.zeros(len(users), size, dtype=torch.long, device=users.device)
        tokens[owner[keep], column[keep]] = items[keep]
        tokens[first == 0, 0] = START
        return tokens, (end + 1).clamp(max=size) - 1

    def forward(self, users: torch.Tensor, leave_out: torch.Tensor | None = None, history: Csr | None = None,
                sequences: Sequences | None = None) -> torch.Tensor:
        if sequences is not None:
            return self.encode_by_width(sequences.tokens)[sequences.chunk, sequences.column]
        known = Csr(self.history_indptr, self.history_indices) if history is None else history.torch()
        tokens, last = self.windows(users, known, leave_out)
        # most users are short: rows of alike length go through together, cut to their own longest
        # (causal attention: padding after a row's last token never changes its output)
        order = torch.argsort(last)
        out = torch.empty(len(users), self.arch.dim, device=users.device)
        for rows in torch.split(order, self.EMBED_ROWS) if len(users) else ():
            width = int(last[rows[-1]]) + 1
            out[rows] = self.encode(tokens[rows, :width])[torch.arange(len(rows), device=users.device), last[rows]]
        return out


USER_TOWERS = {"pool": lambda cfg, items, history: UserTower(cfg, items.item, history),
               "attention": lambda cfg, items, history: AttentionTower(cfg, items, history)}


class TwoTower(nn.Module):
    """User and item towers; `score` turns their embeddings into logits."""

    def __init__(self, cfg: ModelConfig, features: ItemFeatures | None = None, history: Csr | None = None):
        super().__init__()
        self.config = cfg
        self.item_tower = ITEM_TOWERS[cfg.arch.item_tower](cfg, features)
        self.user_tower = USER_TOWERS[cfg.arch.user_tower](cfg, self.item_tower, history)

    def forward(
        self, users: torch.Tensor, items: torch.Tensor, positives: torch.Tensor | None = None,
        sequences: Sequences | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings of `users` and `items` for training.

        `positives` (default: `items`) is the positive each row belongs to: a user's history is
        cut at it (see UserTower), so a negative sees the same history as its positive. With
        `sequences` (attention tower) the users' whole sequences go through the tower at once.
        """
        leave_out = items if positives is None else positives
        return self.embed_users(users, leave_out=leave_out, sequences=sequences), self.embed_items(items)

    def embed_users(self, users: torch.Tensor, leave_out: torch.Tensor | None = None, history: Csr | None = None,
                    sequences: Sequences | None = None) -> torch.Tensor:
        """User embeddings; `history` (default: the train history) is what the users are known to have chosen."""
        u = (self.user_tower(users, leave_out, history) if sequences is None
             else self.user_tower(users, leave_out, history, sequences))
        return F.normalize(u, dim=-1) if self.config.arch.normalize else u

    def sequence_length(self) -> int:
        """Tokens per chunk when the user tower trains on whole sequences (attention), else 0 (one positive at a time)."""
        return self.user_tower.sequence_length()

    def embed_items(self, items: torch.Tensor, zero: tuple[str, ...] = ()) -> torch.Tensor:
        """Item embeddings of any shape of ids; each distinct item goes through the tower once.

        A batch names popular items many times (positives, negatives, in-batch columns): the
        tower then runs on the distinct ones, and its embedding tables get one gradient row
        per item, not one per mention, which is what made coalescing sparse gradients costly.
        The mentions are gathered with `index_select`: its backward adds rows in a fixed order,
        where `i[where]`'s backward adds them with atomics across threads (results that differ
        run to run in the last bits) and 4x slower.
        """
        distinct, where = torch.unique(items, return_inverse=True)
        i = self.item_tower(distinct, zero)
        i = F.normalize(i, dim=-1) if self.config.arch.normalize else i
        return i.index_select(0, where.reshape(-1)).reshape(*where.shape, i.shape[-1])

    def logit_scale(self) -> float:
        """Scores are dot products times this (1 / temperature for normalised embeddings)."""
        return 1.0 / self.config.arch.temperature if self.config.arch.normalize else 1.0

    def score(self, users: torch.Tensor, items: torch.Tensor, positives: torch.Tensor | None = None) -> torch.Tensor:
        """Training logits of (user, item) pairs, elementwise (`positives` as in `forward`)."""
        u, i = self(users, items, positives)
        return (u * i).sum(-1) * self.logit_scale()

    def _tables(self) -> list[nn.Embedding | nn.EmbeddingBag]:
        """The embedding tables: ids, brands, tokens (whatever the towers hold)."""
        return [m for m in self.modules() if isinstance(m, (nn.Embedding, nn.EmbeddingBag))]

    def sparse_tables(self) -> list[nn.Parameter]:
        """The weights of the embedding tables that get sparse gradients (set by `configure_optimizers`)."""
        return [m.weight for m in self._tables() if m.sparse]

    def configure_optimizers(self, params: TrainParams) -> Adam:
        """Adam over three groups of weights, each at its own rate; lazy_adam: sparse embedding tables.

        With dense gradients each step writes the whole item and token tables (100k items x 128:
        most of a step's time at scale); sparse gradients touch only the rows a batch used. Three
        kinds of weight learn at three rates: the tables at `lr` (0.02: a row moves only in the
        batches that name it), the attention tower's own weights at `attention_lr` (its
        Transformer blocks barely learn at 0.02), every other dense weight (the towers' linear
        layers, price, recency weights) at `dense_lr` (0: `lr`, as the pool tower's defaults were
        chosen; the attention tower prefers 0.001, docs/user_tower.md).
        """
        lazy = params.optimizer == "lazy_adam"
        embeddings = self._tables()
        for embedding in embeddings:
            embedding.sparse = lazy
        kind = {id(m.weight): "tables" for m in embeddings} | {id(p): "attention" for p in self.user_tower.own_parameters()}
        rates = {"tables": params.lr, "dense": params.dense_lr or params.lr, "attention": params.attention_lr}
        groups = [{"name": name, "params": [p for p in self.parameters() if kind.get(id(p), "dense") == name], "lr": rate}
                  for name, rate in rates.items()]
        return Adam([g for g in groups if g["params"]], lr=params.lr, weight_decay=0.0 if lazy else params.weight_decay)

    def checkpoint(self) -> dict:
        """A `torch.load(weights_only=True)`-safe dict: config plus weights and feature buffers."""
        return {"config": self.config.to_dict(), "state_dict": self.state_dict()}

    @classmethod
    def from_checkpoint(cls, ckpt: dict) -> "TwoTower":
        model = cls(ModelConfig.from_dict(ckpt["config"]))
        model.load_state_dict(ckpt["state_dict"])
        return model


def _normal_init(model: nn.Module) -> None:
    """Every linear, attention projection and embedding weight N(0, 0.02), biases 0 (SASRec's, BERT's)."""
    for module in model.modules():
        if isinstance(module, nn.LayerNorm):
            continue  # layer norms keep weight 1, bias 0
        for name, p in module.named_parameters(recurse=False):
            if name.endswith("weight"):
                nn.init.normal_(p, std=0.02)
            elif name.endswith("bias"):
                nn.init.zeros_(p)
        if getattr(module, "padding_idx", None) is not None:
            with torch.no_grad():
                module.weight[module.padding_idx] = 0


INITS = {"torch": lambda model: None, "normal": _normal_init}


def build(prepared: Prepared, params: ModelParams, seed: int) -> TwoTower:
    """The model `params` describe over a prepared folder's encoders, features and train histories.

    The initial weights come from `seed` (torch's global generator is seeded with it), so
    every process and every caller starts from the same weights.
    """
    torch.manual_seed(seed)
    cfg = ModelConfig(**prepared.sizes, arch=params)
    history = prepared.history(("train",)) if params.history else None
    model = TwoTower(cfg, prepared.item_features(), history)
    INITS[params.init](model)
    return model


def load_checkpoint(path: str | Path) -> dict:
    """The checkpoint `train` wrote (config, weights, sampler), loaded with `weights_only=True`."""
    if not Path(path).is_file():
        raise GamerecError(f"{path}: no trained model; run `dvc repro train` first")
    return torch.load(path, weights_only=True)
