"""Throughput figures for `bench/run.py`, kept out of the tracked outputs.

A stage calls `record` with what only it can time (train's steady-state rate, evaluate's
ranking step); the figures go to the JSON-lines file named by the GAMEREC_PROFILE
environment variable and nowhere when it is unset, so metrics files stay byte-identical
from run to run and DVC never sees a timing.
"""

from __future__ import annotations

import json
import os

ENV = "GAMEREC_PROFILE"


def record(step: str, **figures: float | int | str) -> None:
    """Append {"step": step, **figures} as one line to $GAMEREC_PROFILE, if it is set."""
    path = os.environ.get(ENV)
    if path:
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps({"step": step, **figures}) + "\n")
