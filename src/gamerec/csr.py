"""Compressed sparse rows as plain (indptr, indices) tensors: gathering many rows at once.

Prepared data keeps ragged per-item and per-user lists (description tokens, also_view links,
a user's train items) as CSR. These helpers gather a batch of rows without a Python loop.
"""

from __future__ import annotations

import torch


def gather(indptr: torch.Tensor, indices: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate CSR `rows`: returns (position in `rows` of each value, the values)."""
    starts = indptr[rows]
    lengths = indptr[rows + 1] - starts
    total = int(lengths.sum())
    owner = torch.repeat_interleave(torch.arange(len(rows), device=rows.device), lengths, output_size=total)
    # each value's index = its row's start + its rank inside the row
    first = torch.cumsum(lengths, 0) - lengths
    rank = torch.arange(total, device=rows.device) - first[owner]
    return owner, indices[starts[owner] + rank]


def from_pairs(rows: torch.Tensor, cols: torch.Tensor, n_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """CSR of the (row, col) pairs, cols of a row in their original order."""
    order = torch.sort(rows, stable=True).indices
    indptr = torch.zeros(n_rows + 1, dtype=torch.long)
    indptr[1:] = torch.cumsum(torch.bincount(rows, minlength=n_rows), 0)
    return indptr, cols[order]
