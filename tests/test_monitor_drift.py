"""Drift statistics against SciPy, the sketches they are computed from, and the detection rates:
planted shifts are found, same-distribution batches almost never raise an alarm."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from monitor_helpers import make_frame
from scipy import stats as sps
from scipy.spatial.distance import jensenshannon

from nb_mlops.core.config import load_config
from nb_mlops.core.data import snapshot
from nb_mlops.core.data.refs import open_store
from nb_mlops.core.data.sketch import SAMPLE_ROWS, snapshot_sketch
from nb_mlops.core.errors import ConfigError, DataError
from nb_mlops.core.monitoring import drift, parse_settings
from nb_mlops.core.monitoring.report import drift_table
from nb_mlops.core.monitoring.stats import bin_counts, categorical, numeric, quantile_edges

# the sketch path at 1M rows compares ~131k sampled rows a side: its sampling error in these
# statistics is about 0.004 (KS D) and 0.005 (Wasserstein in standard deviations); the stated
# tolerances are four to five times that
SKETCH_TOL = {"ks": 0.02, "wasserstein": 0.025, "psi": 0.01}
EXACT_TOL = 1e-9


def _psi_reference(ref: np.ndarray, cur: np.ndarray, bins: int = 10) -> float:
    """PSI written out plainly: reference deciles, shares, 1e-4 for an empty bin."""
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))
    r = np.bincount(np.searchsorted(edges, ref, side="left"), minlength=len(edges) + 1) / len(ref)
    c = np.bincount(np.searchsorted(edges, cur, side="left"), minlength=len(edges) + 1) / len(cur)
    r, c = np.where(r == 0, 1e-4, r), np.where(c == 0, 1e-4, c)
    return float(np.sum((c - r) * np.log(c / r)))


samples = st.lists(
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, width=32), min_size=2, max_size=300
)


@given(samples, samples)
@settings(max_examples=100, deadline=None)
def test_numeric_statistics_equal_scipy_on_any_samples(a: list[float], b: list[float]) -> None:
    ref, cur = np.array(a), np.array(b)
    found = numeric(ref, cur)
    expected = sps.ks_2samp(ref, cur)
    assert found.values["ks"] == pytest.approx(expected.statistic, abs=EXACT_TOL)
    assert found.values["ks_p"] == pytest.approx(expected.pvalue, abs=1e-9)
    spread = float(np.std(ref)) or 1.0
    assert found.values["wasserstein"] == pytest.approx(
        sps.wasserstein_distance(ref, cur) / spread, rel=1e-9, abs=1e-9
    )
    assert found.values["psi"] == pytest.approx(_psi_reference(ref, cur), rel=1e-9, abs=1e-12)


def test_numeric_p_value_is_scipys_asymptotic_one_beyond_ten_thousand_values() -> None:
    rng = np.random.default_rng(4)
    ref, cur = rng.normal(0, 1, 20_000), rng.normal(0.02, 1, 15_000)
    found = numeric(ref, cur)
    expected = sps.ks_2samp(ref, cur)
    assert found.values["ks"] == pytest.approx(expected.statistic, abs=EXACT_TOL)
    assert found.values["ks_p"] == pytest.approx(expected.pvalue, rel=1e-9)


@given(
    st.dictionaries(st.sampled_from("abcdefgh"), st.integers(1, 5000), min_size=2),
    st.dictionaries(st.sampled_from("abcdefghij"), st.integers(1, 5000), min_size=1),
)
@settings(max_examples=100, deadline=None)
def test_categorical_statistics_equal_scipy_on_any_counts(
    ref: dict[str, int], cur: dict[str, int]
) -> None:
    found = categorical(ref, cur)
    # the reference's categories one by one, every value it never had pooled into one bucket
    labels = sorted(ref)
    unseen = sum(n for v, n in cur.items() if v not in ref)
    table = np.array([[ref[v] for v in labels] + [0], [cur.get(v, 0) for v in labels] + [unseen]])
    table = table[:, table.sum(axis=0) > 0]
    chi2, p, _, _ = sps.chi2_contingency(table, correction=False)
    n = table.sum()
    assert found.values["chi2"] == pytest.approx(chi2, rel=1e-9)
    assert found.values["chi2_p"] == pytest.approx(p, rel=1e-9, abs=1e-300)
    assert found.values["cramers_v"] == pytest.approx(math.sqrt(chi2 / n), rel=1e-9)
    r, c = table[0] / table[0].sum(), table[1] / table[1].sum()
    assert found.values["js"] == pytest.approx(jensenshannon(r, c, base=2), abs=1e-12)
    rr, cc = np.where(r == 0, 1e-4, r), np.where(c == 0, 1e-4, c)
    assert found.values["psi"] == pytest.approx(float(np.sum((cc - rr) * np.log(cc / rr))))


def test_quantile_bins_put_a_value_on_an_edge_in_the_lower_bin() -> None:
    ref = np.sort(np.array([1.0, 2, 2, 3, 4, 5, 6, 7, 8, 9]))
    edges = quantile_edges(ref, 2)
    assert edges.tolist() == [4.5]
    assert bin_counts(np.array([4.5, 4.5, 6.0]), edges).tolist() == [2, 1]


def _frames(project: Path) -> None:
    snapshot(make_frame(10_000, seed=0), "train", wait=True)
    snapshot(make_frame(10_000, shift=0.2, seed=1), "shifted", wait=True)
    snapshot(make_frame(10_000, share=0.4, seed=2), "moved", wait=True)


def test_a_fifth_of_a_deviation_mean_shift_and_a_ten_point_share_move_are_found(
    project: Path,
) -> None:
    # Given 10,000 training rows and two batches: x moved by 0.2 sd, c's share of "a" by 10 points
    _frames(project)
    # When each is compared with the training data
    shifted = drift("train", "shifted", exclude=["target"])
    moved = drift("train", "moved", exclude=["target"])
    # Then exactly the moved feature drifts, on an effect size
    assert shifted.drifted == ["x"]
    (x,) = [f for f in shifted.features if f.name == "x"]
    assert any(r.startswith("wasserstein") for r in x.reasons)
    assert moved.drifted == ["c"]
    (c,) = [f for f in moved.features if f.name == "c"]
    assert any(r.startswith("js") for r in c.reasons)
    # And with 10,000 rows the sketches held every row: the statistics are exact
    assert shifted.sample_rows == (10_000, 10_000) and x.exact and c.exact
    assert shifted.verdict == "ok" and shifted.share == 0.25  # one of four: under drift_share 0.5


def test_same_distribution_batches_raise_an_alarm_in_at_most_5_of_100_seeds(
    project: Path,
) -> None:
    # Given a training snapshot and 100 batches drawn from the same distribution
    snapshot(make_frame(10_000, seed=1000), "train", wait=True)
    alarms = []
    for seed in range(100):
        snapshot(make_frame(10_000, seed=seed), f"batch{seed}", wait=True)
        found = drift("train", f"batch{seed}", exclude=["target"])
        if found.drifted:
            alarms.append((seed, found.drifted))
    # Then at most 5 of them have any drifted feature
    assert len(alarms) <= 5, alarms


def test_small_batches_raise_the_thresholds_to_their_noise_level(project: Path) -> None:
    # Given batches of 200 rows from the training distribution (where a 0.1 threshold is noise)
    snapshot(make_frame(200, seed=0), "train", wait=True)
    snapshot(make_frame(200, seed=1), "small", wait=True)
    found = drift("train", "small", exclude=["target"])
    (x,) = [f for f in found.features if f.name == "x"]
    # Then the applied thresholds are the noise levels, above the configured ones
    assert x.thresholds["ks"] == pytest.approx(x.noise["ks"]) and x.noise["ks"] > 0.1
    assert x.thresholds["wasserstein"] > 0.1
    assert not found.drifted


def test_sketch_statistics_match_the_exact_ones_on_a_million_rows(project: Path) -> None:
    # Given a million-row training frame and a shifted one (sketches sample about 131k rows)
    snapshot(make_frame(1_000_000, seed=0), "big", wait=True)
    snapshot(make_frame(1_000_000, shift=0.05, share=0.33, seed=1), "big2", wait=True)
    sketched = drift("big", "big2", exclude=["target"])
    exact = drift("big", "big2", exclude=["target"], exact=True)
    assert sketched.sample_rows is not None and max(sketched.sample_rows) <= SAMPLE_ROWS
    assert min(sketched.sample_rows) > SAMPLE_ROWS * 0.9
    by_name = {f.name: f for f in exact.features}
    for feature in sketched.features:
        truth = by_name[feature.name]
        if feature.kind == "numeric":
            assert not feature.exact and truth.exact
            for name, tol in SKETCH_TOL.items():
                assert feature.stats[name] == pytest.approx(truth.stats[name], abs=tol), name
        else:
            # categorical counts are exact in the sketches: the same numbers as every row
            assert feature.exact
            for name in ("chi2", "cramers_v", "psi", "js"):
                assert feature.stats[name] == pytest.approx(truth.stats[name], rel=1e-9)
    # And the exact path equals SciPy on the raw columns
    from nb_mlops.core.data import restore

    a, b = restore("big"), restore("big2")
    assert by_name["x"].stats["ks"] == pytest.approx(
        sps.ks_2samp(a["x"], b["x"]).statistic, abs=EXACT_TOL
    )


def test_old_snapshots_get_their_sketches_computed_once_and_kept(project: Path) -> None:
    import shutil

    # Given two versions whose sketches were lost (as in a store written before sketches)
    snapshot(make_frame(50_000, seed=0), "old", wait=True)
    snapshot(make_frame(50_000, shift=1.0, seed=1), "new", wait=True)
    sketches = project / ".nb_mlops" / "data" / "index" / "sketch"
    shutil.rmtree(sketches)
    # When drift is computed, Then it works from the raw chunks and keeps the sketches
    first = drift("old", "new", exclude=["target"])
    assert first.drifted == ["x"]
    kept = sorted(p.name for p in sketches.rglob("*.arrow"))
    assert len([p for p in kept if len(p) == 64 + 6]) == 2  # the two versions' merged sketches
    second = drift("old", "new", exclude=["target"])
    assert sorted(p.name for p in sketches.rglob("*.arrow")) == kept
    assert [f.stats for f in second.features] == [f.stats for f in first.features]


def test_an_append_sketches_only_its_new_chunks(project: Path) -> None:
    frame = make_frame(400_000, seed=0)
    snapshot(frame, "grow", wait=True)
    sketches = project / ".nb_mlops" / "data" / "index" / "sketch"

    def chunk_sketches() -> set[str]:
        return {p.name for p in sketches.rglob("*.arrow") if p.parent.name != "versions"}

    before = chunk_sketches()
    grown = pd.concat([frame, make_frame(4_000, seed=9)], ignore_index=True)
    snapshot(grown, "grow", wait=True)
    after = chunk_sketches()
    store = open_store(load_config())
    new_chunks = {c["d"][2:] + ".arrow" for c in store.manifest("grow", 2)["chunks"]} - before
    assert after - before == new_chunks and 0 < len(new_chunks) <= 2
    merged = snapshot_sketch(store, store.manifest("grow", 2))
    assert merged.rows == 404_000
    assert merged.counts["c"] == grown["c"].value_counts().to_dict()
    assert merged.counts["k"] == grown["k"].value_counts().to_dict()
    assert merged.missing == {c: 0 for c in grown.columns}


def test_schema_changes_missing_columns_and_missing_values_are_drift(project: Path) -> None:
    base = make_frame(5_000, seed=0)
    snapshot(base, "train", wait=True)
    changed = base.drop(columns=["y"]).assign(x=base["x"].astype("float32"), extra=1)
    changed.loc[: len(changed) // 4, "k"] = None
    snapshot(changed, "changed", wait=True)
    found = drift("train", "changed", exclude=["target"])
    by_name = {f.name: f for f in found.features}
    assert by_name["y"].schema == "missing" and by_name["y"].drifted
    assert by_name["x"].schema == "dtype float64 → float32" and by_name["x"].drifted
    assert by_name["k"].drifted and by_name["k"].missing_cur == pytest.approx(0.25, abs=0.001)
    assert by_name["extra"].schema == "new" and not by_name["extra"].drifted
    assert found.verdict == "drift" and found.share == 0.75


def test_drift_refuses_files_and_unknown_versions(project: Path) -> None:
    (project / "notes.txt").write_text("hello")
    snapshot(project / "notes.txt", "notes", wait=True)
    snapshot(make_frame(100), "train", wait=True)
    with pytest.raises(DataError, match="notes@v1 is a file snapshot"):
        drift("train", "notes")
    with pytest.raises(DataError, match="no version 7"):
        drift("train@v7", "train")


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"drift_share": 1.5}, "drift_share = 1.5 is invalid"),
        ({"thresholds": {"ks": -1}}, "thresholds.ks = -1 is invalid"),
        ({"thresholds": {"kolmogorov": 0.1}}, "unknown key 'kolmogorov'"),
        ({"psi_bins": 1}, "psi_bins = 1 is invalid"),
        ({"policy": {"on_drift": "panic"}}, "policy.on_drift = 'panic' is invalid"),
        ({"policy": {"auto_promote": "yes"}}, "policy.auto_promote = 'yes' is invalid"),
        ({"alerts": {"webhooks": ["ftp://x"]}}, "alerts.webhooks[0].url = 'ftp://x' is invalid"),
        ({"alerts": {"webhooks": [{"url_env": "NB_TEST_NO_SUCH_VAR"}]}}, "is not set"),
        ({"alerts": {"events": ["drift", "boom"]}}, "events are drift, decay"),
        ({"alerts": {"retries": 99}}, "alerts.retries = 99 is invalid"),
        ({"label": ""}, "label = '' is invalid"),
        ({"retrain": True}, "unknown key 'retrain'"),
    ],
)
def test_bad_monitor_settings_name_the_key_and_the_value(table: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_settings(table)


def test_settings_defaults_and_inf_to_ignore_a_statistic() -> None:
    parsed = parse_settings({"thresholds": {"psi": float("inf")}, "ignore": ["id"]})
    assert parsed.thresholds["psi"] == math.inf and parsed.thresholds["ks"] == 0.1
    assert parsed.ignore == ("id",) and parsed.drift_share == 0.5
    assert parse_settings(None).policy.on_drift == "alert"


def test_gc_drops_the_sketches_of_chunks_no_version_keeps(project: Path) -> None:
    import shutil

    from nb_mlops.core.data import gc

    # Given a version, and the sketch of a chunk whose version was removed by hand
    snapshot(make_frame(20_000, seed=0), "kept", wait=True)
    snapshot(make_frame(20_000, seed=1), "gone", wait=True)
    sketches = project / ".nb_mlops" / "data" / "index" / "sketch"
    store = open_store(load_config())
    gone = {c["d"] for c in store.manifest("gone")["chunks"]}
    kept = {c["d"] for c in store.manifest("kept")["chunks"]}
    shutil.rmtree(project / ".nb_mlops" / "data" / "refs" / "gone")
    # When the store is garbage-collected
    gc()
    # Then only the kept version's sketches remain, and drift still reads them
    left = {
        p.parent.name + p.name[: -len(".arrow")]
        for p in sketches.rglob("*.arrow")
        if p.parent.name != "versions"
    }
    assert left == kept and not (left & gone)
    versions = {p.name[: -len(".arrow")] for p in (sketches / "versions").glob("*.arrow")}
    assert versions == {store.manifest("kept")["digest"]}
    assert drift("kept", "kept").drifted == []


def test_a_column_whose_values_are_not_compared_says_so(project: Path) -> None:
    # Given a timestamp column, whose values drift does not compare, moved by days
    when = pd.date_range("2024-01-01", periods=500, freq="min")
    snapshot(pd.DataFrame({"x": np.arange(500.0), "when": when}), "stamped", wait=True)
    later = pd.DataFrame({"x": np.arange(500.0), "when": when + pd.Timedelta(days=5)})
    snapshot(later, "stamped-later", wait=True)
    # When the two are compared
    report = drift("stamped", "stamped-later")
    # Then it is not called "ok": the table and the summary say it was not compared
    row = next(r for r in drift_table(report) if r["feature"] == "when")
    assert row["verdict"] == "not compared" and "not compared" in row["why"]
    assert "1 compared on missing values and type only: when" in report.summary()
