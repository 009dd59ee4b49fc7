"""Tuning on validation through DVC experiments: a grid queued, run within a time budget, the winner applied.

`gamerec tune` queues one `dvc exp run --queue <target>` per point of the grid (params
group `tune`, or `--grid key=a,b` options), runs the queue with `tune.jobs` workers (the
stages share the cores), stops what is left when `tune.budget_minutes` is spent, ranks the
finished experiments by validation recall (`metrics/train.json`; the target is `train`, so
test metrics are never even computed) and applies the best with `dvc exp apply`.
"""

from __future__ import annotations

import itertools
import json
import time

from gamerec import experiments
from gamerec.experiments import queue_status, revisions, run_dvc

POLL_SECONDS = 5.0


def points(grid: dict[str, list]) -> list[dict[str, str]]:
    """Every combination of the grid's values, as `-S` strings, in the grid's order."""
    keys = list(grid)
    return [dict(zip(keys, map(_yaml_value, values))) for values in itertools.product(*(grid[k] for k in keys))]


def _yaml_value(value) -> str:
    return json.dumps(value) if isinstance(value, (list, bool)) or value is None else str(value)


def queue(name: str, grid_points: list[dict[str, str]], fixed: dict[str, str], target: str | None) -> list[str]:
    """Queue one experiment per point of `target` (None: the whole pipeline); their names, `name`-1, `name`-2, ..."""
    names = []
    for i, point in enumerate(grid_points, 1):
        names.append(f"{name}-{i}")
        sets = [arg for key, value in {**fixed, **point}.items() for arg in ("-S", f"{key}={value}")]
        run_dvc("exp", "run", "--queue", "-n", names[-1], *sets, *([target] if target else []))
    return names


def run_queue(jobs: int, budget_minutes: float) -> bool:
    """Start the queue's workers and wait; past the budget, kill what runs and drop what waits. Whether it all ran."""
    _, workers = queue_status()
    if workers < jobs:  # workers left from an earlier run count: at most `jobs` experiments at once
        experiments.start_workers(jobs - workers)
    deadline = time.monotonic() + budget_minutes * 60
    while True:
        statuses, workers = queue_status()
        running = [name for name, status in statuses if status == "Running"]
        queued = [name for name, status in statuses if status == "Queued"]
        if not running and not queued:
            return True
        if time.monotonic() > deadline:
            run_dvc("queue", "remove", "--queued", check=False)
            run_dvc("queue", "kill", *running, check=False)
            return False
        if queued and workers < jobs:  # seen here: a worker gone with tasks still queued
            experiments.start_workers(jobs - workers)
        time.sleep(POLL_SECONDS)


def results(names: list[str], metric: str = "val_recall@10") -> list[dict]:
    """The named experiments' validation `metric` and params, best first (unfinished and failed ones left out)."""
    rows = []
    for rev in revisions(experiments.show()):
        if rev.get("name") not in names or not experiments.finished(rev):
            continue
        metrics = rev["data"].get("metrics", {}).get("metrics/train.json", {}).get("data", {})
        if metric in metrics:
            rows.append({"name": rev["name"], metric: metrics[metric],
                         "params": rev["data"].get("params", {}).get("params.yaml", {}).get("data", {})})
    return sorted(rows, key=lambda row: -row[metric])


def apply(name: str) -> None:
    """Make experiment `name` the workspace's state (params and outputs): `dvc exp apply`."""
    run_dvc("exp", "apply", name)
