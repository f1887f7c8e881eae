"""Per-snapshot profiles: schema, rows, nulls, min/max/mean/std, quantiles, top values, histogram.

Row count, nulls, min, max, mean and std are exact: they are merged from per-chunk statistics
(`chunk_stats`: count, min, max, mean, sum of squared deviations, merged with Chan's parallel
formula), so a snapshot that reuses stored chunks only computes the statistics of its new chunks.
Merged mean and std equal a one-pass computation up to floating-point rounding (relative 1e-9).
Quantiles, histograms and top values are computed on a fixed-seed random sample of `SAMPLE_ROWS`
rows when the table is larger; the profile says so (`sampled: true`, `sample_rows`). Values are
JSON-ready.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["SAMPLE_ROWS", "chunk_stats", "finish_profile", "profile_table", "sample_profile"]

SAMPLE_ROWS = 100_000
_TOP = 10
_BINS = 20
_ARROW_ERRORS = (pa.ArrowNotImplementedError, pa.ArrowInvalid, pa.ArrowTypeError)


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


def _is_numeric(t: pa.DataType) -> bool:
    return bool(pa.types.is_integer(t) or pa.types.is_floating(t))


# --- exact, mergeable statistics -----------------------------------------------------------------


def chunk_stats(table: pa.Table) -> dict[str, dict[str, Any]]:
    """Mergeable exact statistics of the numeric and boolean columns of one chunk of rows.

    Numeric: `n` (non-null values), `min`, `max`, `mean`, `m2` (sum of squared deviations from
    the mean); boolean: `n`, `true`. A column pyarrow cannot summarise is left out (the profile
    then computes it over the whole table). Values are plain Python (JSON-ready, NaN allowed).
    """
    out: dict[str, dict[str, Any]] = {}
    for name, col in zip(table.column_names, table.columns, strict=True):
        t = col.type
        n = len(col) - col.null_count
        try:
            if _is_numeric(t):
                if n == 0:
                    out[name] = {"n": 0}
                    continue
                bounds = pc.min_max(col)
                mean = pc.mean(col).as_py()
                var = pc.variance(col, ddof=0).as_py()
                out[name] = {
                    "n": n,
                    "min": _plain(bounds["min"].as_py()),
                    "max": _plain(bounds["max"].as_py()),
                    "mean": float(mean),
                    "m2": float(var) * n,
                }
            elif pa.types.is_boolean(t):
                out[name] = {"n": n, "true": int(pc.sum(col).as_py() or 0)}
        except _ARROW_ERRORS:
            continue
    return out


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _extreme(values: list[Any], pick: Any) -> Any:
    # like pyarrow's min_max: NaN is skipped unless every value is NaN
    real = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if real:
        return pick(real)
    return math.nan if any(v is not None for v in values) else None


def merge_stats(parts: Iterable[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Merge `chunk_stats` of disjoint row ranges into the statistics of all of them.

    A column missing from any part is missing from the result (its statistics are unknown).
    """
    parts = list(parts)
    if not parts:
        return {}
    names = set(parts[0]).intersection(*parts[1:])
    merged: dict[str, dict[str, Any]] = {}
    for name in names:
        cols = [p[name] for p in parts]
        n = sum(int(c["n"]) for c in cols)
        if any("true" in c for c in cols):
            merged[name] = {"n": n, "true": sum(int(c.get("true", 0)) for c in cols)}
            continue
        filled = [c for c in cols if c["n"]]
        if not filled:
            merged[name] = {"n": 0}
            continue
        mean = math.fsum(c["n"] * c["mean"] for c in filled) / n
        # Chan et al.: M2 = sum of the parts' M2 + sum of n_i * (mean_i - mean)^2
        m2 = math.fsum(c["m2"] for c in filled) + math.fsum(
            c["n"] * (c["mean"] - mean) ** 2 for c in filled
        )
        merged[name] = {
            "n": n,
            "min": _extreme([c["min"] for c in filled], min),
            "max": _extreme([c["max"] for c in filled], max),
            "mean": mean,
            "m2": m2,
        }
    return merged


