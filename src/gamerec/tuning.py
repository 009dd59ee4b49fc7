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
import subprocess
import sys
import time
from collections.abc import Iterator

from gamerec.errors import GamerecError

POLL_SECONDS = 5.0


def points(grid: dict[str, list]) -> list[dict[str, str]]:
    """Every combination of the grid's values, as `-S` strings, in the grid's order."""
    keys = list(grid)
    return [dict(zip(keys, map(_yaml_value, values))) for values in itertools.product(*(grid[k] for k in keys))]


def _yaml_value(value) -> str:
    return json.dumps(value) if isinstance(value, (list, bool)) or value is None else str(value)


def _dvc(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "dvc", *args], capture_output=True, text=True)
    if check and result.returncode != 0:
        last = (result.stderr.strip() or result.stdout.strip()).splitlines()[-1:] or ["no output"]
        raise GamerecError(f"dvc {' '.join(args[:3])} failed: {last[0]}")
    return result


def queue(name: str, grid_points: list[dict[str, str]], fixed: dict[str, str], target: str) -> list[str]:
    """Queue one experiment per point; returns their names (`name`-1, `name`-2, ...)."""
    names = []
    for i, point in enumerate(grid_points, 1):
        names.append(f"{name}-{i}")
        sets = [arg for key, value in {**fixed, **point}.items() for arg in ("-S", f"{key}={value}")]
        _dvc("exp", "run", "--queue", "-n", names[-1], *sets, target)
    return names


def run_queue(jobs: int, budget_minutes: float) -> bool:
    """Start the queue's workers and wait; past the budget, kill what runs and drop what waits. Whether it all ran."""
    _start_workers(jobs)
    deadline = time.monotonic() + budget_minutes * 60
    while True:
        statuses, workers = _status()
        running = [name for name, status in statuses if status == "Running"]
        queued = [name for name, status in statuses if status == "Queued"]
        if not running and not queued:
            return True
        if time.monotonic() > deadline:
            _dvc("queue", "remove", "--queued", check=False)
            _dvc("queue", "kill", *running, check=False)
            return False
        if queued and workers < jobs:  # seen here: a worker gone with tasks still queued
            _start_workers(jobs)
        time.sleep(POLL_SECONDS)


def _start_workers(jobs: int) -> None:
    """Up to `jobs` queue workers. Detached: a worker keeps any pipe it inherits open until it exits."""
    subprocess.run([sys.executable, "-m", "dvc", "queue", "start", "-j", str(jobs)],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)


def _status() -> tuple[list[tuple[str, str]], int]:
    """(name, status) of every queue task, and the active workers."""
    lines = _dvc("queue", "status", check=False).stdout.splitlines()
    tasks = [(words[1], words[-1]) for words in map(str.split, lines[1:]) if len(words) >= 4 and words[0] != "Worker"]
    workers = [line for line in lines if line.startswith("Worker status:")]
    active = int(workers[0].split(":")[1].split()[0]) if workers else 0
    return tasks, active


def results(names: list[str], metric: str = "val_recall@10") -> list[dict]:
    """The named experiments' validation `metric` and params, best first (unfinished ones left out)."""
    shown = json.loads(_dvc("exp", "show", "--json").stdout or "[]")
    rows = []
    for rev in _revisions(shown):
        if rev.get("name") not in names or not rev.get("data"):
            continue
        metrics = rev["data"].get("metrics", {}).get("metrics/train.json", {}).get("data", {})
        if metric in metrics:
            rows.append({"name": rev["name"], metric: metrics[metric],
                         "params": rev["data"].get("params", {}).get("params.yaml", {}).get("data", {})})
    return sorted(rows, key=lambda row: -row[metric])


def _revisions(node) -> Iterator[dict]:
    """Every revision entry (a dict with a name and data) in `dvc exp show --json`'s nesting."""
    if isinstance(node, list):
        for child in node:
            yield from _revisions(child)
    elif isinstance(node, dict):
        if "data" in node and "name" in node:
            yield node
        for key in ("experiments", "revs"):
            yield from _revisions(node.get(key) or [])


def apply(name: str) -> None:
    """Make experiment `name` the workspace's state (params and outputs): `dvc exp apply`."""
    _dvc("exp", "apply", name)
