"""read_raw: every Amazon format gives the same frames; broken input gives one-line errors."""

import gzip
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gamerec.data.prepare import platform_of
from gamerec.data.readers import (
    INTERACTION_COLUMNS,
    ITEM_COLUMNS,
    SUPPORTED_FORMATS,
    RawData,
    read_raw,
)
from gamerec.errors import GamerecError

from conftest import REAL_DATA as REAL


# --- helpers --------------------------------------------------------------------------------


def write_lines(path: Path, lines: list, compress: bool | None = None) -> Path:
    """Write dicts as JSON lines and strings/bytes verbatim; gzip when the name ends in .gz."""
    raw = b"".join(_line_bytes(line) + b"\n" for line in lines)
    compress = path.name.endswith(".gz") if compress is None else compress
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return path


def _line_bytes(line: dict | str | bytes) -> bytes:
    if isinstance(line, bytes):
        return line
    return (line if isinstance(line, str) else json.dumps(line)).encode()


def review_2018(user="U1", item="I1", overall=5.0, ts=1500000000, **extra) -> dict:
    record = {"overall": overall, "verified": True, "reviewTime": "07 14, 2017",
              "reviewerID": user, "asin": item, "reviewerName": "x", "reviewText": "fun",
              "summary": "ok", "unixReviewTime": ts}
    record.update(extra)
    return record


def items_by_id(data: RawData) -> dict:
    return {row["item_id"]: row for row in data.items.to_dict("records")}


def assert_schema(data: RawData) -> None:
    assert list(data.interactions.columns) == INTERACTION_COLUMNS
    assert list(data.items.columns) == ITEM_COLUMNS
    assert data.interactions["rating"].dtype == np.float32
    assert data.interactions["timestamp"].dtype == np.int64
    assert data.items["price"].dtype == np.float64
    json.dumps(data.report)  # the report must be JSON-serialisable


# --- one test per format --------------------------------------------------------------------


def test_amazon_2014(tmp_path):
    write_lines(tmp_path / "reviews_Video_Games_5.json.gz", [
        {"reviewerID": "A1", "asin": "0700099867", "reviewerName": "Bob", "helpful": [8, 12],
         "reviewText": "fun", "overall": 4.0, "summary": "ok", "unixReviewTime": 1202256000,
         "reviewTime": "02 6, 2008"},
        {"reviewerID": "A2", "asin": "B00004SVX5", "overall": "five", "unixReviewTime": 1300000000},
    ])
    write_lines(tmp_path / "meta_Video_Games.json.gz", [
        "{'asin': '0700099867', 'title': 'Dirt 2', 'price': 19.99, 'imUrl': 'http://x.jpg', "
        "'related': {'also_bought': ['B1'], 'also_viewed': ['B00004SVX5', 'B2'], "
        "'bought_together': ['B3']}, 'salesRank': {'Video Games': 12}, 'brand': 'Codemasters', "
        "'categories': [['Video Games', 'PC', 'Games'], ['Video Games', 'Xbox 360']], "
        "'description': 'Race cars.'}",
        "{'asin': 'B00004SVX5', 'title': \"Tony's Pro Skater\"}",
    ])
    data = read_raw(tmp_path)
    assert_schema(data)
    assert data.report["format"] == "amazon2014"
    assert data.interactions.to_dict("list") == {
        "user_id": ["A1", "A2"], "item_id": ["0700099867", "B00004SVX5"],
        "rating": [4.0, pytest.approx(math.nan, nan_ok=True)],
        "timestamp": [1202256000, 1300000000],
    }
    items = items_by_id(data)
    dirt = items["0700099867"]
    assert (dirt["title"], dirt["brand"], dirt["price"], dirt["description"]) == (
        "Dirt 2", "Codemasters", 19.99, "Race cars.")
    assert dirt["also_view"] == ["B00004SVX5", "B2"]  # related.also_viewed, not also_bought
    assert dirt["categories"] == ["Video Games", "PC", "Games", "Xbox 360"]
    assert platform_of(dirt["categories"]) == "PC"  # the first category path's second level
    tony = items["B00004SVX5"]
    assert (tony["title"], tony["brand"], tony["description"]) == ("Tony's Pro Skater", "", "")
    assert math.isnan(tony["price"]) and tony["also_view"] == [] and tony["categories"] == []


