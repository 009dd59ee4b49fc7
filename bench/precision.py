"""Exact ranking at float32 against bfloat16 on a trained pipeline: time per user, identical ranks, near-tie bands.

    python bench/precision.py --workdir /tmp/gamerec-bench-5m --users 20000

`--workdir` is a folder where the pipeline ran (its params.yaml, data/prepared and model,
e.g. `bench/run.py --workdir`). A seeded sample of its test users is ranked over the whole
catalogue at each precision (`evaluate.precision`), and the report says whether ranks and top
lists are identical (they must be: both paths are exact) and, for the bfloat16 path, how
many items lie within the proven error band of each user's target: the items it must score
again in float64, which is what decides whether it can be faster than float32.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

from gamerec.evaluation import model_scorer
from gamerec.model import TwoTower, load_checkpoint
from gamerec.prepared import Prepared
from gamerec.retrieval import error_bound, rank_holdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True, help="a folder where the pipeline ran")
    parser.add_argument("--users", type=int, default=20_000, help="test users ranked (a seeded sample)")
    parser.add_argument("--band-users", type=int, default=2_000, help="of those, users whose bands are counted")
    args = parser.parse_args()
    os.chdir(args.workdir)  # the stages' paths are relative to the pipeline's folder
    from gamerec import config
    from gamerec.stage import paths

    params, where = config.load(config.EvaluateParams, "evaluate"), paths()
    torch.set_grad_enabled(False)
    model = TwoTower.from_checkpoint(load_checkpoint(where.model)).eval()
    prepared = Prepared(where.prepared)
    holdout = prepared.holdout("test", ("train", "val")).sample(args.users, params.seed)
    embed_users, item_emb = model_scorer(model)
    user_emb = embed_users(holdout.users, prepared.history(("train", "val")))
    report, results = {"users": len(holdout.users), "items": len(item_emb) - 1}, {}
    for precision in ("float32", "bfloat16"):
        print(f"precision: ranking at {precision} ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        results[precision] = rank_holdout(holdout, user_emb, item_emb, 10, params.memory_mb, precision=precision)
        report[f"{precision}_us_per_user"] = round(1e6 * (time.perf_counter() - start) / len(holdout.users), 1)
    (r32, t32), (r16, t16) = results["float32"], results["bfloat16"]
    report["identical"] = bool(torch.equal(r32, r16) and torch.equal(t32, t16))
    first = holdout.targets[1][holdout.targets[0][:-1]]  # each user's first held-out item
    report["bfloat16_band"] = band(user_emb[: args.band_users], item_emb, first[: args.band_users])
    json.dump(report, sys.stdout, indent=2)
    print()


def band(user_emb: torch.Tensor, item_emb: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """Other items whose exact score lies within the bfloat16 path's reach of the target's (one target per user)."""
    per_user, per_item = error_bound(user_emb, item_emb, "bfloat16")
    exact = user_emb.double() @ item_emb.double().T
    mine = exact.gather(1, targets[:, None].long())
    reach = per_user[:, None] * (per_item[targets.long()][:, None] + per_item[None, :])
    inside = ((exact - mine).abs() <= reach).sum(1).double() - 1  # the target itself is inside
    return {"mean": round(float(inside.mean()), 1), "median": float(inside.median()),
            "share_of_users_crowded": round(float((inside > 0).double().mean()), 3)}


if __name__ == "__main__":
    main()
