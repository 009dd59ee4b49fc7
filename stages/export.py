"""Stage `export`: item and user vectors, the faiss index and its measured quality (params `export`)."""

from pathlib import Path

import torch

from gamerec import config
from gamerec.cli import run_stage
from gamerec.errors import GamerecError
from gamerec.export import build_and_measure, embed, served_kind, write_serving
from gamerec.io import file_md5, write_json
from gamerec.model import TwoTower

PREPARED = Path("data/prepared")
MODEL = Path("models/model.pt")
MODELS = Path("models")  # items.parquet, users.parquet, index.faiss, serving.json beside model.pt
METRICS = Path("metrics/export.json")


def main() -> None:
    params = config.load(config.ExportParams, "export")
    if not MODEL.is_file():
        raise GamerecError(f"{MODEL}: no trained model; run `dvc repro train` first")
    checkpoint = torch.load(MODEL, weights_only=True)
    catalogue = embed(TwoTower.from_checkpoint(checkpoint), PREPARED, params.known)
    indexes, report = build_and_measure(catalogue, params)
    kind = served_kind(params, len(catalogue.items))
    write_serving(MODELS, catalogue, indexes[kind], {
        "model_version": file_md5(MODEL),  # as dvc.lock records models/model.pt
        "sampler": checkpoint.get("sampler"),
        "ef_search": params.ef_search,
        "hnsw_m": params.hnsw_m,
        "ef_construction": params.ef_construction,
        "known": params.known,
    })
    write_json(METRICS, {"served": kind, "items": len(catalogue.items), "k": params.k, **report})
    k = params.k
    print(f"export: {len(catalogue.items)} items, {len(catalogue.users)} users; serving a {kind} index; "
          f"recall@{k} against exact search: flat {report['flat'][f'recall@{k}']:.4f}, "
          f"hnsw {report['hnsw'][f'recall@{k}']:.4f} ({report['query_users']} test users); query p50 "
          f"flat {report['flat']['query_ms_p50']:.3f} ms, hnsw {report['hnsw']['query_ms_p50']:.3f} ms")


if __name__ == "__main__":
    run_stage(main)
