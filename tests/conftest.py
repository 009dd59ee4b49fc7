"""Shared test settings."""

import os
from pathlib import Path

# Small real public samples live beside the repository (never inside it); tests that use
# them skip cleanly when the folder is absent.
REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"

os.environ.setdefault("DVC_NO_ANALYTICS", "1")
