"""Adam, with lazy updates of the rows a sparse gradient names: the one optimiser training uses.

A dense gradient takes `torch.optim.Adam`'s step and a sparse one `torch.optim.SparseAdam`'s,
op for op, so the weights are bit-identical to theirs (tests/test_optim.py checks both). It is
written out because constructing any `torch.optim` optimiser imports torch._dynamo: 1.5 s of a
5-second train stage on small data, paid by every train, experiment and worker process.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch


class Adam:
    """Adam over param groups (each with its own `lr`): sparse gradients move only their rows.

    A weight without a gradient in a step is skipped and its step count does not advance, as
    in torch.optim. `weight_decay` (L2 added to the gradient) applies to dense gradients only.
    """

    def __init__(self, groups: Iterable[dict], lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0):
        self.param_groups = [{"lr": lr, **group, "params": list(group["params"])} for group in groups]
        self.betas, self.eps, self.weight_decay = betas, eps, weight_decay
        self.state: dict[torch.Tensor, dict] = {}

    def _params(self) -> list[torch.Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    def zero_grad(self) -> None:
        """Drop every gradient (to None: a zeroed sparse gradient would still name its rows)."""
        for p in self._params():
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        """One update of every weight that has a gradient."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state.get(p)
                if state is None:
                    state = self.state[p] = {"step": 0, "exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}
                state["step"] += 1
                (self._sparse_step if p.grad.is_sparse else self._dense_step)(p, state, group["lr"])

    def _dense_step(self, p: torch.Tensor, state: dict, lr: float) -> None:
        """torch.optim.Adam's single-tensor step (amsgrad, maximize and capturable off)."""
        beta1, beta2 = self.betas
        grad = p.grad if self.weight_decay == 0 else p.grad.add(p, alpha=self.weight_decay)
        exp_avg, exp_avg_sq, step = state["exp_avg"], state["exp_avg_sq"], float(state["step"])
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        step_size = lr / (1 - beta1**step)
        denom = (exp_avg_sq.sqrt() / (1 - beta2**step) ** 0.5).add_(self.eps)
        p.addcdiv_(exp_avg, denom, value=-step_size)

    def _sparse_step(self, p: torch.Tensor, state: dict, lr: float) -> None:
        """torch.optim.SparseAdam's step: the moments and weights of the gradient's rows only."""
        beta1, beta2 = self.betas
        grad = p.grad.coalesce()  # the update is non-linear: each row once
        indices, values = grad._indices(), grad._values()
        if values.numel() == 0:
            return
        exp_avg, exp_avg_sq, step = state["exp_avg"], state["exp_avg_sq"], state["step"]

        def sparse(rows: torch.Tensor) -> torch.Tensor:
            return grad.new(indices, rows, grad.size())

        old_avg = exp_avg.sparse_mask(grad)._values()
        avg_update = values.sub(old_avg).mul_(1 - beta1)
        exp_avg.add_(sparse(avg_update))
        old_sq = exp_avg_sq.sparse_mask(grad)._values()
        sq_update = values.pow(2).sub_(old_sq).mul_(1 - beta2)
        exp_avg_sq.add_(sparse(sq_update))
        numer = avg_update.add_(old_avg)  # the rows' new moments, without a second sparse_mask
        denom = sq_update.add_(old_sq).sqrt_().add_(self.eps)
        step_size = lr * math.sqrt(1 - beta2**step) / (1 - beta1**step)
        p.add_(sparse(-step_size * numer.div_(denom)))

    def state_dict(self) -> dict:
        """Each weight's moments and step count, in param-group order (None: never stepped); plain tensors."""
        return {"state": [self.state.get(p) for p in self._params()], "lr": [g["lr"] for g in self.param_groups]}

    def load_state_dict(self, saved: dict) -> None:
        params = self._params()
        if len(saved["state"]) != len(params) or len(saved["lr"]) != len(self.param_groups):
            raise ValueError(f"optimiser state of {len(saved['state'])} weights, expected {len(params)}")
        self.state = {p: {"step": s["step"], "exp_avg": s["exp_avg"].to(p.device), "exp_avg_sq": s["exp_avg_sq"].to(p.device)}
                      for p, s in zip(params, saved["state"]) if s is not None}
        for group, lr in zip(self.param_groups, saved["lr"]):
            group["lr"] = lr
