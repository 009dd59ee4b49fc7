"""The synthetic Amazon 2018 dump: exact format, determinism, learnable structure and real quirks."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from conftest import REAL_DATA
from gamerec.config import SyntheticParams
from gamerec.data.synthetic import META_FILE, REVIEWS_FILE, generate, simulate

# Small enough to run in a blink; 4 genres x 3 platforms keep the buckets populated at 80 items.
TINY = SyntheticParams(users=200, items=80, interactions=3000, genres=4, platforms=3, brands=12)

REVIEW_KEYS = ["image", "overall", "vote", "verified", "reviewTime", "reviewerID", "asin", "style",
               "reviewerName", "reviewText", "summary", "unixReviewTime"]
OPTIONAL_REVIEW_KEYS = {"image", "vote", "style"}
META_KEYS = ["category", "tech1", "description", "fit", "title", "also_buy", "tech2", "brand", "feature",
             "rank", "also_view", "details", "main_cat", "similar_item", "date", "price", "asin",
             "imageURL", "imageURLHighRes"]


def _lines(path: Path) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return f.read().splitlines()


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("synthetic")
    summary = generate(TINY, folder)
    meta_lines = _lines(folder / META_FILE)
    return {
        "dir": folder,
        "summary": summary,
        "reviews": [json.loads(line) for line in _lines(folder / REVIEWS_FILE)],
        "meta_lines": meta_lines,
        "meta": [json.loads(line) for line in meta_lines],
        "world": simulate(TINY),
    }


def test_same_seed_gives_identical_bytes_and_another_seed_differs(tmp_path: Path, out: dict) -> None:
    again, other = tmp_path / "again", tmp_path / "other"
    again.mkdir()
    other.mkdir()
    generate(TINY, again)
    generate(SyntheticParams(**{**TINY.__dict__, "seed": 1}), other)
    for name in (REVIEWS_FILE, META_FILE):
        assert (again / name).read_bytes() == (out["dir"] / name).read_bytes()
        assert (other / name).read_bytes() != (out["dir"] / name).read_bytes()


def test_reviews_have_every_field_in_the_real_order_with_the_right_types(out: dict) -> None:
    for r in out["reviews"]:
        assert list(r) == [k for k in REVIEW_KEYS if k in r]
        assert set(REVIEW_KEYS) - OPTIONAL_REVIEW_KEYS <= set(r)
        assert isinstance(r["overall"], float) and r["overall"] in {1.0, 2.0, 3.0, 4.0, 5.0}
        assert isinstance(r["verified"], bool)
        assert re.fullmatch(r"A[0-9A-Z]{13}", r["reviewerID"])
        assert re.fullmatch(r"B0[0-9A-Z]{8}", r["asin"])
        assert all(isinstance(r[k], str) and r[k] for k in ("reviewerName", "reviewText", "summary"))
        assert isinstance(r["unixReviewTime"], int) and r["unixReviewTime"] % 86400 == 0
        day = dt.datetime.fromtimestamp(r["unixReviewTime"], dt.timezone.utc)
        assert r["reviewTime"] == f"{day.month:02d} {day.day}, {day.year}"
        assert TINY.start_year <= day.year <= TINY.end_year
        if "vote" in r:
            assert re.fullmatch(r"[1-9]\d{0,2}(,\d{3})*", r["vote"])
        if "style" in r:
            assert r["style"] and all(isinstance(v, str) and v.startswith(" ") for v in r["style"].values())
        if "image" in r:
            assert r["image"] and all(u.startswith("https://") for u in r["image"])
    present = {k for r in out["reviews"] for k in r}
    assert {"vote", "style"} <= present  # optional keys do occur (images are rare by design)


def test_metadata_has_every_field_in_the_real_order_with_the_right_types(out: dict) -> None:
    for m in out["meta"]:
        assert list(m) == META_KEYS
        assert m["category"][0] == "Video Games" and m["category"][-1] == "Games"
        assert m["main_cat"] == "Video Games"
        assert all(m[k] == "" for k in ("tech1", "fit", "tech2", "similar_item", "date"))
        assert all(isinstance(m[k], str) for k in ("title", "brand", "price", "asin"))
        for key in ("description", "also_buy", "feature", "also_view", "imageURL", "imageURLHighRes"):
            assert isinstance(m[key], list) and all(isinstance(x, str) for x in m[key])
        assert isinstance(m["rank"], (list, str)) and isinstance(m["details"], dict)
        assert len(m["imageURL"]) == len(m["imageURLHighRes"]) >= 1
    assert any(isinstance(m["rank"], str) for m in out["meta"])
    assert any(isinstance(m["rank"], list) and m["rank"] for m in out["meta"])


def test_count_is_near_the_target_pairs_are_unique_and_most_ids_are_5_core(out: dict) -> None:
    reviews = out["reviews"]
    assert abs(len(reviews) - TINY.interactions) <= 0.2 * TINY.interactions
    pairs = [(r["reviewerID"], r["asin"]) for r in reviews]
    assert len(set(pairs)) == len(pairs)
    per_user = np.unique([u for u, _ in pairs], return_counts=True)[1]
    per_item = np.unique([i for _, i in pairs], return_counts=True)[1]
    assert (per_user >= 5).mean() >= 0.85 and (per_item >= 5).mean() >= 0.9
    assert out["summary"]["reviews"] == len(reviews)


def _genre_of(world) -> dict[str, int]:
    return dict(zip(world.catalogue.asin.tolist(), world.catalogue.genre.tolist()))


def test_files_match_the_hidden_world(out: dict) -> None:
    world = out["world"]
    assert len(out["reviews"]) == world.user.size
    assert {r["asin"] for r in out["reviews"]} <= set(world.catalogue.asin.tolist())
    assert {r["reviewerID"] for r in out["reviews"]} == set(world.users.reviewer_id.tolist())


def test_users_review_their_genres_far_more_than_chance_and_rate_them_higher(out: dict) -> None:
    world = out["world"]
    genre = _genre_of(world)
    user_index = {u: i for i, u in enumerate(world.users.reviewer_id.tolist())}
    mass = np.bincount(world.catalogue.genre, world.catalogue.popularity, minlength=TINY.genres)
    hits, chance, stars = [], [], {True: [], False: []}
    for r in out["reviews"]:
        mine = set(world.users.genres[user_index[r["reviewerID"]]].tolist())
        hit = genre[r["asin"]] in mine
        hits.append(hit)
        chance.append(mass[list(mine)].sum())  # share if the user ignored their taste
        stars[hit].append(r["overall"])
    assert np.mean(hits) > np.mean(chance) + 0.15
    assert np.mean(stars[True]) > np.mean(stars[False]) + 0.3


@pytest.fixture(scope="module")
def tasteful(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """TINY with also_view lists that follow genre and popularity only (also_view_taste 1; the default is 0.1)."""
    folder = tmp_path_factory.mktemp("tasteful")
    params = SyntheticParams(**{**TINY.__dict__, "also_view_taste": 1.0})
    generate(params, folder)
    return {"world": simulate(params), "meta": [json.loads(line) for line in _lines(folder / META_FILE)],
            "reviews": [json.loads(line) for line in _lines(folder / REVIEWS_FILE)]}


def test_also_view_is_same_genre_popular_and_sometimes_bought_later(tasteful: dict) -> None:
    out = tasteful
    world = out["world"]
    genre = _genre_of(world)
    links = [(m["asin"], v) for m in out["meta"] for v in m["also_view"] if v in genre]
    same = np.mean([genre[a] == genre[b] for a, b in links])
    shares = np.bincount(world.catalogue.genre, minlength=TINY.genres) / TINY.items
    assert same > 0.7 and same > 2 * (shares**2).sum()
    # Hard negatives: also_view targets are more reviewed than the average item.
    count = defaultdict(int)
    for r in out["reviews"]:
        count[r["asin"]] += 1
    assert np.mean([count[b] for _, b in links]) > np.mean(list(count.values()))
    # Some also_view items of an earlier review are reviewed later by the same user.
    also_view = {m["asin"]: set(m["also_view"]) for m in out["meta"]}
    history = defaultdict(list)
    for r in out["reviews"]:
        history[r["reviewerID"]].append((r["unixReviewTime"], r["asin"]))
    later = total = 0
    for events in history.values():
        events.sort()
        for when, asin in events:
            earlier = set().union(*(also_view.get(a, set()) for t, a in events if t < when))
            total += 1
            later += asin in earlier
    assert 0 < later / total < 1


def test_real_dump_quirks_are_present(out: dict) -> None:
    meta, lines = out["meta"], out["meta_lines"]
    assert len(lines) > len(set(lines))  # duplicated metadata lines, byte for byte
    catalogue = {m["asin"] for m in meta}
    reviewed = {r["asin"] for r in out["reviews"]}
    assert reviewed - catalogue  # reviewed items without metadata
    assert any(v not in catalogue and v not in reviewed for m in meta for v in m["also_view"])
    prices = [m["price"] for m in {m["asin"]: m for m in meta}.values()]
    assert any(re.fullmatch(r"\$\d{1,3}(,\d{3})+\.\d{2}", p) for p in prices)
    assert any(" - " in p for p in prices)
    assert any(p and not p.startswith("$") for p in prices)
    assert any(re.fullmatch(r"\$\d+\.\d{2}", p) for p in prices)
    assert 0.25 <= np.mean([p == "" for p in prices]) <= 0.42
    assert any("<" in d for m in meta for d in m["description"])
    summary = out["summary"]
    assert summary["duplicate_meta"] == len(lines) - len(set(lines))
    assert summary["missing_meta"] == len(reviewed - catalogue)


@pytest.mark.parametrize("overrides", [
    {"users": 10, "items": 10, "interactions": 10},  # fewer items than genres, fewer draws than users
    {"users": 50, "items": 60, "interactions": 800, "genres": 20, "platforms": 11, "brands": 3},
])
def test_odd_sizes_still_write_valid_files(tmp_path: Path, overrides: dict) -> None:
    params = SyntheticParams(**overrides)
    summary = generate(params, tmp_path)
    reviews = [json.loads(line) for line in _lines(tmp_path / REVIEWS_FILE)]
    meta = [json.loads(line) for line in _lines(tmp_path / META_FILE)]
    assert summary["reviews"] == len(reviews) > 0 and len(meta) == summary["meta_lines"]


REAL_LATER_SHARE = 0.0191  # bench/also_view_rate.py on the real Video Games 2014 sample (SOURCE.md section 1)


def test_default_also_view_lists_hold_what_users_buy_later_as_often_as_real_ones(tmp_path):
    """The statistic of bench/also_view_rate.py on the default synthetic data, within 2x of the real data's."""
    import sys

    from gamerec.data.prepare import prepare, write_prepared
    from gamerec.data.readers import read_raw
    from gamerec.config import PrepareParams
    from gamerec.prepared import Prepared

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import also_view_rate

    for folder in ("raw", "loose"):
        (tmp_path / folder).mkdir()
    generate(SyntheticParams(), tmp_path / "raw")
    write_prepared(prepare(read_raw(tmp_path / "raw"), PrepareParams(raw_dir=str(tmp_path / "raw"))), tmp_path / "prepared")
    synthetic = also_view_rate.rates(Prepared(tmp_path / "prepared"))
    assert REAL_LATER_SHARE / 2 <= synthetic["later_share"] <= REAL_LATER_SHARE * 2
    loose = SyntheticParams(also_view_taste=1.0)  # lists that follow genre and popularity only
    generate(loose, tmp_path / "loose")
    write_prepared(prepare(read_raw(tmp_path / "loose"), PrepareParams(raw_dir=str(tmp_path / "loose"))),
                   tmp_path / "loose_prepared")
    assert also_view_rate.rates(Prepared(tmp_path / "loose_prepared"))["later_share"] > 4 * synthetic["later_share"]


@pytest.mark.skipif(not (REAL_DATA / "video_games_2014_rechorus").exists(), reason="no real Video Games 2014 sample")
def test_the_real_figure_is_what_the_real_sample_gives(tmp_path):
    import subprocess
    import sys

    from gamerec.config import PrepareParams
    from gamerec.data.prepare import prepare, write_prepared
    from gamerec.data.readers import read_raw
    from gamerec.prepared import Prepared

    bench = Path(__file__).resolve().parents[1] / "bench"
    subprocess.run([sys.executable, str(bench / "real_video_games.py"), "--src", str(REAL_DATA / "video_games_2014_rechorus"),
                    "--out", str(tmp_path / "raw")], check=True, capture_output=True)
    raw = str(tmp_path / "raw")
    write_prepared(prepare(read_raw(raw), PrepareParams(raw_dir=raw, min_interactions=1)), tmp_path / "prepared")
    sys.path.insert(0, str(bench))
    import also_view_rate

    assert also_view_rate.rates(Prepared(tmp_path / "prepared"))["later_share"] == pytest.approx(REAL_LATER_SHARE, abs=5e-4)
