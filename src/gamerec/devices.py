"""Which device a stage computes on: the one place `auto | cpu | cuda` params are resolved."""

from __future__ import annotations

import torch

from gamerec.errors import GamerecError


def resolve_device(name: str, key: str = "train.device") -> torch.device:
    """`auto` is CUDA when this machine has it, else CPU; `cuda` without CUDA is an error naming the param `key`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise GamerecError(f"params: {key} = 'cuda' but PyTorch sees no CUDA device here; use auto or cpu")
    return torch.device(name)
