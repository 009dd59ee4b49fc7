"""A killed train leaves no half checkpoint, and resuming ends with the uninterrupted weights."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import repo_params
from gamerec.samplers import sample, write_negatives

REPO = Path(__file__).resolve().parents[1]
TRAIN = {"epochs": 3, "batch_size": 64, "patience": 100, "lr": 0.01}


@pytest.fixture()
def workdir(tmp_path, prepared_dir, prepared) -> Path:
    """A scratch folder laid out as the train stage expects: prepared data and one negative set."""
    shutil.copytree(prepared_dir, tmp_path / "data/prepared")
    write_negatives(sample("in_batch", prepared.train_positives()), tmp_path / "data/negatives/in_batch")
    params = {"paths": repo_params()["paths"], "samplers": ["in_batch"], "sampler": "in_batch", "model": {"dim": 16},
              "train": TRAIN}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return tmp_path


def start_train(cwd: Path, session: bool = False) -> subprocess.Popen:
    # Ctrl-C reaches a foreground process whose SIGINT is at its default. A shell runs background
    # jobs (a CI script started with `&`, say) with SIGINT ignored, and a child inherits that, so
    # the child is given the default back: the test is about train, not about how it was launched.
    return subprocess.Popen([sys.executable, str(REPO / "stages/train.py")], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), start_new_session=session)


def kill_after_first_epoch(cwd: Path, sig: int, group: bool = False) -> subprocess.CompletedProcess:
    """Signal train once its first epoch's state is saved; `group`: every process of it, as Ctrl-C in a terminal does."""
    proc = start_train(cwd, session=group)
    state = cwd / "models/train_state.pt"
    deadline = time.monotonic() + 120
    while not state.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert proc.poll() is None, "train finished before it could be interrupted"
    if group:
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def weights(cwd: Path) -> dict:
    return torch.load(cwd / "models/model.pt", weights_only=True)["state_dict"]


def finish(cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, str(REPO / "stages/train.py")], cwd=cwd,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_interrupted_train_resumes_to_the_same_weights(tmp_path, workdir, sig):
    reference = tmp_path / "reference"
    shutil.copytree(workdir, reference, ignore=shutil.ignore_patterns("reference"))
    finish(reference)
    assert not (reference / "models/train_state.pt").exists()  # a finished run leaves no state

    killed = kill_after_first_epoch(workdir, sig)
    assert not (workdir / "models/model.pt").exists()  # no half checkpoint, no checkpoint at all
    assert torch.load(workdir / "models/train_state.pt", weights_only=True)["epoch"] >= 1
    if sig == signal.SIGINT:
        assert killed.returncode == 130 and "Traceback" not in killed.stderr
        assert killed.stderr.strip().splitlines()[-1].startswith("interrupted:")

    resumed = finish(workdir)
    assert "resuming after epoch" in resumed.stderr
    ref, res = weights(reference), weights(workdir)
    assert ref.keys() == res.keys() and all(torch.equal(ref[k], res[k]) for k in ref)
    assert (workdir / "metrics/train.json").read_text() == (reference / "metrics/train.json").read_text()
    assert not list((workdir / "models").glob(".*.tmp"))  # stale temporaries are cleaned up


def test_state_of_other_params_is_not_resumed(workdir):
    kill_after_first_epoch(workdir, signal.SIGKILL)
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    params["train"]["lr"] = 0.02
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    assert "resuming" not in finish(workdir).stderr


def test_interrupted_two_process_train_resumes_to_the_same_weights(tmp_path, workdir):
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    params["train"]["processes"] = 2
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    reference = tmp_path / "reference"
    shutil.copytree(workdir, reference, ignore=shutil.ignore_patterns("reference"))
    finish(reference)

    killed = kill_after_first_epoch(workdir, signal.SIGINT, group=True)  # Ctrl-C: the launcher and both workers
    assert killed.returncode == 130 and "Traceback" not in killed.stderr
    assert killed.stderr.strip().splitlines()[-1].startswith("interrupted")
    assert not (workdir / "models/model.pt").exists()
    state = torch.load(workdir / "models/train_state.pt", weights_only=True)
    assert state["epoch"] >= 1 and len(state["torch_rng"]) == 2  # each process's random state

    resumed = finish(workdir)
    assert "resuming after epoch" in resumed.stderr
    ref, res = weights(reference), weights(workdir)
    assert ref.keys() == res.keys() and all(torch.equal(ref[k], res[k]) for k in ref)
