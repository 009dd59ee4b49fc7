"""Read a folder of raw Amazon review files, in any supported format, into two fixed frames.

Whatever the dump (Amazon 2014, 2018, 2023 or a ratings-only CSV), `read_raw` returns the
same `interactions` and `items` columns, so nothing downstream knows which format it came
from. The format is detected from the file names and from the first parseable record of
each file, never from a parameter: the data says what it is.

Files are streamed line by line (datasets reach gigabytes): each line is parsed on its own,
appended to plain column lists, and one DataFrame is built at the end. A line that cannot be
used is counted as bad instead of stopping the run, up to `max_bad_fraction` per file.
"""

from __future__ import annotations

import ast
import csv
import gzip
import json
import math
import re
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd

from gamerec import progress
from gamerec.data.prices import parse_price
from gamerec.errors import GamerecError

INTERACTION_COLUMNS = ["user_id", "item_id", "rating", "timestamp"]
ITEM_COLUMNS = ["item_id", "title", "brand", "price", "description", "also_view", "categories"]

# Written once, shown in every "what is supported" error.
SUPPORTED_FORMATS = (
    "Amazon 2014 (reviews_<Category>[_5].json, meta_<Category>.json with Python-literal lines, "
    "ratings_<Category>.csv = user,item,rating,timestamp); "
    "Amazon 2018 (<Category>[_5].json, meta_<Category>.json, "
    "<Category>.csv = item,user,rating,timestamp); "
    "Amazon 2023 (<Category>.jsonl, meta_<Category>.jsonl); "
    "any *.csv with a header row naming user/user_id/reviewerID, item/item_id/asin/parent_asin, "
    "and optionally rating/overall and timestamp/time/unixReviewTime; "
    "each file plain or gzip-compressed (.gz)"
)

# Files that live next to data (DVC pointers, notes) and are never data themselves.
_IGNORED_SUFFIXES = (".dvc", ".md", ".txt")

_INT64 = np.iinfo(np.int64)
# How far `_sniff` looks for a first usable record before falling back to the file name.
_SNIFF_LINES = 1000
PROGRESS_LINES = 10_000  # lines read between two updates of the progress bar


@dataclass
class RawData:
    """The raw dump as two frames plus a JSON-serialisable report of what was read.

    `items` may hold one item_id several times (raw metadata dumps repeat lines); the caller
    counts and dedupes them.
    """

    interactions: pd.DataFrame
    items: pd.DataFrame
    report: dict


# --- what each format looks like ------------------------------------------------------------


@dataclass(frozen=True)
class _NameRule:
    """A file-name pattern (after any .gz is stripped) and what such a file holds."""

    regex: re.Pattern[str]
    kind: str  # "reviews" | "meta" | "ratings"
    format: str  # the format the name suggests; the first record may refine it


# First match wins, so the prefixed names come before the bare <Category> ones.
_NAME_RULES = [
    _NameRule(re.compile(r"reviews_.+\.json"), "reviews", "amazon2014"),
    _NameRule(re.compile(r"ratings_.+\.csv"), "ratings", "amazon2014"),
    _NameRule(re.compile(r"meta_.+\.jsonl"), "meta", "amazon2023"),
    _NameRule(re.compile(r"meta_.+\.json"), "meta", "amazon2018"),
    _NameRule(re.compile(r".+\.jsonl"), "reviews", "amazon2023"),
    _NameRule(re.compile(r".+\.json"), "reviews", "amazon2018"),
    _NameRule(re.compile(r".+\.csv"), "ratings", "amazon2018"),
]


@dataclass(frozen=True)
class _ReviewSpec:
    """Where a review record keeps the four interaction fields."""

    user: tuple[str, ...]  # keys tried in order; the first usable id wins
    item: tuple[str, ...]
    rating: str
    timestamp: str
    timestamp_divisor: int = 1  # 2023 stores milliseconds


_REVIEWS_2014_2018 = _ReviewSpec(("reviewerID",), ("asin",), "overall", "unixReviewTime")
_REVIEW_SPECS = {
    "amazon2014": _REVIEWS_2014_2018,
    "amazon2018": _REVIEWS_2014_2018,
    "amazon2023": _ReviewSpec(("user_id",), ("parent_asin", "asin"), "rating", "timestamp", 1000),
}


