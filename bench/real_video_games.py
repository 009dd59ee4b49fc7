"""Turn the real ReChorus Video Games 2014 sample into the raw Amazon 2014 format.

Where the data comes from: `../shared/data/real/video_games_2014_rechorus/` beside the
repository, described in `shared/data/real/SOURCE.md` section 1. It is the ReChorus
preprocessing of the Amazon product data (2014) Video Games 5-core (McAuley et al.,
SIGIR 2015; He & McAuley, WWW 2016), copied unchanged from the public repository
`tuandung2812/Group-3---Seq_Rec`. Nothing of it is copied into this repository: this
script reads it from the shared folder and writes the converted files under `--out`
(by default `data/raw/video_games_2014`, which is not committed).

What it writes, in the exact layout `gamerec.data.readers.read_raw` reads as "amazon2014":

- `reviews_Video_Games_5.json.gz`: one JSON object per `train.csv` row, keys in the real
  2014 order (reviewerID, asin, reviewerName, helpful, reviewText, overall, summary,
  unixReviewTime, reviewTime). Users and items become `U<user_id>` and `I<item_id>`: the
  ReChorus integer ids cannot be mapped back to reviewerIDs or ASINs.
- `meta_Video_Games.json.gz`: one Python-literal dict per `item_meta.csv` row, written
  with `repr()` so it has single quotes like the real 2014 dump. Only asin, related
  (also_viewed, also_bought) and categories exist in the sample; title, brand, price and
  description are absent for every item, so the item tower must cope without them.

Both files are gzip-compressed without file name or time in the header (same input, same
bytes), and the output folder is written atomically: a killed run leaves nothing half-written.

Usage (from the repository root):

    python bench/real_video_games.py [--src ../shared/data/real/video_games_2014_rechorus]
                                     [--out data/raw/video_games_2014]
"""

from __future__ import annotations

import argparse
import ast
import csv
import gzip
import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO

from gamerec.stage import run_stage
from gamerec.errors import GamerecError
from gamerec.io import atomic_path

DEFAULT_SRC = Path("../shared/data/real/video_games_2014_rechorus")
DEFAULT_OUT = Path("data/raw/video_games_2014")

TRAIN_FILE = "train.csv"
META_FILE = "item_meta.csv"
REVIEWS_OUT = "reviews_Video_Games_5.json.gz"
META_OUT = "meta_Video_Games.json.gz"

TRAIN_HEADER = ["user_id", "item_id", "time"]
META_HEADER = ["item_id", "i_category", "r_complement", "r_substitute"]
TOP_CATEGORY = "Video Games"

# The sample has no rating at all (ReChorus keeps only that a review happened), so every
# review gets the top rating 5.0: a placeholder, not data. Ratings carry no signal here.
PLACEHOLDER_RATING = 5.0

SOURCE_NOTE = "see shared/data/real/SOURCE.md section 1"


@dataclass
class Summary:
    """Counts of what was written, printed as one line."""

    reviews: int = 0
    users: int = 0
    items: int = 0
    items_with_also_viewed: int = 0
    also_viewed_links: int = 0

    def line(self, out: Path) -> str:
        return (
            f"real_video_games: wrote {out}: {self.reviews} reviews, {self.users} users, "
            f"{self.items} items, {self.items_with_also_viewed} items with also_viewed, "
            f"{self.also_viewed_links} also_viewed links"
        )


# --- reading the ReChorus files -------------------------------------------------------------


def _source_file(src: Path, name: str) -> Path:
    path = src / name
    if not path.is_file():
        raise GamerecError(f"{path}: file not found in the ReChorus Video Games sample; {SOURCE_NOTE}")
    return path


