"""Stage `train`: fit the two-tower model on `data/negatives/${sampler}` (params `sampler`, `model`, `train`).

With `train.processes` > 1 this script starts torchrun on itself (one worker per process,
data-parallel); started by torchrun, it is a worker. Only rank 0 writes outputs.
"""

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import torch
from dvclive import Live

from gamerec import config, distributed, profile
from gamerec.cli import run_stage
from gamerec.errors import GamerecError
from gamerec.io import atomic_path, fingerprint, write_json
from gamerec.model import ModelConfig, TwoTower
from gamerec.samplers import read_negatives
from gamerec.training import Examples, Resume, fit, holdout, item_features, user_history

PREPARED = Path("data/prepared")
NEGATIVES = Path("data/negatives")
MODEL = Path("models/model.pt")
LIVE_DIR = Path("dvclive")
METRICS = Path("metrics/train.json")
STATE = Path("models/train_state.pt")  # end-of-epoch state of an unfinished run (not a DVC output)


def main() -> None:
    sampler = config.load_sampler()
    model_params = config.load(config.ModelParams, "model")
    params = config.load(config.TrainParams, "train")
    if not (PREPARED / "stats.json").is_file():
        raise GamerecError(f"{PREPARED}: prepared data not found; run `dvc repro prepare` first")
    if params.processes > 1 and not distributed.launched():
        distributed.resolve_device(params.device)  # a bad device is one line here, not one per worker
        distributed.launch(params.processes, __file__)
        return
    dist = distributed.init(params.device)
    try:
        with distributed.stoppable(dist):
            train(sampler, model_params, params, dist)
    finally:
        distributed.shutdown()


@contextmanager
def live_log(enabled: bool) -> Iterator[Live | None]:
    """DVCLive writing to a temporary folder renamed onto dvclive/ when training ends; None when disabled."""
    if not enabled:
        yield None
        return
    with atomic_path(LIVE_DIR) as tmp, Live(str(tmp), dvcyaml=False, save_dvc_exp=False) as live:
        yield live


def train(sampler: str, model_params: config.ModelParams, params: config.TrainParams, dist: distributed.Dist) -> None:
    stats = json.loads((PREPARED / "stats.json").read_text())
    frame, manifest = read_negatives(NEGATIVES / sampler)
    examples = Examples.from_frame(frame, manifest)
    interactions = pd.read_parquet(PREPARED / "interactions.parquet")
    val = holdout(interactions, "val").sample(params.val_users, params.seed)

    torch.manual_seed(params.seed)  # the initial weights, the same in every process
    cfg = ModelConfig.for_data(stats, **asdict(model_params))
    history = user_history(interactions, cfg.num_users) if cfg.history else None
    model = TwoTower(cfg, item_features(PREPARED, stats), history)
    made_from = {"sampler": sampler, "model": asdict(model_params), "train": asdict(params)}
    resume = Resume(STATE, fingerprint([PREPARED, NEGATIVES / sampler], made_from)) if params.resume else None
    with live_log(dist.is_main) as live:  # rank 0 logs; the other processes train beside it and write nothing

        def log_epoch(row: dict) -> None:
            for name, value in row.items():
                if name != "epoch":
                    live.log_metric(name, value)
            live.next_step()

        result = fit(model, examples, val, params, on_epoch=log_epoch if live else None,
                     progress=dist.is_main, resume=resume, dist=dist)
    if not dist.is_main:
        return
    model.load_state_dict(result.state_dict)
    summary = {
        "sampler": sampler,
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        f"val_recall@{params.k}": result.best_recall,
        "examples": len(examples),
    }  # no timings here: tracked outputs stay byte-identical across runs
    with atomic_path(MODEL) as tmp:
        torch.save({**model.checkpoint(), "sampler": sampler, "best_epoch": result.best_epoch}, tmp)
    write_json(METRICS, summary)
    STATE.unlink(missing_ok=True)  # finished: nothing left to resume
    profile.record("train", sampler=sampler, seconds=result.seconds, examples=len(examples),
                   positives_per_second=result.positives_per_second, processes=dist.world)
    print(f"train: {summary}; {result.seconds:.1f} s, {result.positives_per_second:.0f} positives/s (steady state)"
          + (f", {dist.world} processes" if dist.world > 1 else ""))


if __name__ == "__main__":
    run_stage(main)