@dataclass(frozen=True)
class _MetaSpec:
    """Where a metadata record keeps the item fields; title/price/description share names."""

    item: tuple[str, ...]
    brand: str
    categories: str
    also_view: tuple[str, ...]  # path through nested dicts; () = the format has none
    literal: bool = False  # lines are Python literals (single quotes), read with literal_eval


_META_SPECS = {
    "amazon2014": _MetaSpec(("asin",), "brand", "categories", ("related", "also_viewed"), True),
    "amazon2018": _MetaSpec(("asin",), "brand", "category", ("also_view",)),
    "amazon2023": _MetaSpec(("parent_asin", "asin"), "store", "categories", ()),
}

# Keys that tell formats apart when the name cannot (meta_<Category>.json is 2014 or 2018).
_USER_KEYS = {"reviewerID", "user_id"}
_META_MARKERS = {
    "amazon2014": {"related", "imUrl", "salesRank"},
    "amazon2023": {"parent_asin", "main_category", "store"},
    "amazon2018": {"also_view", "also_buy", "main_cat", "category"},
}
_ANY_META_KEY = set().union(*_META_MARKERS.values(), {"categories"})

# Headerless CSV column orders, and the header names a CSV may use instead.
_CSV_ORDERS = {
    "amazon2014": ("user_id", "item_id", "rating", "timestamp"),
    "amazon2018": ("item_id", "user_id", "rating", "timestamp"),
}
_CSV_ALIASES = {
    "user_id": {"user", "user_id", "reviewerid"},
    "item_id": {"item", "item_id", "asin", "parent_asin"},
    "rating": {"rating", "overall"},
    "timestamp": {"timestamp", "time", "unixreviewtime"},
}
_ROW_ORDER_NOTE = "row order (file has none)"


@dataclass
class _RawFile:
    """One data file in the folder, once its name and first record have been looked at."""

    path: Path
    kind: str
    format: str
    csv_columns: dict[str, int] | None = None  # column positions, for ratings files
    csv_delimiter: str = ","
    csv_has_header: bool = False


@dataclass
class _FileStats:
    records: int = 0
    bad_lines: int = 0
    first_bad_line: int | None = None

    def bad(self, line_number: int) -> None:
        self.bad_lines += 1
        if self.first_bad_line is None:
            self.first_bad_line = line_number


@dataclass
class _Columns:
    """Plain lists, one per output column: appending to lists is fast, frames are built once."""

    names: list[str]
    lists: list[list[Any]] = field(init=False)

    def __post_init__(self) -> None:
        self.lists = [[] for _ in self.names]

    def append(self, row: tuple) -> None:
        for column, value in zip(self.lists, row):
            column.append(value)


# --- public entry point ---------------------------------------------------------------------


def read_raw(raw_dir: str | Path, max_bad_fraction: float = 0.01) -> RawData:
    """Read every data file in `raw_dir` into interactions and items frames.

    Interactions: user_id, item_id (str), rating (float32, NaN when absent), timestamp
    (int64 unix seconds). Items: item_id, title, brand, description (str, "" when absent),
    price (float64, NaN when missing), also_view and categories (lists of str).
    Raises GamerecError (one line, naming the path) for a missing or empty folder, an
    unrecognised file, mixed formats, metadata without reviews, a truncated gzip file, or a
    file whose share of corrupt lines exceeds `max_bad_fraction`.
    """
    if not 0 <= max_bad_fraction <= 1:
        raise GamerecError(
            f"prepare.max_bad_fraction = {max_bad_fraction} must be between 0 and 1"
        )
    raw_dir = Path(raw_dir)
    files = [_sniff(path) for path in _data_paths(raw_dir)]
    folder_format = _check_folder(raw_dir, files)

    interactions = _Columns(INTERACTION_COLUMNS)
    items = _Columns(ITEM_COLUMNS)
    report: dict = {"format": folder_format, "files": {}}
    for raw_file in files:
        stats = _read_file(raw_file, interactions, items)
        _check_bad_lines(raw_file.path, stats, max_bad_fraction)
        report["files"][raw_file.path.name] = {
            "kind": raw_file.kind,
            "format": raw_file.format,
            "records": stats.records,
            "bad_lines": stats.bad_lines,
            "first_bad_line": stats.first_bad_line,
        }
        if raw_file.csv_columns is not None and "timestamp" not in raw_file.csv_columns:
            report["timestamps"] = _ROW_ORDER_NOTE
    if not interactions.lists[0]:
        names = ", ".join(f.path.name for f in files if f.kind != "meta")
        raise GamerecError(f"{raw_dir}: no usable review records in {names} (empty, or every line corrupt)")
    return RawData(_interactions_frame(interactions), _items_frame(items), report)


