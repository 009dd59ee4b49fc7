"""The one ragged-array type: compressed sparse rows, over NumPy arrays or torch tensors alike.

Prepared data keeps ragged per-item and per-user lists (description tokens, also_view links,
a user's items in time order, a holdout's targets) as a `Csr`: row r's values are
`indices[indptr[r]:indptr[r + 1]]`. Rows are gathered many at a time without a Python loop.
The same code serves NumPy (serving, which never imports torch) and torch (training,
ranking): each operation asks the array for its library.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np


def _is_numpy(array: Any) -> bool:
    return isinstance(array, np.ndarray)


def _arange(like: Any, n: int) -> Any:
    if _is_numpy(like):
        return np.arange(n, dtype=np.int64)
    import torch

    return torch.arange(n, device=like.device)


def _repeat(values: Any, counts: Any, total: int) -> Any:
    if _is_numpy(values):
        return np.repeat(values, counts)
    import torch

    return torch.repeat_interleave(values, counts, output_size=total)


class Csr(NamedTuple):
    """Compressed sparse rows (indptr, indices), NumPy or torch; unpacks as the plain pair."""

    indptr: Any
    indices: Any

    @property
    def rows(self) -> int:
        """Number of rows."""
        return len(self.indptr) - 1

    def lengths(self, rows: Any = None) -> Any:
        """Values per row (of `rows`, when given)."""
        if rows is None:
            return self.indptr[1:] - self.indptr[:-1]
        return self.indptr[rows + 1] - self.indptr[rows]

    def gather(self, rows: Any) -> tuple[Any, Any]:
        """Concatenate `rows`: returns (position in `rows` of each value, the values)."""
        starts = self.indptr[rows]
        lengths = self.indptr[rows + 1] - starts
        total = int(lengths.sum())
        owner = _repeat(_arange(rows, len(rows)), lengths, total)
        # each value's index = its row's start + its rank inside the row
        first = lengths.cumsum(0) - lengths
        rank = _arange(rows, total) - first[owner]
        return owner, self.indices[starts[owner] + rank]

    def select(self, rows: Any) -> "Csr":
        """The CSR of `rows`, in that order."""
        _, values = self.gather(rows)
        lengths = self.lengths(rows)
        indptr = lengths.cumsum(0) if len(lengths) else lengths
        if _is_numpy(lengths):
            return Csr(np.concatenate([np.zeros(1, lengths.dtype), indptr]), values)
        import torch

        return Csr(torch.cat([lengths.new_zeros(1), indptr]), values)

    def numpy(self) -> "Csr":
        """The same rows as NumPy arrays (int64 pointers)."""
        to = lambda a: a if _is_numpy(a) else a.cpu().numpy()
        return Csr(to(self.indptr).astype(np.int64, copy=False), to(self.indices))

    def torch(self) -> "Csr":
        """The same rows as int64 torch tensors (shared with NumPy memory where possible)."""
        import torch

        return Csr(torch.as_tensor(self.indptr, dtype=torch.long), torch.as_tensor(self.indices, dtype=torch.long))

    @classmethod
    def from_pairs(cls, rows: Any, cols: Any, n_rows: int) -> "Csr":
        """CSR of the (row, col) pairs, cols of a row in their original order."""
        if _is_numpy(rows):
            order = np.argsort(rows, kind="stable")
            indptr = np.zeros(n_rows + 1, dtype=np.int64)
            np.cumsum(np.bincount(rows, minlength=n_rows), out=indptr[1:])
            return cls(indptr, cols[order])
        import torch

        order = torch.sort(rows, stable=True).indices
        indptr = torch.zeros(n_rows + 1, dtype=torch.long)
        indptr[1:] = torch.cumsum(torch.bincount(rows, minlength=n_rows), 0)
        return cls(indptr, cols[order])

    @classmethod
    def empty(cls, n_rows: int) -> "Csr":
        """`n_rows` empty rows (NumPy)."""
        return cls(np.zeros(n_rows + 1, dtype=np.int64), np.zeros(0, dtype=np.int64))
