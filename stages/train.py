"""Stage `train`: fit the two-tower model on the chosen sampler's negatives (params `sampler`, `model`, `train`).

With `train.processes` > 1 this script starts torchrun on itself (one worker per process,
data-parallel); started by torchrun, it is a worker. Only rank 0 writes outputs.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import torch
from dvclive import Live

from gamerec import config, distributed, model, profile, samplers
from gamerec.io import atomic_path, fingerprint, write_json
from gamerec.prepared import Prepared
from gamerec.stage import paths, run_stage
from gamerec.training import Examples, Resume, fit


def main() -> None:
    sampler = samplers.chosen()
    model_params = config.load(config.ModelParams, "model")
    params = config.load(config.TrainParams, "train")
    where = paths()
    prepared = Prepared(where.prepared)  # a missing folder is one line here, before any worker starts
    if params.processes > 1 and not distributed.launched():
        distributed.resolve_device(params.device)  # a bad device is one line here, not one per worker
        distributed.launch(params.processes, __file__)
        return
    dist = distributed.init(params.device)
    finished = False
    try:
        with distributed.stoppable(dist):
            train(prepared, sampler, model_params, params, where, dist)
            finished = True
    finally:
        distributed.shutdown(finished)


@contextmanager
def live_log(folder: str, enabled: bool) -> Iterator[Live | None]:
    """DVCLive writing to a temporary folder renamed onto `folder` when training ends; None when disabled."""
    if not enabled:
        yield None
        return
    with atomic_path(folder) as tmp, Live(str(tmp), dvcyaml=False, save_dvc_exp=False) as live:
        yield live


def train(prepared: Prepared, sampler: str, model_params: config.ModelParams, params: config.TrainParams,
          where: config.Paths, dist: distributed.Dist) -> None:
    negatives = Path(where.negatives) / sampler
    examples = Examples.from_frame(*samplers.read_negatives(negatives))
    val = prepared.holdout("val").sample(params.val_users, params.seed)
    two_tower = model.build(prepared, model_params, params.seed)  # the same initial weights in every process
    made_from = {"sampler": sampler, "model": asdict(model_params), "train": asdict(params)}
    resume = (Resume(Path(where.train_state), fingerprint([Path(where.prepared), negatives], made_from))
              if params.resume else None)
    with live_log(where.live, dist.is_main) as live:  # rank 0 logs; the other processes train beside it and write nothing

        def log_epoch(row: dict) -> None:
            live.step = row["epoch"]  # the curves' x is the epoch (1, 2, ...), as metrics/train.json's best_epoch
            for name, value in row.items():
                if name != "epoch":
                    live.log_metric(name, value)
            live.next_step()

        result = fit(two_tower, examples, val, params, on_epoch=log_epoch if live else None,
                     progress=dist.is_main, resume=resume, dist=dist)
    if not dist.is_main:
        return
    two_tower.load_state_dict(result.state_dict)
    recall = f"val_recall@{params.k}"
    # no timings in outputs: they stay byte-identical across runs
    metrics = {recall: round(result.best_recall, 6), "best_epoch": result.best_epoch}
    report = {**metrics, "sampler": sampler, "epochs_run": len(result.history), "examples": len(examples)}
    with atomic_path(where.model) as tmp:
        torch.save({**two_tower.checkpoint(), "sampler": sampler, "best_epoch": result.best_epoch}, tmp)
    write_json(where.train_metrics, metrics)
    write_json(where.train_report, report)
    Path(where.train_state).unlink(missing_ok=True)  # finished: nothing left to resume
    profile.record("train", sampler=sampler, seconds=result.seconds, seconds_to_best=result.seconds_to_best,
                   examples=len(examples), positives_per_second=result.positives_per_second, processes=dist.world)
    print(f"train: {sampler}, best epoch {result.best_epoch} of {len(result.history)}, {recall} "
          f"{result.best_recall:.4f}; {result.seconds:.1f} s ({result.seconds_to_best:.1f} s to the best epoch), "
          f"{result.positives_per_second:.0f} positives/s "
          "(steady state)" + (f", {dist.world} processes" if dist.world > 1 else ""))


if __name__ == "__main__":
    if distributed.launched():
        distributed.exit_worker(lambda: run_stage(main))  # a worker of torchrun
    else:
        run_stage(main)
