"""Read logged predictions/outcomes (CSV, JSON lines, Parquet) into sufficient statistics, streaming.

Files are read in record batches with pyarrow and reduced batch by batch to count, sum and sum of
squares per (variant, segment, time bucket), so memory stays bounded by the number of distinct keys,
not the number of rows. Time buckets start at one second and coarsen (minute, hour, day) whenever the
number of distinct keys grows past a cap, which keeps memory bounded for long logs.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

BATCH_ROWS = 1 << 20
_MAX_KEYS = 400_000
_RESOLUTIONS = (1, 60, 3600, 86400)
_VARIANT_BITS = 10
_SEGMENT_BITS = 16


class DatasetError(Exception):
    """The file cannot be analysed; the message is one line for the user."""


@dataclass
class Aggregate:
    """Sufficient statistics per (variant, segment, time bucket)."""

    variants: list[str] = field(default_factory=list)
    segments: list[str] = field(default_factory=list)
    resolution: int = 1  # seconds per time bucket
    keys: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    n: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    total: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    squares: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    rows: int = 0
    dropped_rows: int = 0
    binary: bool = True  # every outcome is 0 or 1

    def split_keys(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Variant ids, segment ids and time buckets (in units of ``resolution``) of the keys."""
        variant = self.keys & ((1 << _VARIANT_BITS) - 1)
        segment = (self.keys >> _VARIANT_BITS) & ((1 << _SEGMENT_BITS) - 1)
        bucket = self.keys >> (_VARIANT_BITS + _SEGMENT_BITS)
        return variant, segment, bucket


def _reduce(
    keys: npt.NDArray[np.int64], *values: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.int64], list[npt.NDArray[np.float64]]]:
    unique, inverse = np.unique(keys, return_inverse=True)
    sums = [
        np.asarray(np.bincount(inverse, weights=v, minlength=unique.size), dtype=np.float64) for v in values
    ]
    return unique, sums


