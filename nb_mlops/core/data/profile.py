"""Per-snapshot profiles: schema, rows, nulls, min/max/mean/std, quantiles, top values, histogram.

Row count, nulls, min, max, mean and std are exact (pyarrow.compute over all rows). Quantiles,
histograms and top values are computed on a fixed-seed random sample of `SAMPLE_ROWS` rows when the
table is larger; the profile says so (`sampled: true`, `sample_rows`). Values are JSON-ready.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["SAMPLE_ROWS", "profile_table"]

SAMPLE_ROWS = 100_000
_TOP = 10
_BINS = 20


def _json(value: Any) -> Any:
    """A JSON-safe scalar (non-finite floats become None, dates ISO strings)."""
    if isinstance(value, pa.Scalar):
        value = value.as_py()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, int | float | str | bool) or value is None:
        return value
    if isinstance(value, bytes):
        return value[:64].decode("utf-8", "replace")
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def _sample(table: pa.Table) -> tuple[pa.Table, bool]:
    if table.num_rows <= SAMPLE_ROWS:
        return table, False
    rng = np.random.default_rng(0)
    index = np.sort(rng.integers(0, table.num_rows, SAMPLE_ROWS))
    return table.take(pa.array(index)), True


def _numeric(col: pa.ChunkedArray, sample: pa.ChunkedArray, out: dict[str, Any]) -> None:
    bounds = pc.min_max(col)
    out["min"], out["max"] = _json(bounds["min"]), _json(bounds["max"])
    out["mean"] = _json(pc.mean(col))
    out["std"] = _json(pc.stddev(col, ddof=1)) if len(col) - col.null_count > 1 else None
    values = sample.drop_null().to_numpy().astype(np.float64, copy=False)
    values = values[np.isfinite(values)]
    if len(values):
        qs = np.quantile(values, [0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99])
        out["quantiles"] = dict(
            zip(["p01", "p05", "p25", "p50", "p75", "p95", "p99"], map(_json, qs), strict=True)
        )
        counts, edges = np.histogram(values, bins=_BINS)
        out["histogram"] = {"edges": [_json(e) for e in edges], "counts": counts.tolist()}


def _top(sample: pa.ChunkedArray, out: dict[str, Any]) -> None:
    counts = pc.value_counts(sample.drop_null())
    if len(counts) == 0:
        out["top"] = []
        return
    values, freq = counts.field("values"), counts.field("counts").to_numpy()
    order = np.argsort(-freq, kind="stable")[:_TOP]
    out["top"] = [[_json(values[int(i)]), int(freq[i])] for i in order]
    out["distinct_in_sample"] = len(counts)


def profile_table(table: pa.Table) -> dict[str, Any]:
    """The profile of an Arrow table (see the module docstring for what is exact)."""
    sample, sampled = _sample(table)
    columns: dict[str, Any] = {}
    for name, col in zip(table.column_names, table.columns, strict=True):
        t = col.type
        out: dict[str, Any] = {"type": str(t), "nulls": col.null_count}
        try:
            if pa.types.is_integer(t) or pa.types.is_floating(t):
                _numeric(col, sample.column(name), out)
            elif pa.types.is_temporal(t):
                bounds = pc.min_max(col)
                out["min"], out["max"] = _json(bounds["min"]), _json(bounds["max"])
            elif pa.types.is_boolean(t):
                out["mean"] = _json(pc.mean(pc.cast(col, pa.int8())))
                _top(sample.column(name), out)
            elif (
                pa.types.is_string(t)
                or pa.types.is_large_string(t)
                or pa.types.is_dictionary(t)
                or pa.types.is_binary(t)
            ):
                _top(sample.column(name), out)
        except (pa.ArrowNotImplementedError, pa.ArrowInvalid, pa.ArrowTypeError):
            pass  # a type pyarrow cannot summarise: nulls and type are still reported
        columns[name] = out
    profile: dict[str, Any] = {"rows": table.num_rows, "columns": columns, "sampled": sampled}
    if sampled:
        profile["sample_rows"] = SAMPLE_ROWS
    return profile
