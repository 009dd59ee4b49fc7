"""The tuning grid, how its results are read from `dvc exp show --json`, and the queue's workers."""

import subprocess

from gamerec import experiments, tuning


def test_points_are_every_combination_in_order():
    grid = {"model.temperature": [0.1, 0.2], "train.lr": [0.005], "model.hidden": [[], [64]]}
    assert tuning.points(grid) == [
        {"model.temperature": "0.1", "train.lr": "0.005", "model.hidden": "[]"},
        {"model.temperature": "0.1", "train.lr": "0.005", "model.hidden": "[64]"},
        {"model.temperature": "0.2", "train.lr": "0.005", "model.hidden": "[]"},
        {"model.temperature": "0.2", "train.lr": "0.005", "model.hidden": "[64]"},
    ]


def test_results_rank_the_named_experiments_by_validation(monkeypatch):
    def experiment(name, recall, error=None):
        data = {"metrics": {"metrics/train.json": {"data": {"val_recall@10": recall}}},
                "params": {"params.yaml": {"data": {"train": {"lr": recall}}}}}
        return {"revs": [{"rev": name * 4, "name": name, "data": data, "error": error}], "name": name}

    # a killed experiment (budget spent) is listed with the metrics its workspace started from: the base's
    killed = experiment("t-4", 0.99, error={"msg": "Experiment run failed", "type": ""})
    shown = [{"rev": "workspace", "name": None, "data": {}},
             {"rev": "abc", "name": "main", "data": {"metrics": {}},
              "experiments": [experiment("t-1", 0.2), experiment("t-2", 0.3), experiment("other", 0.9), killed]}]
    monkeypatch.setattr(experiments, "show", lambda: shown)
    rows = tuning.results(["t-1", "t-2", "t-3", "t-4"])
    assert [row["name"] for row in rows] == ["t-2", "t-1"]  # best first; t-3 never finished, t-4 failed, other is not ours
    assert rows[0]["params"]["train"]["lr"] == 0.3


def test_queue_names_each_point_and_runs_the_target_or_every_stage(monkeypatch):
    calls = []
    monkeypatch.setattr(tuning, "run_dvc", lambda *args, **kw: calls.append(args))
    names = tuning.queue("t", [{"train.lr": "0.1"}, {"train.lr": "0.2"}], {"sampler": "mined"}, "train")
    assert names == ["t-1", "t-2"]
    assert calls == [("exp", "run", "--queue", "-n", "t-1", "-S", "sampler=mined", "-S", "train.lr=0.1", "train"),
                     ("exp", "run", "--queue", "-n", "t-2", "-S", "sampler=mined", "-S", "train.lr=0.2", "train")]
    calls.clear()
    tuning.queue("final", [{}], {"sampler": "mined"}, None)  # no target: every stage, evaluate included
    assert calls == [("exp", "run", "--queue", "-n", "final-1", "-S", "sampler=mined")]


STATUS = """Task     Name    Created    Status
94dc0d8  t-1     03:47 AM   Running
eddb792  t-2     03:47 AM   Queued

Worker status: 1 active, 1 idle
"""


def test_idle_workers_count_as_workers(monkeypatch):
    monkeypatch.setattr(experiments, "run_dvc", lambda *a, **kw: subprocess.CompletedProcess(a, 0, STATUS, ""))
    assert experiments.queue_status() == ([("t-1", "Running"), ("t-2", "Queued")], 2)


def test_tune_starts_only_the_workers_missing_for_its_jobs(monkeypatch):
    # one worker left from an earlier run: two jobs start one more, and none while two exist
    states = iter([([("t-1", "Queued")], 1), ([("t-1", "Running"), ("t-2", "Queued")], 2), ([("t-1", "Success")], 0)])
    started = []
    monkeypatch.setattr(tuning, "queue_status", lambda: next(states))
    monkeypatch.setattr(experiments, "start_workers", started.append)
    monkeypatch.setattr(tuning, "POLL_SECONDS", 0)
    assert tuning.run_queue(jobs=2, budget_minutes=1) is True
    assert started == [1]
