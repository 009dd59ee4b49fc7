"""What every stage script shares: its paths, and how it ends (one error line, or the interrupted line)."""

from __future__ import annotations

import sys
from collections.abc import Callable

from gamerec import config, cores
from gamerec.errors import GamerecError

STAGE_INTERRUPTED = "interrupted: no output was half-written; rerun the stage to start again (train resumes)"


def paths() -> config.Paths:
    """The `paths` params group: where stages read and write (dvc.yaml interpolates the same values)."""
    return config.load(config.Paths, "paths")


def run_stage(main: Callable[[], None], interrupted: str = STAGE_INTERRUPTED, share_cores: bool = True) -> None:
    """Call `main`; print a `GamerecError` as `error: <message>` and exit with status 1 (130 on Ctrl-C).

    A stage takes its share of the cores with the stages running beside it (`gamerec.cores`).
    """
    if share_cores:
        cores.join()
    try:
        main()
    except GamerecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        sys.exit(130)
    finally:
        if share_cores:
            cores.leave()
