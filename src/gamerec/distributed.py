"""Devices and processes for training: PyTorch's own distributed engine (torchrun, DDP), nothing home-made.

With `train.processes: N > 1` the `train` stage starts `torchrun --standalone
--nproc_per_node=N` on itself (the launcher runs in the stage's process, so a failed worker
is one error line, not the launcher's traceback). A worker finds torchrun's environment
(RANK, WORLD_SIZE, LOCAL_RANK, ...) and joins the process group: gloo on CPU, NCCL on CUDA.
Started by hand with torchrun's rendezvous flags, the same script trains across machines.

Every process holds all examples and draws the same shuffled order; each global batch of
`train.batch_size` rows is split into one contiguous part per process, so N processes
train on exactly the batches one process would (see `training.batch_loss`).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from gamerec.devices import resolve_device  # noqa: F401  (the stages' device, re-exported)
from gamerec.errors import GamerecError


@dataclass
class Dist:
    """This process's place in the job: rank, number of processes, and its device."""

    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes checkpoints, logs and metrics."""
        return self.rank == 0

    def part(self, idx: torch.Tensor) -> tuple[torch.Tensor, int]:
        """This process's contiguous part of a global batch, and its offset in the batch."""
        sizes = self.sizes(len(idx))
        offset = sum(sizes[: self.rank])
        return idx[offset : offset + sizes[self.rank]], offset

    def sizes(self, n: int) -> list[int]:
        """Rows of an n-row global batch per process (they differ by at most one)."""
        return [n // self.world + (r < n % self.world) for r in range(self.world)]

    def gather_rows(self, rows: torch.Tensor, n: int) -> torch.Tensor:
        """Every process's `rows` of an n-row global batch, in rank order, differentiably.

        The backward pass sends each process the gradients of its own rows from every
        process's loss: cross-process in-batch negatives train the item tower everywhere.
        """
        if self.world == 1:
            return rows
        from torch.distributed import _functional_collectives as collectives

        sizes = self.sizes(n)
        padded = torch.cat([rows, rows.new_zeros(max(sizes) - len(rows), *rows.shape[1:])])
        gathered = collectives.wait_tensor(collectives.all_gather_single_autograd(padded, 0, dist.group.WORLD))
        return torch.cat([gathered[r * max(sizes) : r * max(sizes) + size] for r, size in enumerate(sizes)])

    def total(self, value: float) -> float:
        """The sum of `value` over all processes."""
        if self.world == 1:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return float(tensor.item())

    def from_main(self, value: float) -> float:
        """Rank 0's `value`, on every process (decisions such as early stopping must agree)."""
        if self.world == 1:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.broadcast(tensor, src=0)
        return float(tensor.item())

    def average_sparse_grads(self, params: list[torch.nn.Parameter]) -> None:
        """Average the row-sparse gradients of embedding tables over the processes, in place.

        DDP would all-reduce them with gloo's sparse all-reduce, which aborts or segfaults at
        random in torch 2.13 (twice in 16,000 steps of a plain DDP + sparse embedding script
        on this machine; dense gradients never did), and NCCL has none. So DDP is told to
        leave these tables alone (`wrap`), and each table's gradient rows and values are
        all-gathered here as dense tensors, which both backends support.
        """
        if self.world == 1:
            return
        for p in params:
            grad = p.grad.coalesce() if p.grad is not None else None
            rows = grad.indices()[0] if grad is not None else torch.zeros(0, dtype=torch.long, device=self.device)
            values = grad.values() if grad is not None else p.new_zeros(0, *p.shape[1:])
            counts = self._gather(torch.tensor([len(rows)], device=self.device))
            width = int(max(counts))
            rows = self._gather(torch.cat([rows, rows.new_zeros(width - len(rows))]))
            values = self._gather(torch.cat([values, values.new_zeros(width - len(values), *values.shape[1:])]))
            keep = [slice(r * width, r * width + int(n)) for r, n in enumerate(counts)]
            rows, values = torch.cat([rows[k] for k in keep]), torch.cat([values[k] for k in keep])
            p.grad = (torch.sparse_coo_tensor(rows[None], values / self.world, p.shape, check_invariants=True).coalesce()
                      if len(rows) else None)  # checked: O(rows), and a bad index must not reach the optimizer

    def _gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every process's `tensor` (all the same shape), concatenated in rank order."""
        parts = [torch.empty_like(tensor) for _ in range(self.world)]
        dist.all_gather(parts, tensor)
        return torch.cat(parts)

    def wrap(self, model: torch.nn.Module, sparse: list[torch.nn.Parameter]) -> torch.nn.Module:
        """`model` as DistributedDataParallel over its dense weights (one process: itself).

        The `sparse` tables are left to `average_sparse_grads`; buffers (item features,
        histories) are the same data in every process, so they are never re-broadcast.
        """
        if self.world == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ignore = [f"{name}.{param_name}" for name, module in model.named_modules(remove_duplicate=False)
                  for param_name, param in module.named_parameters(recurse=False) if any(param is t for t in sparse)]
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, ignore)
        return DistributedDataParallel(model, forward_sync_buffers=False)

    def gather_objects(self, obj) -> list:
        """`obj` of every process, in rank order (small picklable things: random generator states)."""
        if self.world == 1:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out