def test_amazon_2018(tmp_path):
    write_lines(tmp_path / "Video_Games_5.json.gz", [
        review_2018("U1", "I1", 5.0, 1500000000, vote="3", style={"Format:": " DVD"}),
        review_2018("U2", "I2", 2.0, 1500000100),
        "",  # blank lines are skipped, not bad
    ])
    write_lines(tmp_path / "meta_Video_Games.json.gz", [
        {"category": ["Video Games", "PC"], "description": ["Great game.", "Two discs."],
         "title": "Game One", "brand": "Nintendo", "price": "$1,250.00",
         "also_view": ["I2", "I9"], "also_buy": ["I3"], "asin": "I1", "main_cat": "Video Games"},
        {"category": [], "description": [], "title": '<span class="a-size-medium">',
         "brand": "", "price": "$10.99 - $29.99", "also_view": [], "asin": "I2"},
        {"asin": "I2", "price": ".a-box-inner{background-color:#fff}"},  # duplicates are kept
    ])
    data = read_raw(tmp_path)
    assert_schema(data)
    assert data.report["format"] == "amazon2018"
    assert data.interactions["user_id"].tolist() == ["U1", "U2"]
    assert data.interactions["rating"].tolist() == [5.0, 2.0]
    assert data.interactions["timestamp"].tolist() == [1500000000, 1500000100]
    assert data.items["item_id"].tolist() == ["I1", "I2", "I2"]
    one, two, two_again = data.items.to_dict("records")
    assert one["description"] == "Great game. Two discs."
    assert (one["price"], one["brand"], one["also_view"]) == (1250.0, "Nintendo", ["I2", "I9"])
    assert one["categories"] == ["Video Games", "PC"] and platform_of(one["categories"]) == "PC"
    assert platform_of(two["categories"]) == ""
    assert two["title"] == '<span class="a-size-medium">' and two["price"] == 10.99
    assert math.isnan(two_again["price"]) and two_again["title"] == ""
    files = data.report["files"]
    assert files["Video_Games_5.json.gz"] == {
        "kind": "reviews", "format": "amazon2018", "records": 2, "bad_lines": 0,
        "first_bad_line": None}
    assert files["meta_Video_Games.json.gz"]["kind"] == "meta"


def test_amazon_2023_plain_and_gzip(tmp_path):
    write_lines(tmp_path / "Video_Games.jsonl", [
        {"rating": 4.0, "title": "nice", "text": "good", "images": [], "asin": "C1",
         "parent_asin": "P1", "user_id": "AG1", "timestamp": 1588615855070,
         "helpful_vote": 1, "verified_purchase": True},
        {"rating": 1, "asin": "C2", "user_id": "AG2", "timestamp": 1600000000999},  # no parent
    ])
    write_lines(tmp_path / "meta_Video_Games.jsonl.gz", [
        {"main_category": "Video Games", "title": "Console", "average_rating": 4.5,
         "rating_number": 10, "features": ["fast"], "description": ["Part one.", "Part two."],
         "price": 299.99, "images": [], "videos": [], "store": "Sony",
         "categories": ["Video Games", "PlayStation 4"], "details": {"Brand": "x"},
         "parent_asin": "P1", "bought_together": None},
        {"title": "Cable", "price": None, "store": None, "parent_asin": "P2"},
    ])
    data = read_raw(tmp_path)
    assert_schema(data)
    assert data.report["format"] == "amazon2023"
    assert data.interactions["item_id"].tolist() == ["P1", "C2"]  # parent_asin, else asin
    assert data.interactions["timestamp"].tolist() == [1588615855, 1600000000]  # ms -> s
    assert data.interactions["rating"].tolist() == [4.0, 1.0]
    console, cable = data.items.to_dict("records")
    assert (console["item_id"], console["brand"], console["price"]) == ("P1", "Sony", 299.99)
    assert console["description"] == "Part one. Part two."
    assert console["also_view"] == [] and console["categories"] == ["Video Games", "PlayStation 4"]
    assert platform_of(console["categories"]) == "PlayStation 4" and platform_of(cable["categories"]) == ""
    assert cable["brand"] == "" and math.isnan(cable["price"])


