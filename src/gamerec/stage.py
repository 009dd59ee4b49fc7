"""What every stage script shares: its paths, and how it ends (one error line, or the interrupted line)."""

from __future__ import annotations

import sys
from collections.abc import Callable

from gamerec import config
from gamerec.errors import GamerecError

STAGE_INTERRUPTED = "interrupted: no output was half-written; rerun the stage to start again (train resumes)"


def paths() -> config.Paths:
    """The `paths` params group: where stages read and write (dvc.yaml interpolates the same values)."""
    return config.load(config.Paths, "paths")


def run_stage(main: Callable[[], None], interrupted: str = STAGE_INTERRUPTED) -> None:
    """Call `main`; print a `GamerecError` as `error: <message>` and exit with status 1 (130 on Ctrl-C)."""
    try:
        main()
    except GamerecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        sys.exit(130)