def _tsv_rows(path: Path, header: list[str]) -> Iterator[tuple[int, list[str]]]:
    """Yield (line number, cells) of a tab-separated file after checking its header row."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle, delimiter="\t")
            first = next(reader, None)
            if first != header:
                raise GamerecError(
                    f"{path}: header row {first!r} is not the expected tab-separated "
                    f"{header!r}; {SOURCE_NOTE}"
                )
            for cells in reader:
                if cells:  # a trailing blank line is not a row
                    yield reader.line_num, cells
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise GamerecError(f"{path}: cannot read the file ({error})") from error


def _int_cell(path: Path, line: int, name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise GamerecError(f"{path}: line {line}: {name} {value!r} is not an integer") from None


def _id_list(path: Path, line: int, name: str, value: str) -> list[int]:
    """A Python-literal list of integer item ids, read with literal_eval (never runs code)."""
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        parsed = None
    if not isinstance(parsed, list) or not all(
        isinstance(x, int) and not isinstance(x, bool) for x in parsed
    ):
        raise GamerecError(
            f"{path}: line {line}: {name} {value[:60]!r} is not a Python list of item ids"
        )
    return parsed


# --- writing the Amazon 2014 files ----------------------------------------------------------


@contextmanager
def _gzip_text(path: Path) -> Iterator[IO[str]]:
    """A text stream into a gzip file without file name or time in its header."""
    with open(path, "wb") as raw, gzip.GzipFile(
        filename="", mode="wb", fileobj=raw, mtime=0
    ) as packed, io.TextIOWrapper(packed, encoding="utf-8", newline="\n") as text:
        yield text


def review_time(timestamp: int) -> str:
    """The 2014 `reviewTime` text, e.g. "09 7, 2013": UTC, zero-padded month, plain day."""
    day = datetime.fromtimestamp(timestamp, tz=timezone.utc)
    return f"{day.month:02d} {day.day}, {day.year}"


def _write_reviews(train: Path, out: Path, summary: Summary) -> None:
    users: set[int] = set()
    with _gzip_text(out) as handle:
        for line, cells in _tsv_rows(train, TRAIN_HEADER):
            if len(cells) != len(TRAIN_HEADER):
                raise GamerecError(f"{train}: line {line}: expected 3 tab-separated cells, got {len(cells)}")
            user, item, time = (_int_cell(train, line, n, c) for n, c in zip(TRAIN_HEADER, cells))
            record = {
                "reviewerID": f"U{user}",
                "asin": f"I{item}",
                "reviewerName": "",
                "helpful": [0, 0],
                "reviewText": "",
                "overall": PLACEHOLDER_RATING,
                "summary": "",
                "unixReviewTime": time,
                "reviewTime": review_time(time),
            }
            handle.write(json.dumps(record) + "\n")
            users.add(user)
            summary.reviews += 1
    summary.users = len(users)
    if not summary.reviews:
        raise GamerecError(f"{train}: no interaction rows after the header; {SOURCE_NOTE}")


def _write_meta(meta: Path, out: Path, summary: Summary) -> None:
    with _gzip_text(out) as handle:
        for line, cells in _tsv_rows(meta, META_HEADER):
            if len(cells) != len(META_HEADER):
                raise GamerecError(f"{meta}: line {line}: expected 4 tab-separated cells, got {len(cells)}")
            item = _int_cell(meta, line, "item_id", cells[0])
            category = _int_cell(meta, line, "i_category", cells[1])
            also_bought = _id_list(meta, line, "r_complement", cells[2])
            also_viewed = _id_list(meta, line, "r_substitute", cells[3])
            record = {
                "asin": f"I{item}",
                "related": {
                    "also_viewed": [f"I{x}" for x in also_viewed],
                    "also_bought": [f"I{x}" for x in also_bought],
                },
                # i_category is the id of the level-2 category; its name was not kept.
                "categories": [[TOP_CATEGORY, f"category {category}"] if category else [TOP_CATEGORY]],
            }
            handle.write(repr(record) + "\n")  # a Python literal, like the real 2014 dump
            summary.items += 1
            summary.items_with_also_viewed += bool(also_viewed)
            summary.also_viewed_links += len(also_viewed)


def convert(src: Path, out: Path) -> Summary:
    """Write the two Amazon 2014 files for the sample in `src` into the folder `out`."""
    if not src.is_dir():
        raise GamerecError(
            f"{src}: ReChorus Video Games 2014 source folder not found; pass --src; {SOURCE_NOTE}"
        )
    train = _source_file(src, TRAIN_FILE)
    meta = _source_file(src, META_FILE)
    if out.exists() and not out.is_dir():
        raise GamerecError(f"{out}: is a file, expected an output folder")
    summary = Summary()
    with atomic_path(out) as tmp:
        tmp.mkdir()
        _write_reviews(train, tmp / REVIEWS_OUT, summary)
        _write_meta(meta, tmp / META_OUT, summary)
    return summary


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=DEFAULT_SRC,
                        help=f"ReChorus video_games_2014_rechorus folder (default {DEFAULT_SRC})")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"output raw data folder, replaced atomically (default {DEFAULT_OUT})")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    summary = convert(args.src, args.out)
    print(summary.line(args.out))


if __name__ == "__main__":
    run_stage(main)
