"""Progress bars on stderr for the long steps: shown on a terminal, silent in logs and tests."""

from __future__ import annotations

from collections.abc import Iterable

from tqdm import tqdm


def bar(iterable: Iterable | None = None, show: bool = True, **options) -> tqdm:
    """A tqdm bar on stderr; `show=False` (a worker process, say) hides it, as does a stderr that is no terminal."""
    return tqdm(iterable, disable=None if show else True, mininterval=0.5, dynamic_ncols=True, **options)