# --- finding and classifying files ----------------------------------------------------------


def _data_paths(raw_dir: Path) -> list[Path]:
    """The folder's data files, sorted so that row order never depends on the file system."""
    if not raw_dir.exists():
        raise GamerecError(
            f"{raw_dir}: raw data folder not found; put Amazon review files there "
            f"(e.g. with dvc import-url) or run the synthesize stage; supported formats: "
            f"{SUPPORTED_FORMATS}"
        )
    if not raw_dir.is_dir():
        raise GamerecError(f"{raw_dir}: is a file, expected a raw data folder")
    paths = sorted(p for p in raw_dir.iterdir() if p.is_file() and not _ignored(p.name))
    if not paths:
        raise GamerecError(
            f"{raw_dir}: raw data folder has no data files (hidden, *.dvc, *.md and *.txt "
            f"files are ignored); supported formats: {SUPPORTED_FORMATS}"
        )
    return paths


def _ignored(name: str) -> bool:
    return name.startswith(".") or name.endswith(_IGNORED_SUFFIXES)


def _name_rule(path: Path) -> _NameRule:
    name = path.name.removesuffix(".gz")
    for rule in _NAME_RULES:
        if rule.regex.fullmatch(name):
            return rule
    raise GamerecError(f"{path}: unrecognised file; supported formats: {SUPPORTED_FORMATS}")


def _sniff(path: Path) -> _RawFile:
    """Classify `path` by its name, refined by its first parseable record."""
    rule = _name_rule(path)
    if rule.kind == "ratings":
        return _sniff_csv(path, rule.format)
    record, literal = _first_record(path)
    fmt = _content_format(path, rule, record, literal)
    return _RawFile(path, rule.kind, fmt)


def _first_record(path: Path) -> tuple[dict | None, bool]:
    """The first line that parses to a dict, and whether it needed literal_eval."""
    for count, (_, raw) in enumerate(_lines(path)):
        if count >= _SNIFF_LINES:
            break
        text = _decode(raw)
        if text is None:
            continue
        record = _parse_json(text)
        literal = record is None
        if literal:
            record = _literal(text)
        if isinstance(record, dict):
            return record, literal
    return None, False


def _content_format(path: Path, rule: _NameRule, record: dict | None, literal: bool) -> str:
    """The file's format: the name's guess, corrected by the keys of its first record."""
    if record is None:  # nothing parseable: the bad-line check will report the file
        return rule.format
    keys = set(record)
    if rule.kind == "reviews":
        if not keys & _USER_KEYS and keys & _ANY_META_KEY:
            raise GamerecError(
                f"{path}: holds item metadata, not reviews; name metadata files "
                f"meta_<Category>.json or meta_<Category>.jsonl"
            )
        if "user_id" in keys:
            return "amazon2023"
        if "reviewerID" in keys and rule.format == "amazon2023":
            return "amazon2018"  # 2014 and 2018 reviews share keys; only a name tells them apart
        return rule.format
    if keys & _USER_KEYS:
        raise GamerecError(f"{path}: holds reviews, not item metadata; drop the meta_ prefix")
    if literal:
        return "amazon2014"
    for fmt, markers in _META_MARKERS.items():
        if keys & markers:
            return fmt
    return rule.format


def _sniff_csv(path: Path, name_format: str) -> _RawFile:
    """Find the delimiter and whether a header row maps the columns by name."""
    first = next((_decode(raw) for _, raw in _lines(path) if raw.strip()), None) or ""
    delimiter = "\t" if "\t" in first and "," not in first else ","
    header = [cell.strip().lower() for cell in _csv_cells(first, delimiter)]
    if not any(cell in names for cell in header for names in _CSV_ALIASES.values()):
        order = _CSV_ORDERS[name_format]
        return _RawFile(path, "ratings", name_format, dict(zip(order, range(4))), delimiter)
    columns = {}
    for column, names in _CSV_ALIASES.items():
        position = next((i for i, cell in enumerate(header) if cell in names), None)
        if position is not None:
            columns[column] = position
    for required in ("user_id", "item_id"):
        if required not in columns:
            raise GamerecError(
                f"{path}: header row {first.strip()!r} has no {required} column; expected "
                f"one of {', '.join(sorted(_CSV_ALIASES[required]))}"
            )
    return _RawFile(path, "ratings", "csv", columns, delimiter, csv_has_header=True)


