"""Writing outputs so that a killed stage never leaves a half file for DVC to cache; vectors as Parquet."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from gamerec.csr import Csr


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of `path`; on success rename it onto `path`.

    Works for files and folders alike: write whatever you like at the yielded path. On an
    exception the temporary is removed and `path` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a killed earlier run
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    target = tmp / path.name  # inside the temp folder, so one rmtree cleans any failure
    try:
        yield target
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(target, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def fingerprint(paths: list[Path], extra: Any) -> str:
    """SHA-256 of the files under `paths` (sorted, names included) and the JSON of `extra`."""
    digest = hashlib.sha256(json.dumps(extra, sort_keys=True).encode())
    for root in paths:
        files = sorted(p for p in Path(root).rglob("*") if p.is_file()) if Path(root).is_dir() else [Path(root)]
        for file in files:
            digest.update(str(file.relative_to(root.parent)).encode())
            _hash_file(digest, file)
    return digest.hexdigest()


def file_md5(path: Path) -> str:
    """The file's md5, as DVC records it in dvc.lock."""
    return _hash_file(hashlib.md5(), path).hexdigest()


def _hash_file(digest, path: Path):
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest


def strict(obj: Any) -> Any:
    """`obj` with every NaN or infinity replaced by None: what cannot be computed is null in JSON."""
    if isinstance(obj, dict):
        return {key: strict(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict(value) for value in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path: str | Path, obj: Any) -> None:
    """Write `obj` as indented, key-sorted, strict JSON (NaN as null), atomically: stable bytes for DVC."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(strict(obj), indent=2, sort_keys=True, allow_nan=False) + "\n", encoding="utf-8")


def write_table(path: Path, frame: pd.DataFrame, vectors: np.ndarray | None = None, **lists: Csr) -> None:
    """`frame` as Parquet, plus a fixed-size float32 `vector` column and CSR matrices as list columns.

    Vectors are stored plain: float embeddings do not compress, and decoding them would
    dominate loading.
    """
    table = pa.Table.from_pandas(frame, preserve_index=False)
    if vectors is not None:
        flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))
        table = table.append_column("vector", pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1]))
    for name, (indptr, indices) in lists.items():
        table = table.append_column(name, pa.ListArray.from_arrays(pa.array(indptr.astype(np.int32)),
                                                                   pa.array(indices.astype(np.int32))))
    plain = [name for name in table.column_names if name == "vector" or name in lists]
    pq.write_table(table, path, compression={name: "none" if name in plain else "snappy" for name in table.column_names},
                   use_dictionary=[name for name in table.column_names if name not in plain])


def read_table(path: Path) -> tuple[pd.DataFrame, np.ndarray | None, dict[str, Csr]]:
    """What `write_table` wrote: (the other columns, the vectors or None, the list columns as CSR)."""
    table = pq.read_table(path)
    vectors = None
    if "vector" in table.column_names:
        column = table.column("vector").combine_chunks()
        vectors = column.flatten().to_numpy().reshape(len(table), column.type.list_size)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    lists = {}
    for name in table.column_names:
        if pa.types.is_list(table.schema.field(name).type):
            array = table.column(name).combine_chunks()
            offsets = array.offsets.to_numpy().astype(np.int64)
            values = array.values.to_numpy().astype(np.int64)[offsets[0] : offsets[-1]]
            lists[name] = Csr(offsets - offsets[0], values)
    frame = table.drop_columns([name for name in ("vector", *lists) if name in table.column_names]).to_pandas()
    return frame, vectors, lists
