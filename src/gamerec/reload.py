"""Serving the newest export: the folder is watched, and a new one is loaded beside the old and swapped in whole.

The `export` stage writes its folder under a temporary name and renames it into place, so a
new export shows as a new serving.json (another inode and time). The watcher looks every
`poll_seconds` (or at once on `wake`, which the service calls on SIGHUP), loads the new
folder completely, and only then swaps the one reference requests read. A request holds the
`Recommender` it started with, so requests in flight finish on the old export, and a folder
that is half there (between the old one's removal and the new one's rename) is retried,
never served.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from pathlib import Path

from gamerec.recommender import Recommender


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class LiveExport:
    """The export being served (`current`), replaced whole when the folder's serving.json changes."""

    def __init__(self, folder: str | Path, poll_seconds: float = 1.0, log: Callable[[str], None] = _stderr):
        self.folder, self.poll_seconds, self.log = Path(folder), poll_seconds, log
        self._stamp = self._read_stamp()  # before loading: a change while loading is seen next time
        self.current = Recommender(self.folder).warm()
        self._failed: tuple | None = None
        self._wake, self._stop = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._watch, name="gamerec-reload", daemon=True)

    def _read_stamp(self) -> tuple | None:
        try:
            stat = (self.folder / "serving.json").stat()
        except OSError:
            return None  # between the old folder's removal and the new one's rename
        return stat.st_ino, stat.st_mtime_ns, stat.st_size

    def reload(self, force: bool = False) -> bool:
        """Load the folder if serving.json changed (or `force`) and swap it in; True when a new export is served."""
        stamp = self._read_stamp()
        if stamp is None or (not force and stamp in (self._stamp, self._failed)):
            return False
        try:
            fresh = Recommender(self.folder).warm()
        except Exception as exc:  # noqa: BLE001 - whatever a bad folder raises, the old export keeps serving
            self._failed = stamp
            self.log(f"gamerec: reload of {self.folder} failed ({type(exc).__name__}: {exc}); "
                     f"still serving model {self.current.model_version[:12]}")
            return False
        if self._read_stamp() != stamp:
            return False  # replaced again while loading: the next look loads the newer one
        old, self.current, self._stamp = self.current, fresh, stamp
        self.log(f"gamerec: now serving model {fresh.model_version[:12]} (was {old.model_version[:12]})")
        return True

    def _watch(self) -> None:
        while not self._stop.is_set():
            forced = self._wake.wait(self.poll_seconds)
            self._wake.clear()
            if not self._stop.is_set():
                self.reload(force=forced)

    def wake(self) -> None:
        """Reload now, changed or not (the SIGHUP handler); safe to call from a signal handler."""
        self._wake.set()

    def start(self) -> "LiveExport":
        """Start watching in a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop watching."""
        self._stop.set()
        self._wake.set()
