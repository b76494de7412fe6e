"""Read a log per user: count, sum, first and last exposure per (user, variant), streaming.

`arbiter analyze --user-col` and `arbiter calibrate` judge users, the unit that is randomised, not
requests. This reader reuses the record-batch readers of ``_datasets`` (CSV, JSON lines, Parquet) and
reduces each batch to one row per (user, variant): memory is bounded by the number of distinct
(user, variant) pairs, not rows. ``age_buckets`` re-reads the file to place every request by the time
since its user's first exposure (for the novelty check by exposure).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from arbiter.cli._datasets import (
    DatasetError,
    _Accumulator,
    _batches_csv,
    _batches_jsonl,
    _batches_parquet,
    detect_format,
)

_VARIANT_BITS = 10
_SEGMENT_BITS = 16


@dataclass
class UserAggregate:
    """One row per (user, variant): requests, outcome sum and sum of squares, first and last time."""

    variants: list[str] = field(default_factory=list)
    users: dict[str, int] = field(default_factory=dict)
    segments: list[str] = field(default_factory=list)
    segment: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    user: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    variant: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    n: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    total: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    squares: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    first: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    last: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    rows: int = 0
    dropped_rows: int = 0
    binary: bool = True
    has_time: bool = False

    def variants_per_user(self) -> npt.NDArray[np.int64]:
        """How many variants each user (by code) was seen in."""
        pairs = np.unique((self.user << _VARIANT_BITS) | self.variant)
        return np.bincount(pairs >> _VARIANT_BITS, minlength=len(self.users)).astype(np.int64)

    def without_segments(self) -> UserAggregate:
        """One row per (user, variant) again: a user's rows in several segments added up."""
        if not self.segments:
            return self
        keys, sums, first, last = _merge(
            (self.user << _VARIANT_BITS) | self.variant,
            [self.n, self.total, self.squares],
            self.first,
            self.last,
        )
        return UserAggregate(
            variants=self.variants,
            users=self.users,
            segment=np.zeros(keys.size, dtype=np.int64),
            user=keys >> _VARIANT_BITS,
            variant=keys & ((1 << _VARIANT_BITS) - 1),
            n=sums[0],
            total=sums[1],
            squares=sums[2],
            first=first,
            last=last,
            rows=self.rows,
            dropped_rows=self.dropped_rows,
            binary=self.binary,
            has_time=self.has_time,
        )

    def first_exposure(self) -> npt.NDArray[np.int64]:
        """Each user's first time (seconds) over every variant, by user code."""
        first = np.full(len(self.users), np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(first, self.user, self.first)
        return first


def _merge(
    keys: npt.NDArray[np.int64],
    sums: list[npt.NDArray[np.float64]],
    first: npt.NDArray[np.int64],
    last: npt.NDArray[np.int64],
) -> tuple[
    npt.NDArray[np.int64], list[npt.NDArray[np.float64]], npt.NDArray[np.int64], npt.NDArray[np.int64]
]:
    unique, inverse = np.unique(keys, return_inverse=True)
    reduced = [np.bincount(inverse, weights=v, minlength=unique.size).astype(np.float64) for v in sums]
    low = np.full(unique.size, np.iinfo(np.int64).max, dtype=np.int64)
    high = np.full(unique.size, np.iinfo(np.int64).min, dtype=np.int64)
    np.minimum.at(low, inverse, first)
    np.maximum.at(high, inverse, last)
    return unique, reduced, low, high


class _Reader:
    """Codes variants and users and turns a batch into numpy columns."""

    def __init__(self, result: UserAggregate) -> None:
        self.result = result
        self.variant_ids: dict[str, int] = {}
        self.segment_ids: dict[str, int] = {}
        self.times = _Accumulator(has_time=True)  # its epoch/ISO-8601 parsing, nothing else

    def codes(
        self, array: pa.Array, table: dict[str, int], names: list[str] | None, limit: int | None
    ) -> Any:
        encoded = pc.dictionary_encode(array.cast(pa.string()))
        mapping = np.empty(len(encoded.dictionary), dtype=np.int64)
        for index, name in enumerate(encoded.dictionary.to_pylist()):
            code = table.get(name)
            if code is None:
                code = len(table)
                if limit is not None and code >= limit:
                    raise DatasetError(f"too many distinct variant or segment values (more than {limit})")
                table[name] = code
                if names is not None:
                    names.append(name)
            mapping[index] = code
        return mapping[encoded.indices.to_numpy(zero_copy_only=False)]

    def columns(
        self,
        batch: pa.RecordBatch,
        variant_col: str,
        outcome_col: str,
        user_col: str,
        time_col: str | None,
        segment_col: str | None = None,
    ) -> tuple[Any, Any, Any, Any, Any] | None:
        """Variant codes, user codes, outcomes, seconds (zeros without a time column), segment codes."""
        wanted = [variant_col, outcome_col, user_col, *(c for c in (time_col, segment_col) if c)]
        valid = None
        for name in wanted:
            not_null = pc.is_valid(batch.column(name))
            valid = not_null if valid is None else pc.and_(valid, not_null)
        rows = batch.num_rows
        self.result.rows += rows
        if valid is not None and pc.sum(valid).as_py() != rows:
            batch = batch.filter(valid)
            self.result.dropped_rows += rows - batch.num_rows
        if batch.num_rows == 0:
            return None
        outcome = batch.column(outcome_col)
        if pa.types.is_boolean(outcome.type):
            outcome = outcome.cast(pa.int8())
        if not (pa.types.is_integer(outcome.type) or pa.types.is_floating(outcome.type)):
            raise DatasetError(f"outcome column '{outcome_col}' is not numeric (type {outcome.type})")
        values = np.asarray(outcome.cast(pa.float64()).to_numpy(zero_copy_only=False))
        if not np.all(np.isfinite(values)):
            raise DatasetError(f"outcome column '{outcome_col}' has non-finite values")
        if self.result.binary and np.any((values != 0) & (values != 1)):
            self.result.binary = False
        variants = self.codes(
            batch.column(variant_col), self.variant_ids, self.result.variants, 1 << _VARIANT_BITS
        )
        users = self.codes(batch.column(user_col), self.result.users, None, None)
        if time_col:
            seconds = self.times._seconds(batch.column(time_col))
        else:
            seconds = np.zeros(values.size, dtype=np.int64)
        segments = np.zeros(values.size, dtype=np.int64)
        if segment_col:
            segments = self.codes(
                batch.column(segment_col), self.segment_ids, self.result.segments, 1 << _SEGMENT_BITS
            )
        return variants, users, values, seconds, segments


def _batches(path: str, columns: list[str], string_columns: list[str], outcome_col: str) -> Iterator[Any]:
    fmt = detect_format(path)
    if fmt == "parquet":
        return iter(_batches_parquet(path, columns))
    if fmt == "csv":
        return iter(_batches_csv(path, columns, string_columns, outcome_col))
    return iter(_batches_jsonl(path, columns, string_columns, outcome_col))


def _read(path: str, columns: list[str], string_columns: list[str], outcome_col: str) -> Iterator[Any]:
    if not os.path.isfile(path):
        raise DatasetError(f"no such file: {path}")
    try:
        yield from _batches(path, columns, string_columns, outcome_col)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, UnicodeDecodeError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if "conversion error to double" in first_line or "conversion error to bool" in first_line:
            raise DatasetError(f"outcome column '{outcome_col}' is not numeric: {first_line}") from error
        raise DatasetError(f"cannot read {path}: {first_line}") from error


def aggregate_users(
    path: str,
    variant_col: str,
    outcome_col: str,
    user_col: str,
    time_col: str | None = None,
    segment_col: str | None = None,
) -> UserAggregate:
    """Stream ``path`` into one row per (user, variant), or per (user, segment, variant) with a segment.

    Raises:
        DatasetError: with a one-line message when the file or a column cannot be used.
    """
    columns = list(dict.fromkeys(c for c in (variant_col, outcome_col, user_col, time_col, segment_col) if c))
    result = UserAggregate(has_time=time_col is not None)
    reader = _Reader(result)
    keys = np.zeros(0, dtype=np.int64)
    sums = [np.zeros(0), np.zeros(0), np.zeros(0)]
    first = np.zeros(0, dtype=np.int64)
    last = np.zeros(0, dtype=np.int64)
    strings = [c for c in (variant_col, user_col, segment_col) if c]
    for batch in _read(path, columns, strings, outcome_col):
        parts = reader.columns(batch, variant_col, outcome_col, user_col, time_col, segment_col)
        if parts is None:
            continue
        variants, users, values, seconds, segments = parts
        batch_keys = (((users << _SEGMENT_BITS) | segments) << _VARIANT_BITS) | variants
        keys, sums, first, last = _merge(
            np.concatenate([keys, batch_keys]),
            [
                np.concatenate([sums[0], np.ones_like(values)]),
                np.concatenate([sums[1], values]),
                np.concatenate([sums[2], values * values]),
            ],
            np.concatenate([first, seconds]),
            np.concatenate([last, seconds]),
        )
    result.user = keys >> (_VARIANT_BITS + _SEGMENT_BITS)
    result.segment = (keys >> _VARIANT_BITS) & ((1 << _SEGMENT_BITS) - 1)
    result.variant = keys & ((1 << _VARIANT_BITS) - 1)
    result.n, result.total, result.squares = sums
    result.first, result.last = first, last
    return result


def age_buckets(
    path: str,
    aggregate: UserAggregate,
    variant_col: str,
    outcome_col: str,
    user_col: str,
    time_col: str,
    bucket_seconds: int,
) -> tuple[
    npt.NDArray[np.int64],
    npt.NDArray[np.int64],
    npt.NDArray[np.int64],
    npt.NDArray[np.float64],
    npt.NDArray[np.float64],
]:
    """Re-read the file: one row per (user, variant, exposure age) with requests and outcome sum.

    The exposure age of a request is ``(time - its user's first exposure) // bucket_seconds``.

    Returns:
        user codes, variant codes, ages, requests and outcome sums (aligned arrays).
    """

    def age(seconds: Any, first: Any) -> Any:
        return np.maximum((seconds - first) // bucket_seconds, 0)

    return user_buckets(path, aggregate, variant_col, outcome_col, user_col, time_col, age)


def user_buckets(
    path: str,
    aggregate: UserAggregate,
    variant_col: str,
    outcome_col: str,
    user_col: str,
    time_col: str,
    bucket_of: Callable[[npt.NDArray[np.int64], npt.NDArray[np.int64]], npt.NDArray[np.int64]],
) -> tuple[
    npt.NDArray[np.int64],
    npt.NDArray[np.int64],
    npt.NDArray[np.int64],
    npt.NDArray[np.float64],
    npt.NDArray[np.float64],
]:
    """Re-read the file: one row per (user, variant, bucket), ``bucket_of(seconds, user's first exposure)``.

    Returns:
        user codes, variant codes, buckets, requests and outcome sums (aligned arrays).
    """
    first_seen = aggregate.first_exposure()
    columns = list(dict.fromkeys((variant_col, outcome_col, user_col, time_col)))
    scratch = UserAggregate(variants=list(aggregate.variants), users=dict(aggregate.users))
    reader = _Reader(scratch)
    reader.variant_ids = {name: index for index, name in enumerate(aggregate.variants)}
    users_total = max(len(aggregate.users), 1)
    keys = np.zeros(0, dtype=np.int64)
    n: Any = np.zeros(0)
    total: Any = np.zeros(0)
    for batch in _read(path, columns, [variant_col, user_col], outcome_col):
        parts = reader.columns(batch, variant_col, outcome_col, user_col, time_col)
        if parts is None:
            continue
        variants, users, values, seconds, _segments = parts
        buckets = np.asarray(bucket_of(seconds, first_seen[users]), dtype=np.int64)
        batch_keys = (buckets * users_total + users) << _VARIANT_BITS | variants
        unique, inverse = np.unique(np.concatenate([keys, batch_keys]), return_inverse=True)
        n = np.bincount(inverse, weights=np.concatenate([n, np.ones_like(values)]), minlength=unique.size)
        total = np.bincount(inverse, weights=np.concatenate([total, values]), minlength=unique.size)
        keys = unique
    variant = keys & ((1 << _VARIANT_BITS) - 1)
    rest = keys >> _VARIANT_BITS
    return rest % users_total, variant, rest // users_total, n.astype(np.float64), total.astype(np.float64)