def test_ratings_csv_2014_and_2018_column_orders(tmp_path):
    d2014 = tmp_path / "a"
    d2014.mkdir()
    write_lines(d2014 / "ratings_Video_Games.csv", ["U1,I1,5.0,1200000000", "U2,I2,3.0,1200000001"])
    data = read_raw(d2014)
    assert_schema(data)
    assert data.report["format"] == "amazon2014" and "timestamps" not in data.report
    assert data.interactions["user_id"].tolist() == ["U1", "U2"]
    assert data.interactions["item_id"].tolist() == ["I1", "I2"]
    assert data.items.empty and list(data.items.columns) == ITEM_COLUMNS

    d2018 = tmp_path / "b"
    d2018.mkdir()
    write_lines(d2018 / "Video_Games.csv.gz", ["I1,U1,5.0,1200000000"])
    data = read_raw(d2018)
    assert data.report["format"] == "amazon2018"
    assert data.interactions.iloc[0].tolist() == ["U1", "I1", 5.0, 1200000000]


def test_csv_with_header_maps_by_name_and_uses_row_order(tmp_path):
    write_lines(tmp_path / "ratings.csv", ["item,user,rating", "7,1,5", "8,1,4", "7,2,x"])
    data = read_raw(tmp_path)
    assert data.report["format"] == "csv"
    assert data.report["timestamps"] == "row order (file has none)"
    assert data.interactions["user_id"].tolist() == ["1", "1", "2"]
    assert data.interactions["item_id"].tolist() == ["7", "8", "7"]
    assert data.interactions["timestamp"].tolist() == [0, 1, 2]
    assert math.isnan(data.interactions["rating"].iloc[2])


def test_tab_separated_csv_with_header(tmp_path):
    write_lines(tmp_path / "train.csv", ["user_id\titem_id\ttime", "1\t5\t939859200"])
    data = read_raw(tmp_path)
    assert data.interactions.iloc[0].tolist()[:2] == ["1", "5"]
    assert data.interactions["timestamp"].tolist() == [939859200]
    assert math.isnan(data.interactions["rating"].iloc[0])


def test_ignored_files_and_gzip_without_suffix(tmp_path):
    write_lines(tmp_path / "Video_Games_5.json", [review_2018()], compress=True)
    ignored = (".gitignore", "Video_Games_5.json.gz.dvc", "README.md", "notes.txt", ".hidden.json")
    for name in ignored:
        (tmp_path / name).write_text("not data")
    data = read_raw(tmp_path)
    assert list(data.report["files"]) == ["Video_Games_5.json"]


def test_missing_fields_get_defaults(tmp_path):
    review = {"reviewerID": "U", "asin": "I", "unixReviewTime": 5}
    write_lines(tmp_path / "Video_Games.json", [review])
    write_lines(tmp_path / "meta_Video_Games.json", [{"asin": "I", "also_view": "not a list"}])
    data = read_raw(tmp_path)
    assert math.isnan(data.interactions["rating"].iloc[0])
    item = data.items.iloc[0]
    assert (item["title"], item["brand"], item["description"]) == ("", "", "")
    assert item["also_view"] == [] and item["categories"] == [] and math.isnan(item["price"])


# --- errors ---------------------------------------------------------------------------------


