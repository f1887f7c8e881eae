"""Drift statistics of one feature: two samples (numeric) or two tables of counts (categorical).

Numeric: the Kolmogorov-Smirnov statistic D with its p-value (SciPy's `ks_2samp` method: exact up
to 10,000 values a side, else Smirnov's asymptotic formula), the Wasserstein distance (SciPy's
`wasserstein_distance`) in units of the reference's standard deviation, and the PSI on the
reference's quantile bins. Categorical: chi-square (no continuity correction) with its p-value and
Cramér's V, the PSI and the Jensen-Shannon distance (base 2) over the categories. Both: the change
of the missing-value share.

Each effect size comes with its noise level: the value it stays below, with probability
1 - `ALPHA`, between two samples of these sizes from one distribution (the asymptotic null law of
the statistic). A statistic drifts when it exceeds its threshold and its noise level, so small
batches do not raise alarms that large ones would not; p-values are reported, never decided on.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "ALPHA",
    "FeatureStats",
    "categorical",
    "categorical_aligned",
    "dict_counts",
    "joint_counts",
    "missing_change",
    "numeric",
    "plot_bins",
]

ALPHA = 0.001
_EPS = 1e-4  # share used in place of an empty bin in the PSI (its logarithm needs it)
_EXACT_P_MAX = 10_000  # SciPy's ks_2samp computes the exact p-value up to this many values a side
OTHER = "(other)"


@dataclass
class FeatureStats:
    """Statistics of one feature, its noise levels, and the data for a distribution plot.

    Attributes:
        values: statistic → value (`ks`, `ks_p`, `wasserstein`, `psi` / `chi2`, `chi2_p`,
            `cramers_v`, `psi`, `js`); p-values are information only.
        noise: statistic → the noise level of the sample sizes compared.
        n_ref, n_cur: values compared on each side (missing values left out).
        plot: bins or categories with the reference and current shares.
    """

    values: dict[str, float] = field(default_factory=dict)
    noise: dict[str, float] = field(default_factory=dict)
    n_ref: int = 0
    n_cur: int = 0
    plot: dict[str, Any] = field(default_factory=dict)


def _chi2_quantile(dof: int) -> float:
    from scipy.stats import chi2

    return float(chi2.isf(ALPHA, max(dof, 1)))


def _ks_p(d: float, n: int, m: int, ref: np.ndarray, cur: np.ndarray) -> float:
    """The two-sided p-value SciPy's `ks_2samp` gives (method "auto")."""
    from scipy import stats

    if max(n, m) <= _EXACT_P_MAX:
        with warnings.catch_warnings():  # SciPy falls back to the asymptotic value by itself
            warnings.simplefilter("ignore", RuntimeWarning)
            return float(stats.ks_2samp(ref, cur).pvalue)
    big, small = sorted([float(n), float(m)], reverse=True)
    en = big * small / (big + small)
    return float(np.clip(stats.kstwo.sf(d, np.round(en)), 0.0, 1.0))


def _psi(ref_share: np.ndarray, cur_share: np.ndarray) -> float:
    r = np.where(ref_share == 0, _EPS, ref_share)
    c = np.where(cur_share == 0, _EPS, cur_share)
    return float(np.sum((c - r) * np.log(c / r)))


def quantile_edges(ref_sorted: np.ndarray, bins: int) -> np.ndarray:
    """The interior edges of `bins` reference-quantile bins (ties merged)."""
    edges: np.ndarray = np.unique(np.quantile(ref_sorted, np.linspace(0, 1, bins + 1)[1:-1]))
    return edges


