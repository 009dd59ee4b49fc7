"""From a trained model to what serving reads: embeddings, a faiss index, and how good the index is.

The `export` stage writes one folder (`paths.serving`), all read by `gamerec.recommender`:

- `items.parquet`: asin, title, brand, price, popularity (reviews in the known splits),
  vector. Row r is the model's item r + 1 (item 0, "unknown", is never served).
- `users.parquet`: user_id, known (the user's items as items.parquet rows, oldest first):
  never recommended back.
- `users.npy`: row u is user u's vector, the user tower over everything known of the user.
  A plain array, memory-mapped by readers: a million users' vectors are gigabytes, and one
  query reads one row.
- `user_tower.npz` or `user_tower.pt`: the user tower itself, so that serving can embed any
  list of games (`gamerec.tower`: NumPy arrays for the pooling tower, the checkpoint for any
  other; none for a tower that needs the user id).
- `index.faiss`: the served index over the item vectors, flat or HNSW.
- `serving.json`: the model version (the md5 of the checkpoint, as in dvc.lock) and how the
  rest was made.

The folder is written whole and renamed into place, so a reader never sees half an export.

Vectors are computed once here, so serving needs no PyTorch model, only faiss and numpy.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import pandas as pd
import torch

from gamerec import ann, retrieval
from gamerec.config import ExportParams
from gamerec.csr import Csr
from gamerec.errors import GamerecError
from gamerec.io import atomic_path, write_json, write_table
from gamerec.model import BLOCKS, AttentionTower, TwoTower, UserTower
from gamerec.prepared import Prepared
from gamerec.recommender import FILES
from gamerec.tower import FILES as TOWER_FILES

EMBED_CHUNK = 1 << 16  # users embedded at once
LATENCY_QUERIES = 1000  # single-user queries timed per index kind


@dataclass
class Catalogue:
    """Everything the service serves, as arrays; rows of `items` are index rows."""

    items: pd.DataFrame  # asin, title, brand, platform, price, popularity
    item_vectors: np.ndarray  # [items, dim] float32
    users: pd.DataFrame  # user_id
    user_vectors: np.ndarray  # [users, dim] float32
    known: Csr  # row u: items.parquet rows user u has, oldest first
    test_users: np.ndarray  # users rows with a test interaction: the queries the index is measured on
    user_tower: tuple[str, dict]  # gamerec.tower's kind, and what its file holds


def pool_arrays(model: TwoTower) -> dict[str, np.ndarray]:
    """The pooling user tower as the arrays `tower.NumpyTower` evaluates (item rows shifted to items.parquet's)."""
    tower, arch = model.user_tower, model.config.arch
    recency = tower.recency if tower.recency is not None else torch.zeros(arch.history)  # exp(0) = 1: a plain mean
    weights = {"embedding": tower.item_embedding.weight[1:], "recency": recency}
    linears = [layer for layer in tower.mlp if isinstance(layer, torch.nn.Linear)]
    for i, layer in enumerate(linears):
        weights[f"weight_{i}"], weights[f"bias_{i}"] = layer.weight, layer.bias
    flags = {"normalize": arch.normalize, "history": arch.history, "user_id": arch.user_id}
    return {**{name: w.detach().numpy().astype(np.float32) for name, w in weights.items()},
            **{name: np.array(flag) for name, flag in flags.items()}}


def attention_arrays(model: TwoTower) -> dict[str, np.ndarray]:
    """The attention user tower as the arrays `tower.NumpyAttentionTower` evaluates: its weights under their names."""
    tower, arch = model.user_tower, model.config.arch
    layout = BLOCKS[arch.block]
    items = model.item_tower(torch.arange(1, model.config.num_items))  # the blocks' inputs, items.parquet rows
    weights = {"items": items} | {name: w for name, w in tower.state_dict().items()
                                  if not name.startswith(("item_tower.", "history_"))}
    flags = {"normalize": arch.normalize, "history": arch.history, "heads": arch.heads, "layers": arch.layers,
             "norm_first": layout.norm_first, "input_norm": layout.input_norm, "activation": layout.activation,
             "eps": tower.blocks.layers[0].norm1.eps}
    return {**{name: w.detach().cpu().numpy().astype(np.float32) for name, w in weights.items()},
            **{name: np.array(flag) for name, flag in flags.items()}}


# user towers serving evaluates in NumPy, and their kind; any other goes as a checkpoint
NUMPY_TOWERS = {UserTower: ("numpy", pool_arrays), AttentionTower: ("numpy_attention", attention_arrays)}
WRITE_TOWER = {"numpy": lambda path, arrays: np.savez(path, **arrays),
               "numpy_attention": lambda path, arrays: np.savez(path, **arrays),
               "torch": lambda path, checkpoint: torch.save(checkpoint, path)}


def user_tower(model: TwoTower) -> tuple[str, dict]:
    """How serving embeds a list of games (see gamerec.tower): the kind, and what its file holds."""
    if model.config.arch.user_id:  # a list of games has no user id
        return "none", {}
    numpy = NUMPY_TOWERS.get(type(model.user_tower))
    if numpy is None:
        return "torch", model.checkpoint()
    kind, arrays = numpy
    return kind, arrays(model)


@torch.no_grad()
def embed(model: TwoTower, prepared: Prepared, known: str) -> Catalogue:
    """Item and user vectors of the model (on its device); a user is known by the interactions of the `known` splits."""
    model.eval()
    device = next(model.parameters()).device
    items, users = prepared.items, prepared.users
    num_users, num_items = model.config.num_users, model.config.num_items
    if (prepared.num_items, prepared.num_users) != (num_items, num_users):
        raise GamerecError(
            f"{prepared.folder}: {prepared.num_items} items and {prepared.num_users} users, but the model was "
            f"trained on {num_items} and {num_users}; run `dvc repro` so that train and export see the same prepared data"
        )
    splits = tuple(known.split("+"))
    history = prepared.history(splits)
    item_vectors = model.embed_items(torch.arange(1, num_items, device=device)).cpu().numpy()
    user_ids = torch.arange(1, num_users, device=device)
    user_vectors = torch.cat([
        model.embed_users(user_ids[start : start + EMBED_CHUNK], history=history).cpu()
        for start in range(0, len(user_ids), EMBED_CHUNK)
    ]).numpy() if len(user_ids) else np.zeros((0, model.config.arch.dim), np.float32)
    popularity = np.bincount(prepared.split(*splits).item.to_numpy(), minlength=num_items)
    # row 0 (unknown) of the model's users and items is never served: drop it, shift ids by one
    indptr = history.indptr[1:] - history.indptr[1]
    test_users = np.unique(prepared.split("test").user.to_numpy()) - 1
    return Catalogue(
        items=pd.DataFrame({
            "asin": items.item_id.to_numpy()[1:],
            "title": items.title.to_numpy()[1:],
            "brand": items.brand_name.to_numpy()[1:],
            "platform": items.platform.to_numpy()[1:],
            "price": np.where(items.price_missing.to_numpy(), np.nan, items.price.to_numpy())[1:],
            "popularity": popularity[1:].astype(np.int64),
        }),
        item_vectors=np.ascontiguousarray(item_vectors, dtype=np.float32),
        users=pd.DataFrame({"user_id": users.user_id.to_numpy()[1:]}),
        user_vectors=np.ascontiguousarray(user_vectors, dtype=np.float32),
        known=Csr(indptr.astype(np.int64), history.indices[history.indptr[1]:].astype(np.int64) - 1),
        test_users=test_users.astype(np.int64),
        user_tower=user_tower(model),
    )


def served_kind(params: ExportParams, num_items: int) -> str:
    """The index `export.index` asks for; `auto` is exact up to `flat_max_items` items, HNSW above."""
    if params.index != "auto":
        return params.index
    return "flat" if num_items <= params.flat_max_items else "hnsw"


def exact_top_k(catalogue: Catalogue, users: np.ndarray, k: int, memory_mb: float = 512,
                device: torch.device | str = "cpu") -> np.ndarray:
    """The evaluation's own ranking (retrieval.top_k) of `users`: their known items excluded, -1 padded."""
    # the evaluation's item 0 is "unknown" and always hidden: give it a zero row, shift back after
    items = torch.from_numpy(np.vstack([np.zeros((1, catalogue.item_vectors.shape[1]), np.float32),
                                        catalogue.item_vectors]))
    indptr, indices = catalogue.known.select(users)
    top = retrieval.top_k(torch.from_numpy(catalogue.user_vectors[users]), items,
                          (torch.from_numpy(indptr), torch.from_numpy(indices + 1)), k, memory_mb,
                          device=device).numpy() - 1
    have = len(catalogue.items) - np.diff(indptr)  # fewer than k left to recommend: the rest is padding
    top[np.arange(top.shape[1])[None, :] >= have[:, None]] = -1
    if top.shape[1] < k:
        top = np.pad(top, ((0, 0), (0, k - top.shape[1])), constant_values=-1)
    return top


def recall_against(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean over users of |found ∩ exact| / |exact| (padding -1 ignored); users with nothing to find skipped."""
    valid = exact >= 0
    hits = ((found[:, :, None] == exact[:, None, :]) & valid[:, None, :]).any(1).sum(1)
    size = valid.sum(1)
    return float((hits[size > 0] / size[size > 0]).mean()) if (size > 0).any() else 1.0


def query_latency_ms(index, catalogue: Catalogue, users: np.ndarray, k: int, ef_search: int) -> dict[str, float]:
    """p50 and p99 wall time of one user's query (search + excluding their items), in ms."""
    times = []
    for user in users[:LATENCY_QUERIES]:
        query = catalogue.user_vectors[user : user + 1]
        exclude = catalogue.known.select(np.array([user]))  # as serving does: inside the search
        start = time.perf_counter()
        ann.search(index, query, k, exclude, ef_search)
        times.append(time.perf_counter() - start)
    ms = np.array(times) * 1000
    return {"query_ms_p50": round(float(np.percentile(ms, 50)), 4),
            "query_ms_p99": round(float(np.percentile(ms, 99)), 4)}


def build_and_measure(catalogue: Catalogue, params: ExportParams, device: torch.device | str = "cpu") -> tuple[dict, dict]:
    """Both index kinds over the items, and each one's recall@k against exact search and query latency.

    Recall is measured on (a seeded sample of `eval_users` of) the test users (all users if
    the data has no test split), against the evaluation's ranking code, so a flat index must
    score 1.0 and HNSW shows what the approximation loses. Both are measured whichever one
    is served.
    """
    rng = np.random.default_rng(params.seed)
    users = catalogue.test_users if len(catalogue.test_users) else np.arange(len(catalogue.user_vectors))
    if params.eval_users < len(users):
        users = np.sort(rng.choice(users, params.eval_users, replace=False))
    exact = exact_top_k(catalogue, users, params.k, device=device)
    indexes, report = {}, {}
    for kind in ann.KINDS:
        start = time.perf_counter()
        indexes[kind] = ann.build(catalogue.item_vectors, kind, params.hnsw_m, params.ef_construction)
        build_seconds = time.perf_counter() - start
        _, found = ann.search(indexes[kind], catalogue.user_vectors[users], params.k, catalogue.known.select(users),
                              params.ef_search)
        report[kind] = {
            f"recall@{params.k}": round(recall_against(found, exact), 6),
            "timings": {**query_latency_ms(indexes[kind], catalogue, users, params.k, params.ef_search),
                        "build_seconds": round(build_seconds, 3)},  # they vary from run to run
        }
    return indexes, {"query_users": len(users), **report}


def write_serving(folder: Path, catalogue: Catalogue, index, manifest: dict) -> None:
    """The serving folder (recommender.FILES), written whole and renamed into place; `manifest` goes to serving.json."""
    with atomic_path(folder) as tmp:
        tmp.mkdir()
        version, items, users, vectors, index_file = (tmp / name for name in FILES)
        write_table(items, catalogue.items, catalogue.item_vectors)
        write_table(users, catalogue.users, known=catalogue.known)
        np.save(vectors, catalogue.user_vectors)
        faiss.write_index(index, str(index_file))
        kind, tower = catalogue.user_tower
        if kind in WRITE_TOWER:
            WRITE_TOWER[kind](tmp / TOWER_FILES[kind], tower)
        write_json(version, {**manifest, "index": ann.kind_of(index), "items": len(catalogue.items),
                             "users": len(catalogue.users), "dim": int(catalogue.item_vectors.shape[1]),
                             "user_tower": kind})