def test_missing_folder(tmp_path):
    with pytest.raises(GamerecError, match="raw data folder not found") as error:
        read_raw(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(error.value)


def test_empty_folder(tmp_path):
    (tmp_path / "README.md").write_text("# notes")
    with pytest.raises(GamerecError, match="no data files") as error:
        read_raw(tmp_path)
    assert str(tmp_path) in str(error.value) and SUPPORTED_FORMATS in str(error.value)


def test_unknown_file_names_it_and_lists_formats(tmp_path):
    write_lines(tmp_path / "Video_Games_5.json.gz", [review_2018()])
    (tmp_path / "Games.item2id").write_text("B1\t0\n")
    with pytest.raises(GamerecError) as error:
        read_raw(tmp_path)
    message = str(error.value)
    assert str(tmp_path / "Games.item2id") in message and SUPPORTED_FORMATS in message
    for pattern in ("reviews_<Category>", "meta_<Category>.jsonl", "ratings_<Category>.csv"):
        assert pattern in message
    assert "\n" not in message


def test_metadata_without_reviews(tmp_path):
    write_lines(tmp_path / "meta_Video_Games.json.gz", [{"asin": "I1", "also_view": []}])
    with pytest.raises(GamerecError, match="no review or ratings file") as error:
        read_raw(tmp_path)
    assert str(tmp_path) in str(error.value) and "meta_Video_Games.json.gz" in str(error.value)


def test_mixed_formats(tmp_path):
    write_lines(tmp_path / "reviews_Video_Games_5.json.gz", [review_2018()])
    write_lines(tmp_path / "meta_Video_Games.jsonl", [{"parent_asin": "P1"}])
    with pytest.raises(GamerecError, match="different formats") as error:
        read_raw(tmp_path)
    assert "amazon2014" in str(error.value) and "amazon2023" in str(error.value)


def test_metadata_named_as_reviews(tmp_path):
    write_lines(tmp_path / "Video_Games.json", [{"asin": "I1", "also_view": [], "title": "x"}])
    with pytest.raises(GamerecError, match="holds item metadata, not reviews"):
        read_raw(tmp_path)


def test_csv_header_without_user_column(tmp_path):
    write_lines(tmp_path / "item_meta.csv", ["item_id\ti_category", "1\t2"])
    with pytest.raises(GamerecError, match="no user_id column"):
        read_raw(tmp_path)


# --- corrupt input --------------------------------------------------------------------------


def _reviews_with_bad_lines(path: Path, good: int) -> None:
    bad = [
        "{not json",
        b"\xff\xfe invalid utf-8",
        "[1, 2]",  # JSON but not a dict
        json.dumps({"reviewerID": "U9", "overall": 5.0, "unixReviewTime": 1}),  # no asin
        json.dumps(review_2018(ts="yesterday")),  # non-integer timestamp
    ]
    write_lines(path, [review_2018(f"U{i}", "I1", 4.0, 1000 + i) for i in range(3)] + bad
                + [review_2018(f"V{i}", "I2", 3.0, 2000 + i) for i in range(good)])


def test_bad_lines_below_threshold_are_counted(tmp_path):
    _reviews_with_bad_lines(tmp_path / "Video_Games_5.json.gz", good=995)
    data = read_raw(tmp_path, max_bad_fraction=0.01)
    assert data.report["files"]["Video_Games_5.json.gz"] == {
        "kind": "reviews", "format": "amazon2018", "records": 998, "bad_lines": 5,
        "first_bad_line": 4}
    assert len(data.interactions) == 998


def test_bad_lines_above_threshold_raise(tmp_path):
    _reviews_with_bad_lines(tmp_path / "Video_Games_5.json.gz", good=92)
    path = tmp_path / "Video_Games_5.json.gz"
    expected = (f"{path}: 5 of 100 lines are corrupt (first at line 4), "
                "above prepare.max_bad_fraction = 0.01")
    with pytest.raises(GamerecError) as error:
        read_raw(tmp_path, max_bad_fraction=0.01)
    assert str(error.value) == expected
    assert read_raw(tmp_path, max_bad_fraction=0.05).report["files"][path.name]["bad_lines"] == 5


def test_literal_metadata_is_never_executed(tmp_path, capfd):
    marker = tmp_path / "pwned"
    write_lines(tmp_path / "reviews_Video_Games.json.gz", [review_2018()])
    write_lines(tmp_path / "meta_Video_Games.json.gz", [
        "{'asin': 'I1', 'title': 'Safe', 'related': {'also_viewed': ['I2']}}",
        f"{{'asin': 'X', 'title': __import__('os').system('echo hi > {marker}')}}",
    ])
    data = read_raw(tmp_path, max_bad_fraction=0.5)
    assert not marker.exists() and "hi" not in capfd.readouterr().out
    assert data.items["item_id"].tolist() == ["I1"]
    assert data.report["files"]["meta_Video_Games.json.gz"]["bad_lines"] == 1
    assert data.report["files"]["meta_Video_Games.json.gz"]["first_bad_line"] == 2


def test_truncated_gzip(tmp_path):
    path = tmp_path / "Video_Games_5.json.gz"
    write_lines(path, [review_2018(f"U{i}", ts=i) for i in range(2000)])
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(GamerecError, match="truncated or not gzip after") as error:
        read_raw(tmp_path)
    assert str(path) in str(error.value)


def test_not_gzip_despite_suffix(tmp_path):
    path = write_lines(tmp_path / "Video_Games_5.json.gz", [review_2018()], compress=False)
    with pytest.raises(GamerecError, match="truncated or not gzip after 0 lines") as error:
        read_raw(tmp_path)
    assert str(path) in str(error.value)


# --- real samples ---------------------------------------------------------------------------

GIFT_CARDS = REAL / "gift_cards_2018"
MAGAZINES = REAL / "magazine_subscriptions_2018"


@pytest.mark.skipif(not GIFT_CARDS.exists(), reason="real Gift Cards sample not available")
def test_real_gift_cards_2018():
    data = read_raw(GIFT_CARDS)
    assert_schema(data)
    reviews = data.interactions
    assert len(reviews) == 2972
    assert (reviews["user_id"].nunique(), reviews["item_id"].nunique()) == (458, 148)
    assert len(data.items) == 1547 and data.items["item_id"].nunique() == 1547
    prices = data.items["price"]
    assert prices.notna().sum() > 300 and (prices.dropna() > 0).all()
    assert prices.max() >= 1250.0  # "$1,250.00" keeps its thousands
    assert (data.items["also_view"].map(len) > 0).sum() == 880
    assert all(f["bad_lines"] == 0 for f in data.report["files"].values())


@pytest.mark.skipif(not MAGAZINES.exists(), reason="real Magazine sample not available")
def test_real_magazine_subscriptions_2018():
    data = read_raw(MAGAZINES)
    assert len(data.interactions) == 2375
    assert len(data.items) == 3385 and data.items["item_id"].nunique() == 2320
    assert (data.items["also_view"].map(len) > 0).sum() == 2070
    assert data.items["price"].isna().all()  # only HTML/CSS junk in this file's prices


def _both_readers(folder, monkeypatch):
    from gamerec.data import readers

    fast = readers.read_raw(folder, max_bad_fraction=0.1)
    monkeypatch.setattr(readers, "COLUMNAR", False)
    slow = readers.read_raw(folder, max_bad_fraction=0.1)
    monkeypatch.setattr(readers, "COLUMNAR", True)
    return fast, slow


def test_the_columnar_review_reader_gives_the_line_readers_rows(tmp_path, monkeypatch):
    from gamerec.config import SyntheticParams
    from gamerec.data.synthetic import generate

    generate(SyntheticParams(users=300, items=120, interactions=4000), tmp_path)
    fast, slow = _both_readers(tmp_path, monkeypatch)
    pd.testing.assert_frame_equal(fast.interactions, slow.interactions)
    pd.testing.assert_frame_equal(fast.items, slow.items)
    assert fast.report == slow.report


def test_a_file_the_columnar_reader_refuses_is_read_line_by_line_with_its_bad_lines(tmp_path, monkeypatch):
    import gzip

    good = [{"reviewerID": f"U{i % 7}", "asin": f"I{i % 5}", "overall": 4.0, "unixReviewTime": 1400000000 + i}
            for i in range(40)]
    lines = [json.dumps(r) for r in good]
    lines[3] = '{"reviewerID": " U1 ", "asin": "I2", "overall": "5", "unixReviewTime": "1400000003"}'  # fine, odd
    lines[9] = "not json"
    with gzip.open(tmp_path / "Video_Games_5.json.gz", "wt") as f:
        f.write("\n".join(lines) + "\n")
    fast, slow = _both_readers(tmp_path, monkeypatch)
    pd.testing.assert_frame_equal(fast.interactions, slow.interactions)
    assert fast.report["files"]["Video_Games_5.json.gz"]["bad_lines"] == 1
    assert fast.interactions.user_id.iloc[3] == "U1" and fast.interactions.rating.iloc[3] == 5.0


@pytest.mark.skipif(not (REAL / "gift_cards_2018").exists(), reason="no real 2018 sample")
def test_the_columnar_reader_agrees_on_real_2018_files(monkeypatch):
    for name in ("gift_cards_2018", "magazine_subscriptions_2018"):
        fast, slow = _both_readers(REAL / name, monkeypatch)
        pd.testing.assert_frame_equal(fast.interactions, slow.interactions)
        assert fast.report == slow.report