def bin_counts(values_sorted: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts in (-inf, e1], (e1, e2], ..., (ek, inf) of sorted values."""
    cuts = np.searchsorted(values_sorted, edges, side="right")
    counts: np.ndarray = np.diff(np.concatenate([[0], cuts, [len(values_sorted)]]))
    return counts


def numeric(ref: np.ndarray, cur: np.ndarray, bins: int = 10) -> FeatureStats:
    """KS, Wasserstein (in reference standard deviations) and PSI between two numeric samples.

    Args:
        ref, cur: the values (float64, no NaN), any order.
        bins: reference-quantile bins of the PSI.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> s = numeric(rng.normal(0, 1, 5000), rng.normal(0.5, 1, 5000))
        >>> round(s.values["wasserstein"], 1)
        0.5
    """
    rs = np.sort(np.asarray(ref, dtype=np.float64))
    cs = np.sort(np.asarray(cur, dtype=np.float64))
    n, m = len(rs), len(cs)
    out = FeatureStats(n_ref=n, n_cur=m)
    if n == 0 or m == 0:
        return out
    d, distance = _cdf_gap(rs, cs)
    spread = float(np.std(rs))
    scale = spread if spread > 0 else 1.0
    edges = quantile_edges(rs, bins)
    out.values = {
        "ks": d,
        "ks_p": _ks_p(d, n, m, rs, cs),
        "wasserstein": distance / scale,
        "psi": _psi(bin_counts(rs, edges) / n, bin_counts(cs, edges) / m),
    }
    out.noise = _noise(rs, m, scale, len(edges))
    out.plot = plot_bins(rs, cs)
    return out


def _cdf_gap(rs: np.ndarray, cs: np.ndarray) -> tuple[float, float]:
    """(KS statistic, unscaled Wasserstein distance) of two sorted, non-empty samples."""
    n, m = len(rs), len(cs)
    # both CDFs at every value (SciPy's definition: right-continuous, ties counted together),
    # from one merge of the two sorted samples
    both = np.concatenate([rs, cs])
    order = np.argsort(both, kind="stable")
    merged = both[order]
    from_ref = np.cumsum(order < n)
    last = np.empty(len(merged), dtype=bool)
    np.not_equal(merged[1:], merged[:-1], out=last[:-1])
    last[-1] = True
    at = merged[last]
    taken = from_ref[last]
    gap = taken / n - (np.flatnonzero(last) + 1 - taken) / m
    return float(np.max(np.abs(gap))), float(np.sum(np.abs(gap[:-1]) * np.diff(at)))


def _noise(rs: np.ndarray, m: int, scale: float, edges: int) -> dict[str, float]:
    """What each statistic reaches by chance alone between samples of these sizes."""
    n = len(rs)
    both_sizes = (n + m) / (n * m)
    # the integral of sqrt(F(1-F)) over the reference: the scale of the Wasserstein noise
    f = np.arange(1, n) / n
    spread_integral = float(np.sum(np.sqrt(f * (1 - f)) * np.diff(rs)))
    return {
        "ks": math.sqrt(-math.log(ALPHA / 2) / 2) * math.sqrt(both_sizes),
        # sqrt(n m / (n + m)) W tends to the integral of |B(F(x))| (B a Brownian bridge): its
        # mean plus z standard deviations, the deviation bounded by Minkowski's inequality
        "wasserstein": (
            math.sqrt(2 / math.pi) + _normal_quantile(1 - ALPHA / 2) * math.sqrt(1 - 2 / math.pi)
        )
        * spread_integral
        * math.sqrt(both_sizes)
        / scale,
        "psi": _chi2_quantile(edges) * both_sizes,
    }


def plot_bins(rs: np.ndarray, cs: np.ndarray, bins: int = 30) -> dict[str, Any]:
    """Shares of both sorted samples on common bins over their central 99 % (for plots)."""

    def at(values: np.ndarray, q: float) -> float:
        return float(values[min(len(values) - 1, int(q * (len(values) - 1)))])

    low, high = min(at(rs, 0.005), at(cs, 0.005)), max(at(rs, 0.995), at(cs, 0.995))
    if not high > low:
        low, high = low - 0.5, high + 0.5
    edges = np.linspace(low, high, bins + 1)
    ref_counts = np.diff(np.searchsorted(rs, edges, side="left")) / max(len(rs), 1)
    cur_counts = np.diff(np.searchsorted(cs, edges, side="left")) / max(len(cs), 1)
    return {
        "kind": "numeric",
        "edges": [float(e) for e in edges],
        "ref": [float(v) for v in ref_counts],
        "cur": [float(v) for v in cur_counts],
    }


Counts = Mapping[Any, int]


def joint_counts(ref: Any, cur: Any) -> tuple[Any, np.ndarray, np.ndarray]:
    """(values, reference counts, current counts) of two Arrow columns, aligned value by value
    (one dictionary encoding of both: each value is hashed once)."""
    import pyarrow as pa

    if ref.type != cur.type:
        try:
            cur = cur.cast(ref.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            ref, cur = ref.cast(pa.large_string()), cur.cast(pa.large_string())
    both = pa.chunked_array([*ref.drop_null().chunks, *cur.drop_null().chunks], type=ref.type)
    encoded = both.combine_chunks().dictionary_encode() if len(both) else None
    if encoded is None:
        return pa.array([], ref.type), np.zeros(0), np.zeros(0)
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    n = len(ref) - ref.null_count
    size = len(encoded.dictionary)
    rc = np.bincount(codes[:n], minlength=size).astype(np.float64)
    cc = np.bincount(codes[n:], minlength=size).astype(np.float64)
    return encoded.dictionary, rc, cc


def dict_counts(ref: Counts, cur: Counts) -> tuple[list[Any], np.ndarray, np.ndarray]:
    """(values, reference counts, current counts) of two count tables, aligned."""
    values = list(ref) + [v for v in cur if v not in ref]
    rc = np.array([ref.get(v, 0) for v in values], dtype=np.float64)
    cc = np.array([cur.get(v, 0) for v in values], dtype=np.float64)
    return values, rc, cc


def _aligned(
    values: Any, rc: np.ndarray, cc: np.ndarray, top: int
) -> tuple[list[Any], np.ndarray, np.ndarray, float]:
    """The `top` most frequent reference categories, then one bucket for every other value;
    also the count of current values the reference never had."""
    order = np.argsort(-rc, kind="stable")[: min(top, int(np.count_nonzero(rc)))]
    taken = values.take(order) if hasattr(values, "take") else [values[i] for i in order]
    labels: list[Any] = taken.to_pylist() if hasattr(taken, "to_pylist") else list(taken)
    r, c = rc[order], cc[order]
    new = float(cc[rc == 0].sum())
    rest_r, rest_c = float(rc.sum() - r.sum()), float(cc.sum() - c.sum())
    if rest_r or rest_c:
        labels.append(OTHER)
        r, c = np.append(r, rest_r), np.append(c, rest_c)
    used = (r + c) > 0
    return [lab for lab, u in zip(labels, used, strict=True) if u], r[used], c[used], new


def categorical(ref: Counts, cur: Counts, top: int = 100) -> FeatureStats:
    """Chi-square, Cramér's V, PSI and Jensen-Shannon distance between two count tables.

    Args:
        ref, cur: value → count.
        top: categories compared one by one (the most frequent in the reference); the others
            are pooled into one bucket, with the values the reference never had.
    """
    return categorical_aligned(*dict_counts(ref, cur), top=top)


def categorical_aligned(
    values: Any, rc: np.ndarray, cc: np.ndarray, top: int = 100
) -> FeatureStats:
    """`categorical` on counts already aligned value by value (see `joint_counts`)."""
    from scipy.spatial.distance import jensenshannon
    from scipy.stats import chi2_contingency

    labels, r, c, new = _aligned(values, rc, cc, top)
    n, m = int(r.sum()), int(c.sum())
    out = FeatureStats(n_ref=n, n_cur=m)
    if n == 0 or m == 0:
        return out
    if len(labels) < 2:
        out.values = {"chi2": 0.0, "chi2_p": 1.0, "cramers_v": 0.0, "psi": 0.0, "js": 0.0}
    else:
        chi2, p, _, _ = chi2_contingency(np.vstack([r, c]), correction=False)
        out.values = {
            "chi2": float(chi2),
            "chi2_p": float(p),
            "cramers_v": math.sqrt(float(chi2) / (n + m)),
            "psi": _psi(r / n, c / m),
            "js": float(jensenshannon(r / n, c / m, base=2)),
        }
    out.values["new_share"] = new / m
    q = _chi2_quantile(len(labels) - 1)
    both_sizes = 1 / n + 1 / m
    out.noise = {
        "cramers_v": math.sqrt(q / (n + m)),
        "psi": q * both_sizes,
        "js": math.sqrt(q * both_sizes / (8 * math.log(2))),
    }
    shown = min(len(labels), 12)
    out.plot = {
        "kind": "categorical",
        "labels": [str(v) for v in labels[:shown]],
        "ref": [float(v) for v in r[:shown] / n],
        "cur": [float(v) for v in c[:shown] / m],
    }
    return out


def missing_change(
    missing_ref: int, rows_ref: int, missing_cur: int, rows_cur: int
) -> tuple[float, float]:
    """(absolute change of the missing share, its noise level) between two row sets."""
    if rows_ref == 0 or rows_cur == 0:
        return 0.0, 1.0
    p1, p2 = missing_ref / rows_ref, missing_cur / rows_cur
    pooled = (missing_ref + missing_cur) / (rows_ref + rows_cur)
    z = _normal_quantile(1 - ALPHA / 2)
    return abs(p2 - p1), z * math.sqrt(pooled * (1 - pooled) * (1 / rows_ref + 1 / rows_cur))


def _normal_quantile(q: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(q)