def _check_folder(raw_dir: Path, files: list[_RawFile]) -> str:
    """One format per folder, and at least one file with interactions; returns the format."""
    formats = sorted({f.format for f in files})
    if len(formats) > 1:
        listing = ", ".join(f"{f.path.name} ({f.format})" for f in files)
        raise GamerecError(
            f"{raw_dir}: files of different formats in one folder: {listing}; "
            "keep one format per folder"
        )
    if all(f.kind == "meta" for f in files):
        names = ", ".join(f.path.name for f in files)
        raise GamerecError(
            f"{raw_dir}: only metadata ({names}), no review or ratings file; "
            f"supported formats: {SUPPORTED_FORMATS}"
        )
    return formats[0]


# --- streaming lines ------------------------------------------------------------------------


def _is_gzip(path: Path) -> bool:
    """By name or by magic bytes, so a .gz file that lost its suffix is still read."""
    if path.name.endswith(".gz"):
        return True
    with path.open("rb") as handle:
        return handle.read(2) == b"\x1f\x8b"


def _lines(path: Path, show: bool = False) -> Iterator[tuple[int, bytes]]:
    """Yield (1-based line number, raw bytes), turning read failures into GamerecError; `show`: a progress bar."""
    line_number = 0
    try:
        opener = gzip.open if _is_gzip(path) else open
        with opener(path, "rb") as handle, progress.bar(desc=f"prepare: {path.name}", unit=" lines",
                                                          unit_scale=True, show=show) as shown:
            for line_number, raw in enumerate(handle, 1):
                yield line_number, raw
                if line_number % PROGRESS_LINES == 0:
                    shown.update(PROGRESS_LINES)
    except (EOFError, zlib.error, gzip.BadGzipFile) as error:
        raise GamerecError(
            f"{path}: gzip data is truncated or not gzip after {line_number} lines ({error}); "
            "download the file again"
        ) from error
    except OSError as error:
        raise GamerecError(f"{path}: cannot read the file ({error})") from error


def _decode(raw: bytes) -> str | None:
    """The line as text; None for a blank line or one that is not UTF-8 (both are unusable)."""
    try:
        text = raw.decode("utf-8").lstrip("\ufeff")  # a BOM may open the first line
    except UnicodeDecodeError:
        return None
    return text if text.strip() else None


def _literal(text: str) -> object:
    """A Python-literal line (2014 metadata) via literal_eval, which never runs code."""
    try:
        return ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None


def _parse_json(text: str) -> object:
    try:
        return orjson.loads(text)  # several times faster than json.loads on millions of lines
    except orjson.JSONDecodeError:
        pass
    try:  # what orjson rejects and json accepts: NaN/Infinity literals, integers past 64 bits
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def _parse_json_or_literal(text: str) -> object:
    record = _parse_json(text)  # strict-JSON copies of 2014 metadata exist and parse faster
    return _literal(text) if record is None else record


# --- reading one file -----------------------------------------------------------------------


def _read_file(raw_file: _RawFile, interactions: _Columns, items: _Columns) -> _FileStats:
    """Append the file's rows to the matching columns and count its bad lines."""
    path = raw_file.path
    if raw_file.kind == "ratings":
        to_row = partial(_csv_row, raw_file)
        return _read_lines(path, to_row, interactions, skip_first=raw_file.csv_has_header)
    if raw_file.kind == "reviews":
        review_spec = _REVIEW_SPECS[raw_file.format]
        rows = _columnar_reviews(path, review_spec) if COLUMNAR else None
        if rows is not None:  # a clean file, read whole by pyarrow
            for column, values in zip(interactions.lists, rows):
                column.extend(values)
            return _FileStats(records=len(rows[0]))
        to_row = partial(_json_row, _parse_json, partial(_review_row, review_spec))
        return _read_lines(path, to_row, interactions)
    meta_spec = _META_SPECS[raw_file.format]
    parse = _parse_json_or_literal if meta_spec.literal else _parse_json
    return _read_lines(path, partial(_json_row, parse, partial(_meta_row, meta_spec)), items)


COLUMNAR = True  # review files are tried with pyarrow's JSON reader first (tests turn it off to compare)


