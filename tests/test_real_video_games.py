"""bench/real_video_games.py: the real ReChorus Video Games 2014 sample, read back by read_raw.

The data lives beside the repository (shared/data/real, see SOURCE.md section 1), never
inside it; the tests that need it skip cleanly when it is absent.
"""

from __future__ import annotations

import gzip
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gamerec.data.readers import read_raw
from gamerec.errors import GamerecError

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "real_video_games.py"
SRC = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real" / "video_games_2014_rechorus"

BENCH = runpy.run_path(str(SCRIPT))  # the script's own functions, without running main

needs_data = pytest.mark.skipif(not SRC.is_dir(), reason=f"real data folder {SRC} is absent")


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("real") / "video_games_2014"
    BENCH["main"](["--src", str(SRC), "--out", str(out)])
    return out


@needs_data
def test_read_raw_sees_the_whole_sample(converted: Path) -> None:
    assert sorted(p.name for p in converted.iterdir()) == [
        "meta_Video_Games.json.gz",
        "reviews_Video_Games_5.json.gz",
    ]
    raw = read_raw(converted)
    assert raw.report["format"] == "amazon2014"
    assert all(f["bad_lines"] == 0 for f in raw.report["files"].values())

    interactions = raw.interactions
    assert len(interactions) == 183_174
    assert interactions["user_id"].nunique() == 24_303
    assert interactions["item_id"].nunique() == 10_639
    assert (interactions["rating"] == 5.0).all()  # placeholder: the sample has no ratings

    train = pd.read_csv(SRC / "train.csv", sep="\t")
    np.testing.assert_array_equal(interactions["timestamp"].to_numpy(), train["time"].to_numpy())
    assert (interactions["user_id"] == "U" + train["user_id"].astype(str)).all()
    assert (interactions["item_id"] == "I" + train["item_id"].astype(str)).all()

    items = raw.items
    assert len(items) == 10_672
    assert items["item_id"].is_unique
    assert set(interactions["item_id"]) <= set(items["item_id"])
    assert int(items["also_view"].map(len).gt(0).sum()) == 701
    assert int(items["also_view"].map(len).sum()) == 10_554
    # Features the sample does not have are absent for every item, not invented.
    assert (items["title"] == "").all() and (items["brand"] == "").all()
    assert (items["description"] == "").all() and items["price"].isna().all()
    assert all(cats[0] == "Video Games" for cats in items["categories"])


@needs_data
def test_files_look_like_the_real_2014_dump(converted: Path) -> None:
    with gzip.open(converted / "reviews_Video_Games_5.json.gz", "rt", encoding="utf-8") as f:
        first = f.readline()
    assert first.startswith('{"reviewerID": "U8429", "asin": "I251", "reviewerName": ""')
    assert first.rstrip().endswith('"unixReviewTime": 939859200, "reviewTime": "10 14, 1999"}')
    with gzip.open(converted / "meta_Video_Games.json.gz", "rt", encoding="utf-8") as f:
        assert f.readline().startswith("{'asin': 'I1', 'related': {'also_viewed': [], 'also_bought': ['I5346'")
    # Deterministic gzip: no name or time in the header (bytes 4-9 are flags and mtime).
    head = (converted / "meta_Video_Games.json.gz").read_bytes()[:10]
    assert head[3] == 0 and head[4:8] == b"\0\0\0\0"


def test_review_time_format() -> None:
    assert BENCH["review_time"](939859200) == "10 14, 1999"
    assert BENCH["review_time"](1405987200) == "07 22, 2014"


def test_missing_source_is_one_line_error(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--src", str(tmp_path / "absent"), "--out", str(out)],
        capture_output=True, text=True, cwd=REPO, timeout=60,
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"error: {tmp_path / 'absent'}: ")
    assert "source folder not found" in result.stderr and "SOURCE.md" in result.stderr
    assert not out.exists()


def test_missing_file_names_it_and_writes_nothing(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "train.csv").write_text("user_id\titem_id\ttime\n1\t2\t939859200\n")
    out = tmp_path / "out"
    with pytest.raises(GamerecError, match=r"item_meta\.csv: file not found"):
        BENCH["main"](["--src", str(src), "--out", str(out)])
    assert not out.exists()


def test_bad_row_leaves_no_half_written_output(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "train.csv").write_text("user_id\titem_id\ttime\n1\t2\t939859200\n")
    (src / "item_meta.csv").write_text("item_id\ti_category\tr_complement\tr_substitute\n2\t0\t[3\t[]\n")
    out = tmp_path / "out"
    with pytest.raises(GamerecError, match=r"line 2: r_complement"):
        BENCH["main"](["--src", str(src), "--out", str(out)])
    assert list(tmp_path.iterdir()) == [src]  # no output and no temporary left behind
