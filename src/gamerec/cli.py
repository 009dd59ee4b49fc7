"""Running a stage script: user errors become one line on stderr, never a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable

from gamerec.errors import GamerecError


def run_stage(main: Callable[[], None]) -> None:
    """Call `main`; print a `GamerecError` as `error: <message>` and exit with status 1."""
    try:
        main()
    except GamerecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted: no output was half-written; rerun the stage to start again (train resumes)", file=sys.stderr)
        sys.exit(130)