class _Accumulator:
    def __init__(self, has_time: bool) -> None:
        self.result = Aggregate()
        self.has_time = has_time
        self.variant_ids: dict[str, int] = {}
        self.segment_ids: dict[str, int] = {}
        self.time_scale: float | None = None

    def _codes(self, array: pa.Array, table: dict[str, int], names: list[str], limit: int, what: str) -> Any:
        encoded = pc.dictionary_encode(array.cast(pa.string()))
        dictionary = encoded.dictionary.to_pylist()
        mapping = np.empty(len(dictionary), dtype=np.int64)
        for index, name in enumerate(dictionary):
            code = table.get(name)
            if code is None:
                code = len(table)
                if code >= limit:
                    raise DatasetError(f"too many distinct {what} values (more than {limit})")
                table[name] = code
                names.append(name)
            mapping[index] = code
        return mapping[encoded.indices.to_numpy(zero_copy_only=False)]

    def _seconds(self, array: pa.Array) -> npt.NDArray[np.int64]:
        kind = array.type
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            parsed = None
            for target in (pa.timestamp("s"), pa.timestamp("s", tz="UTC"), pa.timestamp("ms", tz="UTC")):
                try:
                    parsed = array.cast(target)
                    break
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                    continue
            if parsed is None:
                raise DatasetError("the time column has values that are neither numbers nor ISO-8601 times")
            array, kind = parsed, parsed.type
        if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
            as_seconds = array.cast(pa.timestamp("s", tz=getattr(kind, "tz", None)), safe=False)
            return np.asarray(as_seconds.cast(pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64)
        if pa.types.is_integer(kind) or pa.types.is_floating(kind):
            values = np.asarray(array.cast(pa.float64()).to_numpy(zero_copy_only=False))
            if self.time_scale is None:
                # Epoch numbers: seconds, or milli/microseconds when far too large to be seconds.
                largest = float(np.nanmax(np.abs(values))) if values.size else 0.0
                self.time_scale = 1e-6 if largest > 1e14 else 1e-3 if largest > 1e11 else 1.0
            return np.floor(values * self.time_scale).astype(np.int64)
        raise DatasetError(f"the time column has type {kind}, expected timestamps or epoch seconds")

    def add(
        self,
        batch: pa.RecordBatch,
        variant_col: str,
        outcome_col: str,
        segment_col: str | None,
        time_col: str | None,
    ) -> None:
        columns = [variant_col, outcome_col, *(c for c in (segment_col, time_col) if c)]
        valid = None
        for name in columns:
            not_null = pc.is_valid(batch.column(name))
            valid = not_null if valid is None else pc.and_(valid, not_null)
        rows = batch.num_rows
        self.result.rows += rows
        if valid is not None and pc.sum(valid).as_py() != rows:
            batch = batch.filter(valid)
            self.result.dropped_rows += rows - batch.num_rows
        if batch.num_rows == 0:
            return
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
        keys = self._codes(
            batch.column(variant_col), self.variant_ids, self.result.variants, 1 << _VARIANT_BITS, "variant"
        )
        if segment_col:
            segments = self._codes(
                batch.column(segment_col),
                self.segment_ids,
                self.result.segments,
                1 << _SEGMENT_BITS,
                "segment",
            )
            keys = keys | (segments << _VARIANT_BITS)
        if time_col:
            buckets = self._seconds(batch.column(time_col)) // self.result.resolution
            keys = keys | (buckets << (_VARIANT_BITS + _SEGMENT_BITS))
        unique, (n, total, squares) = _reduce(keys, np.ones_like(values), values, values * values)
        self._merge(unique, n, total, squares)

    def _merge(self, keys: Any, n: Any, total: Any, squares: Any) -> None:
        agg = self.result
        agg.keys, (agg.n, agg.total, agg.squares) = _reduce(
            np.concatenate([agg.keys, keys]),
            np.concatenate([agg.n, n]),
            np.concatenate([agg.total, total]),
            np.concatenate([agg.squares, squares]),
        )
        while agg.keys.size > _MAX_KEYS and self.has_time and agg.resolution < _RESOLUTIONS[-1]:
            coarser = next(r for r in _RESOLUTIONS if r > agg.resolution)
            variant, segment, bucket = agg.split_keys()
            bucket = bucket // (coarser // agg.resolution)
            agg.resolution = coarser
            merged = variant | (segment << _VARIANT_BITS) | (bucket << (_VARIANT_BITS + _SEGMENT_BITS))
            agg.keys, (agg.n, agg.total, agg.squares) = _reduce(merged, agg.n, agg.total, agg.squares)


def _batches_parquet(path: str, columns: list[str]) -> Any:
    import pyarrow.parquet as pq

    try:
        handle = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as error:
        raise DatasetError(f"cannot read {path} as Parquet: {error}") from error
    _check_columns(handle.schema_arrow.names, columns, path)
    yield from handle.iter_batches(batch_size=BATCH_ROWS, columns=columns)


def _batches_csv(path: str, columns: list[str], string_columns: list[str], outcome_col: str) -> Any:
    import pyarrow.csv as pacsv

    true_values, false_values = ["true", "True", "TRUE"], ["false", "False", "FALSE"]
    with open(path, newline="", encoding="utf-8") as handle:
        rows = csv.reader(handle)
        header = next(rows, [])
        _check_columns(header, columns, path)
        # The first non-empty outcome says whether the column holds true/false or numbers (like JSONL).
        at = header.index(outcome_col)
        first = next((row[at] for row in rows if len(row) > at and row[at] != ""), "")
    types: dict[str, pa.DataType] = {name: pa.string() for name in string_columns}
    types[outcome_col] = pa.bool_() if first in true_values + false_values else pa.float64()
    reader = pacsv.open_csv(
        path,
        read_options=pacsv.ReadOptions(block_size=16 << 20),
        convert_options=pacsv.ConvertOptions(
            include_columns=columns,
            column_types=types,
            true_values=true_values,
            false_values=false_values,
        ),
    )
    yield from reader


def _batches_jsonl(path: str, columns: list[str], string_columns: list[str], outcome_col: str) -> Any:
    import pyarrow.json as pajson

    with open(path, encoding="utf-8") as handle:
        first_line = next((line for line in handle if line.strip()), "")
    try:
        first = json.loads(first_line) if first_line else {}
    except json.JSONDecodeError as error:
        raise DatasetError(f"{path} is not JSON lines: {error.msg} on the first line") from error
    if not isinstance(first, dict):
        raise DatasetError(f"{path} is not JSON lines of objects")
    _check_columns(list(first), columns, path)
    fields = [pa.field(outcome_col, pa.bool_() if isinstance(first[outcome_col], bool) else pa.float64())]
    fields += [pa.field(name, pa.string()) for name in string_columns if isinstance(first[name], str)]
    reader = pajson.open_json(
        path,
        read_options=pajson.ReadOptions(block_size=16 << 20),
        parse_options=pajson.ParseOptions(
            explicit_schema=pa.schema(fields), unexpected_field_behavior="infer"
        ),
    )
    for batch in reader:
        yield batch.select(columns)


def _check_columns(available: list[str], wanted: list[str], path: str) -> None:
    missing = [name for name in wanted if name not in available]
    if missing:
        raise DatasetError(
            f"{path} has no column {', '.join(repr(m) for m in missing)} (columns: {', '.join(available[:20])})"
        )


def detect_format(path: str) -> str:
    """``parquet``, ``csv`` or ``jsonl`` from the file name."""
    lower = path.lower()
    if lower.endswith((".parquet", ".pq")):
        return "parquet"
    if lower.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if lower.endswith((".csv", ".csv.gz", ".txt")):
        return "csv"
    with open(path, "rb") as handle:
        start = handle.read(4)
    if start == b"PAR1":
        return "parquet"
    return "jsonl" if start.lstrip()[:1] == b"{" else "csv"


def aggregate_file(
    path: str,
    variant_col: str,
    outcome_col: str,
    segment_col: str | None = None,
    time_col: str | None = None,
) -> Aggregate:
    """Stream ``path`` and reduce it to sufficient statistics per (variant, segment, time bucket).

    Raises:
        DatasetError: with a one-line message when the file or a column cannot be used.
    """
    if not os.path.isfile(path):
        raise DatasetError(f"no such file: {path}")
    columns = list(dict.fromkeys(c for c in (variant_col, outcome_col, segment_col, time_col) if c))
    string_columns = [c for c in (variant_col, segment_col) if c]
    fmt = detect_format(path)
    accumulator = _Accumulator(has_time=time_col is not None)
    try:
        if fmt == "parquet":
            batches = _batches_parquet(path, columns)
        elif fmt == "csv":
            batches = _batches_csv(path, columns, string_columns, outcome_col)
        else:
            batches = _batches_jsonl(path, columns, string_columns, outcome_col)
        for batch in batches:
            accumulator.add(batch, variant_col, outcome_col, segment_col, time_col)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, UnicodeDecodeError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if "conversion error to double" in first_line or "conversion error to bool" in first_line:
            raise DatasetError(f"outcome column '{outcome_col}' is not numeric: {first_line}") from error
        raise DatasetError(f"cannot read {path}: {first_line}") from error
    return accumulator.result
