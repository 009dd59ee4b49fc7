"""Data-parallel training with torchrun on CPU (gloo): the same batches, loss and gradients as one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import dist_worker
from gamerec.distributed import Dist, resolve_device
from gamerec.errors import GamerecError

REPO = Path(__file__).resolve().parents[1]


def test_a_global_batch_splits_into_contiguous_parts_of_near_equal_size():
    idx = torch.arange(10)
    parts = [Dist(rank=r, world=3).part(idx) for r in range(3)]
    assert [len(p) for p, _ in parts] == [4, 3, 3] and [o for _, o in parts] == [0, 4, 7]
    assert torch.equal(torch.cat([p for p, _ in parts]), idx)


def test_devices():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(GamerecError, match="train.device = 'cuda' but PyTorch sees no CUDA device"):
            resolve_device("cuda")


def torchrun(*args: str, processes: int = 2) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           f"--nproc_per_node={processes}", *args], capture_output=True, text=True, timeout=300, env=env)


def test_two_processes_give_the_one_process_loss_and_gradients_of_the_global_batch(prepared_dir, tmp_path):
    out = tmp_path / "two.pt"
    result = torchrun(str(Path(dist_worker.__file__)), str(prepared_dir), str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    two = torch.load(out, weights_only=True)
    for case, (loss2, grads2) in zip(dist_worker.CASES, two):
        loss1, grads1 = dist_worker.loss_and_grads(prepared_dir, case, Dist())
        assert loss2 == pytest.approx(loss1, rel=1e-5), case
        assert grads1.keys() == grads2.keys()
        for name in grads1:
            assert torch.allclose(grads2[name], grads1[name], rtol=1e-4, atol=1e-6), (case, name)


def test_in_batch_rows_of_one_process_see_the_other_process_items(prepared_dir):
    """The gathered negatives matter: without them the two halves' loss is not the batch's."""
    model, ex = dist_worker.build(prepared_dir, "in_batch", 0)
    from gamerec.config import TrainParams
    from gamerec.training import batch_loss, loss_for

    idx = torch.arange(100)
    loss = loss_for(ex, model, TrainParams(), torch.Generator())
    whole = batch_loss(model, loss, ex, idx).item()
    halves = sum(batch_loss(model, loss, ex, part).item() for part in (idx[:50], idx[50:])) / 2
    assert abs(whole - halves) > 0.1  # 50 fewer negatives per row: a clearly smaller loss


TINY = {"synthetic": {"users": 300, "items": 120, "interactions": 5000},
        "train": {"epochs": 3, "batch_size": 256},
        # no dropout: two processes draw other masks than one, and the runs would differ by more than float order
        "model": {"attention_dropout": 0.0, "input_dropout": 0.0}}


def run_stage(workdir: Path, name: str, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, str(REPO / "stages" / f"{name}.py"), *args], cwd=workdir,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """Tiny synthetic data, prepared and sampled for in_batch by the real stage scripts."""
    work = tmp_path_factory.mktemp("dist")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for group, values in TINY.items():
        params[group].update(values)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for stage, args in (("synthesize", ()), ("prepare", ()), ("sample_negatives", ("in_batch",))):
        run_stage(work, stage, *args)
    return work


def train_with(workdir: Path, processes: int) -> tuple[dict, dict, list[str]]:
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    params["train"]["processes"] = processes
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = run_stage(workdir, "train")
    checkpoint = torch.load(workdir / "models/model.pt", weights_only=True)
    return json.loads((workdir / "reports/train.json").read_text()), checkpoint, result.stdout.splitlines()


VAL_RECALL_TOLERANCE = 0.01  # the same batches and gradients; only float summation order differs


def test_two_process_train_stage_writes_one_checkpoint_and_matches_one_process(workdir):
    one, ckpt1, _ = train_with(workdir, 1)
    two, ckpt2, printed = train_with(workdir, 2)
    assert printed[-1].startswith("train: ") and printed[-1].endswith("2 processes")  # one summary: rank 0's
    assert abs(two["val_recall@10"] - one["val_recall@10"]) <= VAL_RECALL_TOLERANCE
    assert two["epochs_run"] == one["epochs_run"] and two["examples"] == one["examples"]
    assert ckpt2["config"] == ckpt1["config"]
    from gamerec.model import TwoTower

    TwoTower.from_checkpoint(ckpt2)  # loads
    assert sorted(p.name for p in (workdir / "models").iterdir()) == ["model.pt"]  # no state, no temporaries
    assert not list(workdir.glob(".*.tmp")) and not list((workdir / "metrics").glob(".*.tmp"))
    assert not list((workdir / "reports").glob(".*.tmp"))
    steps = (workdir / "dvclive/plots/metrics/loss.tsv").read_text().splitlines()
    assert len(steps) == 1 + two["epochs_run"]  # logged once, by rank 0


def test_a_failed_worker_is_one_error_line(workdir):
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    params["train"]["processes"] = 2
    params["sampler"] = "also_view"  # its negatives were never sampled here: every worker fails
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = subprocess.run([sys.executable, str(REPO / "stages/train.py")], cwd=workdir, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: train: 2 of 2 torchrun workers failed")


def test_scaling_benchmark_prints_each_process_count(workdir):
    result = subprocess.run([sys.executable, str(REPO / "bench/scaling.py"), "--workdir", str(workdir),
                             "--processes", "1", "2", "--epochs", "1"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(result.stdout)
    assert [(r["sampler"], r["processes"]) for r in rows] == [("in_batch", 1), ("in_batch", 2)]
    assert all(r["wall_seconds"] > 0 for r in rows)
    assert abs(rows[0]["val_recall@k"] - rows[1]["val_recall@k"]) <= VAL_RECALL_TOLERANCE


def test_a_stop_signal_landing_in_a_finalizer_still_stops_the_worker_without_a_traceback(monkeypatch):
    import signal
    import time

    from gamerec.distributed import stoppable

    dropped = []
    monkeypatch.setattr(sys, "unraisablehook", dropped.append)  # where Python sends an exception raised in __del__

    class Bar:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while a progress bar is being finalised
            time.sleep(0.05)  # the handler runs here, inside __del__

    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt), stoppable(Dist(world=2)):
        Bar()  # finalised at once
        time.sleep(2.0)  # the worker goes on; the stop must still come
    assert dropped == []
    assert signal.getsignal(signal.SIGINT) is before and signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