def _opens_with_ascii(head: bytes) -> bool:
    """Whether a file starts with ASCII, as a JSON line does; a BOM (rare) is left to the line reader."""
    return not head or head[0] < 0x80


def _columnar_reviews(path: Path, spec: _ReviewSpec) -> tuple[list, list, list, list] | None:
    """The review file's rows read by pyarrow, 20-30x faster than line by line, or None for the line reader.

    Only a file every line of which the line reader would take as it is qualifies: a JSON
    object per line, ids strings without surrounding space, an integer timestamp, a numeric or
    missing rating. Anything else (a corrupt line, an id given as a number, a timestamp as a
    string) makes pyarrow fail or a check below refuse, and the line reader, which counts and
    reports bad lines, reads the file instead: the rows are the same either way (tested).
    """
    import pyarrow as pa
    from pyarrow import compute as pc
    from pyarrow import json as pajson

    fields = [*dict.fromkeys([*spec.user, *spec.item])]
    schema = pa.schema([(name, pa.string()) for name in fields] + [(spec.rating, pa.float64()),
                                                                   (spec.timestamp, pa.int64())])
    options = pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    compression = "gzip" if _is_gzip(path) else None
    try:
        with pa.input_stream(str(path), compression=compression) as stream:
            if not _opens_with_ascii(stream.read(4)):
                return None  # pyarrow skips BOM bytes (\xef, \xbb, \xbf) that open a file, uncounted
        with pa.input_stream(str(path), compression=compression) as stream:
            table = pajson.read_json(stream, parse_options=options)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError, EOFError):
        return None

    def first_id(keys: tuple[str, ...]) -> pa.ChunkedArray | None:
        found = None
        for key in keys:
            column = table.column(key)
            if pc.any(pc.not_equal(pc.utf8_trim_whitespace(column), column)).as_py():
                return None  # padded ids: the line reader strips them
            column = pc.if_else(pc.equal(column, ""), None, column)
            found = column if found is None else pc.coalesce(found, column)
        return None if found is None or found.null_count else found

    user, item = first_id(spec.user), first_id(spec.item)
    timestamp = table.column(spec.timestamp)
    if user is None or item is None or timestamp.null_count:
        return None
    rating = pc.if_else(pc.is_finite(table.column(spec.rating)), table.column(spec.rating), float("nan"))
    seconds = timestamp.to_numpy() // spec.timestamp_divisor  # as the line reader's int // divisor
    return user.to_pylist(), item.to_pylist(), pc.fill_null(rating, float("nan")).to_pylist(), seconds.tolist()


def _check_bad_lines(path: Path, stats: _FileStats, max_bad_fraction: float) -> None:
    """A few corrupt lines are normal in scraped dumps; many mean a broken file."""
    total = stats.records + stats.bad_lines
    if stats.bad_lines and stats.bad_lines / total > max_bad_fraction:
        raise GamerecError(
            f"{path}: {stats.bad_lines} of {total} lines are corrupt (first at line "
            f"{stats.first_bad_line}), above prepare.max_bad_fraction = {max_bad_fraction}"
        )


def _read_lines(
    path: Path,
    to_row: Callable[[str, int], tuple | None],
    columns: _Columns,
    skip_first: bool = False,
) -> _FileStats:
    """Stream `path`, turning each non-blank line into a row or counting it as bad."""
    stats = _FileStats()
    data_rows = 0  # position among non-blank lines, the time of a CSV without timestamps
    for line_number, raw in _lines(path, show=True):
        if not raw.strip():
            continue  # blank lines (often a trailing newline) are not corrupt
        if skip_first:
            skip_first = False
            continue
        text = _decode(raw)
        row = None if text is None else to_row(text, data_rows)
        data_rows += 1
        if row is None:
            stats.bad(line_number)
        else:
            columns.append(row)
            stats.records += 1
    return stats


def _json_row(
    parse: Callable[[str], object], extract: Callable[[dict], tuple | None], text: str, _: int
) -> tuple | None:
    record = parse(text)
    return extract(record) if isinstance(record, dict) else None


def _review_row(spec: _ReviewSpec, record: dict) -> tuple | None:
    user = _first_id(record, spec.user)
    item = _first_id(record, spec.item)
    timestamp = _to_int(record.get(spec.timestamp))
    if user is None or item is None or timestamp is None:
        return None
    return user, item, _to_float(record.get(spec.rating)), timestamp // spec.timestamp_divisor