# --- sampled parts --------------------------------------------------------------------------------


def _sample(table: pa.Table) -> tuple[pa.Table, bool]:
    if table.num_rows <= SAMPLE_ROWS:
        return table, False
    rng = np.random.default_rng(0)
    index = np.sort(rng.integers(0, table.num_rows, SAMPLE_ROWS))
    return table.take(pa.array(index)), True


def _distribution(sample: pa.ChunkedArray, out: dict[str, Any]) -> None:
    values = sample.drop_null().to_numpy().astype(np.float64, copy=False)
    values = values[np.isfinite(values)]
    if len(values):
        qs = np.quantile(values, [0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99])
        out["quantiles"] = dict(
            zip(["p01", "p05", "p25", "p50", "p75", "p95", "p99"], map(_json, qs), strict=True)
        )
        try:
            counts, edges = np.histogram(values, bins=_BINS)
        except ValueError:  # a range too narrow for its magnitude (all values near 2**64)
            counts, edges = np.array([len(values)]), np.array([values.min(), values.max()])
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


def sample_profile(table: pa.Table) -> dict[str, Any]:
    """The profile without the merged statistics: types, nulls, temporal min/max, and what is
    computed on the sample (quantiles, histograms, top values). `finish_profile` completes it."""
    sample, sampled = _sample(table)
    columns: dict[str, Any] = {}
    for name, col in zip(table.column_names, table.columns, strict=True):
        t = col.type
        out: dict[str, Any] = {"type": str(t), "nulls": col.null_count}
        try:
            if _is_numeric(t):
                _distribution(sample.column(name), out)
            elif pa.types.is_temporal(t):
                bounds = pc.min_max(col)
                out["min"], out["max"] = _json(bounds["min"]), _json(bounds["max"])
            elif pa.types.is_boolean(t) or (
                pa.types.is_string(t)
                or pa.types.is_large_string(t)
                or pa.types.is_dictionary(t)
                or pa.types.is_binary(t)
            ):
                _top(sample.column(name), out)
        except _ARROW_ERRORS:
            pass  # a type pyarrow cannot summarise: nulls and type are still reported
        columns[name] = out
    profile: dict[str, Any] = {"rows": table.num_rows, "columns": columns, "sampled": sampled}
    if sampled:
        profile["sample_rows"] = SAMPLE_ROWS
    return profile


def finish_profile(
    table: pa.Table, partial: dict[str, Any], stats: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """Add the exact statistics (merged `stats`; computed here for a column they lack) to the
    `sample_profile` of `table`."""
    columns: dict[str, Any] = {}
    for name, col in zip(table.column_names, table.columns, strict=True):
        out = dict(partial["columns"][name])
        t = col.type
        if _is_numeric(t) or pa.types.is_boolean(t):
            s = stats.get(name)
            if s is None:
                s = chunk_stats(table.select([name])).get(name)
            if s is not None and pa.types.is_boolean(t):
                out["mean"] = s["true"] / s["n"] if s["n"] else None
            elif s is not None:
                n = int(s["n"])
                out["min"], out["max"] = _json(s.get("min")), _json(s.get("max"))
                out["mean"] = _json(s.get("mean"))
                out["std"] = _json(math.sqrt(s["m2"] / (n - 1))) if n > 1 else None
        columns[name] = {k: out[k] for k in _order(out)}
    return {**partial, "columns": columns}


def _order(out: dict[str, Any]) -> list[str]:
    first = ["type", "nulls", "min", "max", "mean", "std"]
    return [k for k in first if k in out] + [k for k in out if k not in first]


def profile_table(
    table: pa.Table, stats: Iterable[dict[str, dict[str, Any]]] | None = None
) -> dict[str, Any]:
    """The profile of an Arrow table (see the module docstring for what is exact).

    Args:
        stats: `chunk_stats` of consecutive row ranges covering the table (default: computed
            over the whole table).
    """
    merged = merge_stats(stats) if stats is not None else chunk_stats(table)
    return finish_profile(table, sample_profile(table), merged)
