"""Atomic, strict JSON: what cannot be computed is null, never NaN."""

import json
import math

from gamerec.io import write_json


def test_nan_and_infinity_are_written_as_null(tmp_path):
    write_json(tmp_path / "m.json", {"auc_also_view": math.nan, "nested": {"x": [1.5, math.inf, -math.inf]}, "k": 3})
    text = (tmp_path / "m.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"auc_also_view": None, "nested": {"x": [1.5, None, None]}, "k": 3}
    assert not list(tmp_path.glob(".*.tmp"))
