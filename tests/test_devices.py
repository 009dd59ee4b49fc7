"""Devices: auto takes CUDA when PyTorch sees one; asking for CUDA without one names the param."""

import pytest
import torch

from gamerec.devices import resolve_device
from gamerec.errors import GamerecError


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("key", ["train.device", "evaluate.device", "export.device"])
def test_cuda_without_a_gpu_is_one_line_naming_the_param(key):
    with pytest.raises(GamerecError, match=rf"^params: {key} = 'cuda' but PyTorch sees no CUDA device here"):
        resolve_device("cuda", key)
    assert resolve_device("auto", key) == torch.device("cpu") == resolve_device("cpu", key)


def test_the_stages_rank_on_their_device(prepared):
    """The same ranks from a model moved to the device as from the CPU one (the device here is the CPU)."""
    from gamerec import model as models
    from gamerec.config import EvaluateParams, ModelParams
    from gamerec.evaluation import evaluate, load_eval_data, model_scorer

    data = load_eval_data(prepared, EvaluateParams(negatives=5))
    two_tower = models.build(prepared, ModelParams(dim=8, history=3), seed=0)
    here = evaluate(*model_scorer(two_tower), data, EvaluateParams(negatives=5))
    moved = evaluate(*model_scorer(two_tower.to(resolve_device("auto"))), data, EvaluateParams(negatives=5),
                     device=resolve_device("auto"))
    assert torch.equal(here.ranks, moved.ranks) and here.metrics == moved.metrics
