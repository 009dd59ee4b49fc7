"""Stage `export`: item and user vectors, the faiss index and its measured quality (params `export`)."""

import hashlib
import json
from pathlib import Path

import faiss
import torch

from gamerec import config
from gamerec.cli import run_stage
from gamerec.errors import GamerecError
from gamerec.export import build_and_measure, embed, served_kind, write_vectors
from gamerec.io import atomic_path, write_json
from gamerec.model import TwoTower

PREPARED = Path("data/prepared")
MODEL = Path("models/model.pt")
ITEMS = Path("models/items.parquet")
USERS = Path("models/users.parquet")
INDEX = Path("models/index.faiss")
MANIFEST = Path("models/serving.json")
METRICS = Path("metrics/export.json")


def md5(path: Path) -> str:
    """The file's md5, as DVC records it in dvc.lock: the model version every answer names."""
    digest = hashlib.md5()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def main() -> None:
    params = config.load(config.ExportParams, "export")
    if not MODEL.is_file():
        raise GamerecError(f"{MODEL}: no trained model; run `dvc repro train` first")
    checkpoint = torch.load(MODEL, weights_only=True)
    catalogue = embed(TwoTower.from_checkpoint(checkpoint), PREPARED, params.known)
    indexes, report = build_and_measure(catalogue, params)
    kind = served_kind(params, len(catalogue.items))
    with atomic_path(ITEMS) as tmp:
        write_vectors(tmp, catalogue.items, catalogue.item_vectors)
    with atomic_path(USERS) as tmp:
        write_vectors(tmp, catalogue.users, catalogue.user_vectors, known=catalogue.known)
    with atomic_path(INDEX) as tmp:
        faiss.write_index(indexes[kind], str(tmp))
    write_json(MANIFEST, {
        "model_version": md5(MODEL),
        "sampler": checkpoint.get("sampler"),
        "index": kind,
        "ef_search": params.ef_search,
        "known": params.known,
        "items": len(catalogue.items),
        "users": len(catalogue.users),
        "dim": int(catalogue.item_vectors.shape[1]),
    })
    write_json(METRICS, {"served": kind, "items": len(catalogue.items), "k": params.k, **report})
    k = params.k
    print(f"export: {len(catalogue.items)} items, {len(catalogue.users)} users; serving a {kind} index; "
          f"recall@{k} against exact search: flat {report['flat'][f'recall@{k}']:.4f}, "
          f"hnsw {report['hnsw'][f'recall@{k}']:.4f} ({report['query_users']} test users); query p50 "
          f"flat {report['flat']['query_ms_p50']:.3f} ms, hnsw {report['hnsw']['query_ms_p50']:.3f} ms")


if __name__ == "__main__":
    run_stage(main)
