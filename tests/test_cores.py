"""Stages running at the same time share the cores instead of fighting over them."""

import os
import subprocess
import sys

import pytest

from gamerec import cores


@pytest.fixture()
def registry(tmp_path, monkeypatch):
    monkeypatch.setattr(cores, "REGISTRY", tmp_path / "stages")
    monkeypatch.setattr(cores.os, "cpu_count", lambda: 8)
    yield tmp_path / "stages"
    cores.leave()


def test_each_running_stage_takes_its_share_and_dead_ones_are_forgotten(registry):
    cores.join()
    assert cores.running() == 1 and cores.share() == 8
    neighbour = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (registry / str(neighbour.pid)).touch()
        (registry / "999999999").touch()  # a stage that died without leaving
        assert cores.running() == 2 and cores.share() == 4
        assert not (registry / "999999999").exists()
    finally:
        neighbour.kill()
        neighbour.wait()
    assert cores.share() == 8  # the neighbour ended: the cores are ours again
    cores.leave()
    assert not (registry / str(os.getpid())).exists()


def test_rebalance_sets_torch_threads_only_in_a_stage(registry, monkeypatch):
    import torch

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    try:
        cores.rebalance()  # not joined: a library call changes nothing
        assert torch.get_num_threads() == before
        (registry).mkdir()
        for pid in (os.getpid(), os.getppid(), 1):  # three live processes registered
            (registry / str(pid)).touch()
        cores.join()
        assert torch.get_num_threads() == 8 // 3
    finally:
        torch.set_num_threads(before)
