"""DVC experiments as the `gamerec` commands see them: `dvc` run as a child process, `dvc exp show --json`
walked, and the queue's status. `gamerec tune` and `gamerec report` read experiments only through here."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

from gamerec.errors import GamerecError


def run_dvc(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """`dvc ARGS` with this interpreter's DVC; a failure is one GamerecError naming its last line."""
    result = subprocess.run([sys.executable, "-m", "dvc", *args], capture_output=True, text=True)
    if check and result.returncode != 0:
        last = (result.stderr.strip() or result.stdout.strip()).splitlines()[-1:] or ["no output"]
        raise GamerecError(f"dvc {' '.join(args[:3])} failed: {last[0]}")
    return result


def show() -> list:
    """`dvc exp show --json`: the workspace, HEAD and HEAD's experiments."""
    return json.loads(run_dvc("exp", "show", "--json").stdout or "[]")


def revisions(node) -> Iterator[dict]:
    """Every revision entry (a dict with a name and data) in `dvc exp show --json`'s nesting."""
    if isinstance(node, list):
        for child in node:
            yield from revisions(child)
    elif isinstance(node, dict):
        if "data" in node and "name" in node:
            yield node
        for key in ("experiments", "revs"):
            yield from revisions(node.get(key) or [])


def finished(rev: dict) -> bool:
    """Whether a `dvc exp show --json` entry ran to the end.

    A failed experiment (killed, say) is still listed, with the metrics of the commit it started
    from: its `error` entry, not its metrics, says it did not run.
    """
    return bool(rev.get("data")) and not rev.get("error")


def experiments(shown: list) -> list[dict]:
    """The experiments' entries in `dvc exp show --json` (the workspace and the commit they start from left out)."""
    return [rev for base in shown for rev in revisions(base.get("experiments") or [])]


def start_workers(count: int) -> None:
    """Start `count` more queue workers. Detached: a worker keeps any pipe it inherits open until it exits."""
    subprocess.run([sys.executable, "-m", "dvc", "queue", "start", "-j", str(count)],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)


def queue_status() -> tuple[list[tuple[str, str]], int]:
    """(name, status) of every queue task, and the number of queue workers, active or idle."""
    lines = run_dvc("queue", "status", check=False).stdout.splitlines()
    tasks = [(words[1], words[-1]) for words in map(str.split, lines[1:]) if len(words) >= 4 and words[0] != "Worker"]
    # "Worker status: 1 active, 1 idle": an idle worker takes the next queued task, so it counts
    workers = [line for line in lines if line.startswith("Worker status:")]
    counts = [int(part.split()[0]) for part in workers[0].split(":")[1].split(",")] if workers else []
    return tasks, sum(counts)
