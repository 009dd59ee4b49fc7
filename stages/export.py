"""Stage `export`: item and user vectors, the faiss index and its measured quality (params `export`)."""

import sys
from pathlib import Path

from gamerec import config, profile
from gamerec.devices import resolve_device
from gamerec.export import build_and_measure, embed, served_kind, write_serving
from gamerec.io import file_md5, write_json
from gamerec.model import TwoTower, load_checkpoint
from gamerec.prepared import Prepared
from gamerec.stage import paths, run_stage


def main() -> None:
    params = config.load(config.ExportParams, "export")
    where = paths()
    checkpoint = load_checkpoint(where.model)
    device = resolve_device(params.device, "export.device")
    catalogue = embed(TwoTower.from_checkpoint(checkpoint).to(device), Prepared(where.prepared), params.known)
    indexes, report = build_and_measure(catalogue, params, device)
    kind = served_kind(params, len(catalogue.items))
    write_serving(Path(where.serving), catalogue, indexes[kind], {
        "model_version": file_md5(Path(where.model)),  # as dvc.lock records the checkpoint
        "sampler": checkpoint.get("sampler"),
        "ef_search": params.ef_search,
        "hnsw_m": params.hnsw_m,
        "ef_construction": params.ef_construction,
        "known": params.known,
    })
    timings = {kind: report[kind].pop("timings") for kind in ("flat", "hnsw")}  # they vary: stderr and the profile only
    write_json(where.export_report, {"served": kind, "items": len(catalogue.items), "k": params.k, **report})
    profile.record("export", **{f"{kind}_{name}": value for kind, t in timings.items() for name, value in t.items()})
    k = params.k
    print(f"export: {len(catalogue.items)} items, {len(catalogue.users)} users; serving a {kind} index; "
          f"recall@{k} against exact search: flat {report['flat'][f'recall@{k}']:.4f}, "
          f"hnsw {report['hnsw'][f'recall@{k}']:.4f} ({report['query_users']} test users)")
    print(f"export: query p50 flat {timings['flat']['query_ms_p50']:.3f} ms, hnsw {timings['hnsw']['query_ms_p50']:.3f} ms; "
          f"HNSW build {timings['hnsw']['build_seconds']:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    run_stage(main)