def _meta_row(spec: _MetaSpec, record: dict) -> tuple | None:
    item = _first_id(record, spec.item)
    if item is None:
        return None
    return (
        item,
        _text(record.get("title")),
        _text(record.get(spec.brand)),
        parse_price(record.get("price")),
        _text(record.get("description")),
        _str_list(_dig(record, spec.also_view)),
        _flat_unique(record.get(spec.categories)),
    )


def _csv_row(raw_file: _RawFile, text: str, row_number: int) -> tuple | None:
    cells = _csv_cells(text, raw_file.csv_delimiter)
    columns = raw_file.csv_columns
    assert columns is not None  # set by _sniff_csv for every ratings file
    if len(cells) <= max(columns.values()):
        return None
    user = _to_id(cells[columns["user_id"]])
    item = _to_id(cells[columns["item_id"]])
    rating = _to_float(cells[columns["rating"]]) if "rating" in columns else math.nan
    timestamp = _to_int(cells[columns["timestamp"]]) if "timestamp" in columns else row_number
    if user is None or item is None or timestamp is None:
        return None
    return user, item, rating, timestamp


def _csv_cells(text: str, delimiter: str) -> list[str]:
    try:
        return next(csv.reader([text.rstrip("\r\n")], delimiter=delimiter), [])
    except csv.Error:
        return []


# --- field conversions: defaults for anything missing, never a KeyError ---------------------


def _to_id(value: object) -> str | None:
    if isinstance(value, str):
        value = value.strip()
        return value or None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _first_id(record: dict, keys: tuple[str, ...]) -> str | None:
    for key in keys:
        found = _to_id(record.get(key))
        if found is not None:
            return found
    return None


def _to_float(value: object) -> float:
    """A rating as a float; NaN when absent or not a number."""
    if isinstance(value, bool):
        return math.nan
    try:
        number = float(value.strip() if isinstance(value, str) else value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return math.nan
    return number if math.isfinite(number) else math.nan


def _to_int(value: object) -> int | None:
    """A timestamp as an int64-sized int; None (a bad line) when it is not a whole number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        value = value.strip()
        try:
            value = int(value)
        except ValueError:
            value = _to_float(value)  # "1529193600.0"
    if isinstance(value, float):
        if not value.is_integer():  # also false for nan and inf
            return None
        value = int(value)
    if isinstance(value, int) and _INT64.min <= value <= _INT64.max:
        return value
    return None


def _text(value: object) -> str:
    """A string field; list parts (2018/2023 descriptions) are joined with spaces."""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return " ".join(part for part in map(_text, value) if part)
    if value is None or isinstance(value, (bool, dict)):
        return ""
    return str(value)


def _dig(record: dict, path: tuple[str, ...]) -> object:
    value: object = record if path else None
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _str_list(value: object) -> list[str]:
    if not isinstance(value, list):
        return []
    return [found for found in map(_to_id, value) if found is not None]


def _flat_unique(value: object) -> list[str]:
    """Categories flattened (2014 has a list of lists) with repeats dropped, order kept."""
    if not isinstance(value, list):
        return []
    flat: list[str] = []
    for part in value:
        flat.extend(_str_list(part) if isinstance(part, list) else _str_list([part]))
    return list(dict.fromkeys(flat))


# --- frames ---------------------------------------------------------------------------------


def _interactions_frame(columns: _Columns) -> pd.DataFrame:
    users, items, ratings, timestamps = columns.lists
    return pd.DataFrame(
        {
            "user_id": pd.Series(users, dtype="str"),
            "item_id": pd.Series(items, dtype="str"),
            "rating": pd.Series(np.asarray(ratings, dtype=np.float32)),
            "timestamp": pd.Series(np.asarray(timestamps, dtype=np.int64)),
        }
    )


def _items_frame(columns: _Columns) -> pd.DataFrame:
    item_ids, titles, brands, prices, descriptions, also_views, categories = columns.lists
    return pd.DataFrame(
        {
            "item_id": pd.Series(item_ids, dtype="str"),
            "title": pd.Series(titles, dtype="str"),
            "brand": pd.Series(brands, dtype="str"),
            "price": pd.Series(np.asarray(prices, dtype=np.float64)),
            "description": pd.Series(descriptions, dtype="str"),
            "also_view": pd.Series(also_views, dtype=object),
            "categories": pd.Series(categories, dtype=object),
        }
    )
