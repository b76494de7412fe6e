"""Read an A/A history into (unit, tick) cells for `arbiter calibrate`.

The rows' unit codes, times and values are held in memory (8 bytes per column per row), then reduced
to one cell per (unit, tick): a few million rows fit comfortably.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from arbiter.cli._datasets import DatasetError
from arbiter.cli._user_analysis import iso
from arbiter.cli._users import UserAggregate, _read, _Reader
from arbiter.stats import CellHistory


def _numbers(column: pa.Array, name: str) -> Any:
    if pa.types.is_boolean(column.type):
        column = column.cast(pa.int8())
    if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
        raise DatasetError(f"column '{name}' is not numeric (type {column.type})")
    values = np.asarray(column.cast(pa.float64()).to_numpy(zero_copy_only=False))
    if not np.all(np.isfinite(values)):
        raise DatasetError(f"column '{name}' has non-finite values")
    return values


def read_history(
    path: str,
    outcome_col: str,
    guardrails: list[tuple[str, str]],
    *,
    user_col: str | None,
    time_col: str | None,
    variant_col: str | None,
    variant: str | None,
    ticks: int,
) -> tuple[CellHistory, dict[str, bool], dict[str, Any]]:
    """The history as cells, whether each value column is 0/1, and what was read (rows, units, period).

    ``guardrails`` are (name, column) pairs; the cells carry the primary metric under ``""`` and each
    guardrail under its name.
    """
    guardrail_cols = [column for _, column in guardrails]
    value_cols = list(dict.fromkeys([outcome_col, *guardrail_cols]))
    columns = list(dict.fromkeys(c for c in [*value_cols, user_col, time_col, variant_col] if c))
    strings = [c for c in (user_col, variant_col) if c]
    scratch = UserAggregate()
    reader = _Reader(scratch)
    units: list[Any] = []
    seconds: list[Any] = []
    values: dict[str, list[Any]] = {c: [] for c in value_cols}
    rows = dropped = offset = 0
    for batch in _read(path, columns, strings, outcome_col):
        rows += batch.num_rows
        valid = None
        for name in columns:
            not_null = pc.is_valid(batch.column(name))
            valid = not_null if valid is None else pc.and_(valid, not_null)
        if variant_col and variant is not None:
            same = pc.equal(batch.column(variant_col).cast(pa.string()), variant)
            valid = pc.and_(valid, same)
        kept = batch.filter(valid) if valid is not None else batch
        dropped += batch.num_rows - kept.num_rows
        if kept.num_rows == 0:
            continue
        for name in value_cols:
            values[name].append(_numbers(kept.column(name), name))
        if user_col:
            units.append(reader.codes(kept.column(user_col), scratch.users, None, None))
        else:
            units.append(np.arange(offset, offset + kept.num_rows, dtype=np.int64))
        if time_col:
            seconds.append(reader.times._seconds(kept.column(time_col)))
        else:
            seconds.append(np.arange(offset, offset + kept.num_rows, dtype=np.int64))
        offset += kept.num_rows
    if offset < 2:
        raise DatasetError(
            f"{path}: fewer than two usable rows" + (f" of variant {variant!r}" if variant else "")
        )
    unit = np.concatenate(units)
    time = np.concatenate(seconds).astype(np.float64)
    start, end = float(time.min()), float(time.max())
    width = max(end - start, 1.0)
    edges = start + width * np.arange(1, ticks + 1) / ticks
    tick = np.minimum(np.searchsorted(edges, time, side="left"), ticks - 1).astype(np.int64)
    unit_codes, unit_index = np.unique(unit, return_inverse=True)
    key = unit_index.astype(np.int64) * ticks + tick
    cells, inverse = np.unique(key, return_inverse=True)
    count = np.bincount(inverse, minlength=cells.size).astype(np.float64)
    reduced: dict[str, tuple[Any, Any]] = {}
    kinds: dict[str, bool] = {}
    for name in value_cols:
        column = np.concatenate(values[name])
        kinds[name] = bool(np.all((column == 0) | (column == 1)))
        reduced[name] = (
            np.bincount(inverse, weights=column, minlength=cells.size),
            np.bincount(inverse, weights=column * column, minlength=cells.size),
        )
    named = {"": reduced[outcome_col], **{name: reduced[column] for name, column in guardrails}}
    history = CellHistory(
        unit=(cells // ticks).astype(np.int64),
        tick=(cells % ticks).astype(np.int64),
        n=count,
        values=named,
        units=int(unit_codes.size),
        ticks=ticks,
        tick_seconds=[float(e - start) for e in edges] if time_col else None,
    )
    meta: dict[str, Any] = {"rows": rows, "dropped_rows": dropped, "units": int(unit_codes.size)}
    if time_col:
        meta["period"] = {"start": iso(start), "end": iso(end)}
    return history, kinds, meta
