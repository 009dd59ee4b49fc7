"""Sharing the machine's cores between the stages that run at the same time.

`dvc queue start -j 2` runs two experiments at once. Two trainings that each use every core
slow each other down about tenfold here (OpenMP threads spin while they wait for cores the
other process holds), so each stage registers itself in a folder of the machine's temporary
directory and uses its share of the cores: cores // (stages running now). A long stage asks
again now and then (`rebalance`, once per training epoch), so it speeds up again when its
neighbour finishes. OMP_NUM_THREADS, when set (torchrun's workers, or a user), wins.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

REGISTRY = Path(tempfile.gettempdir()) / "gamerec-stages"  # one empty file per running stage, named by its pid
_joined = False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def running() -> int:
    """Stages registered and alive now (files of processes that died are removed)."""
    count = 0
    for entry in REGISTRY.glob("*"):
        if entry.name.isdigit() and _alive(int(entry.name)):
            count += 1
        else:
            entry.unlink(missing_ok=True)
    return count


def share() -> int:
    """This stage's threads: the cores divided by the stages running now, at least one."""
    return max(1, (os.cpu_count() or 1) // max(running(), 1))


def rebalance() -> None:
    """Set torch's threads to this stage's share, if this process joined (stages do; tests and libraries do not).

    Only a stage that uses torch has threads to share; the others are single-threaded.
    """
    torch = sys.modules.get("torch")
    if not _joined or torch is None or "OMP_NUM_THREADS" in os.environ:
        return
    threads = share()
    if threads != torch.get_num_threads():
        torch.set_num_threads(threads)


def join() -> None:
    """Register this process as a running stage and take its share of the cores."""
    global _joined
    REGISTRY.mkdir(parents=True, exist_ok=True)
    (REGISTRY / str(os.getpid())).touch()
    _joined = True
    rebalance()


def leave() -> None:
    """Unregister this process: the stages beside it may take its cores at their next rebalance."""
    global _joined
    (REGISTRY / str(os.getpid())).unlink(missing_ok=True)
    _joined = False