def launched() -> bool:
    """Whether torchrun started this process (it sets WORLD_SIZE)."""
    return "WORLD_SIZE" in os.environ


def init(device_name: str) -> Dist:
    """Join torchrun's process group if there is one; pick this process's device."""
    device = resolve_device(device_name)
    if not launched() or int(os.environ["WORLD_SIZE"]) == 1:
        return Dist(device=device)
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), device)


def shutdown(finished: bool = False) -> None:
    """Leave the process group, if this process joined one; when `finished`, once every process is done.

    Rank 0 writes the outputs while the others wait; a process that tore its gloo sockets
    down meanwhile made a peer's transport thread abort ("terminate called without an active
    exception", seen here under load). After a finished run a barrier lets them all leave
    together; after Ctrl-C or an error there is no waiting for peers that may be gone.
    """
    if dist.is_available() and dist.is_initialized():
        if finished:
            dist.barrier()
        dist.destroy_process_group()


@contextmanager
def stoppable(dist: Dist) -> Iterator[None]:
    """In a worker, Ctrl-C or torchrun stopping the job ends as KeyboardInterrupt: the stage's one `interrupted` line.

    torchrun stops workers with the signal it got (SIGINT for Ctrl-C, else SIGTERM), one after
    another, so a worker waiting in a collective can see its peer's socket close before its
    own signal is handled, as a RuntimeError. The signals are noted as they arrive; one that
    lands in an object's `__del__`, where an exception is printed and dropped (a progress
    bar's, at the end of an epoch, where a test's Ctrl-C lands), raises a moment later
    instead; a RuntimeError with a stop signal before it or within a moment after
    it is a stop, not a failure; without one it is raised as it was.
    """
    if dist.world == 1:
        yield
        return
    received: list[int] = []

    def stop(signum, frame):
        received.append(signum)
        if _in_finalizer(frame):  # raised there, it would be printed ("Exception ignored ... Traceback") and dropped
            signal.setitimer(signal.ITIMER_REAL, 0.01)  # so it is raised a moment later, by SIGALRM, where the worker is then
            return
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM)}
    try:
        yield
    except RuntimeError:
        if not received:
            time.sleep(2.0)  # a stop signal arriving now raises KeyboardInterrupt from here
        if received:
            raise KeyboardInterrupt from None
        raise
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _in_finalizer(frame) -> bool:
    """Whether `frame` runs inside an object's `__del__` (a progress bar's, as an epoch ends)."""
    while frame is not None:
        if frame.f_code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False


def exit_worker(main: Callable[[], None]) -> None:
    """Run a torchrun worker's `main`, then leave with `os._exit`, skipping the interpreter's teardown.

    By then the process group is destroyed and every output written and closed; what is
    left are gloo's C++ threads, whose teardown at interpreter exit aborted a worker now and
    then ("terminate called without an active exception", exit status -6) after a run that
    had finished. An exception other than SystemExit is a bug and propagates as usual.
    """
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def launch(processes: int, script: str, args: list[str] = ()) -> None:
    """Run `script` in `processes` worker processes on this machine with torchrun, and wait.

    The launcher is torchrun's own (`torch.distributed.run`), started in this process. Each
    worker gets an equal share of the cores (OMP_NUM_THREADS) unless the caller set one.
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // processes)))
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # our one line replaces its report
    try:
        run(parse_args(["--standalone", f"--nproc_per_node={processes}", script, *args]))
    except SignalException:  # Ctrl-C or a kill: torchrun stopped the workers; say so as any stage does
        raise KeyboardInterrupt from None
    except ChildFailedError as exc:
        codes = sorted({failure.exitcode for failure in exc.failures.values()})
        raise GamerecError(
            f"train: {len(exc.failures)} of {processes} torchrun workers failed (exit status "
            f"{', '.join(map(str, codes))}); their messages are above"
        ) from None
