"""Data snapshots of frames and arrays: exact round trips, dedup, append/edit costs, profile, diff."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import pandas as hpd

import nb_mlops
from nb_mlops.core.data import diff, frames, profile, restore, snapshot, snapshots
from nb_mlops.core.data.refs import open_store
from nb_mlops.core.errors import DataError, SnapshotNotFound

N = 50


def _frames() -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(7)
    base = pd.DataFrame({"x": rng.standard_normal(N), "k": rng.integers(0, 100, N)})
    cat = pd.Categorical(
        rng.choice(["lo", "mid", "hi"], N), categories=["lo", "mid", "hi", "unused"], ordered=True
    )
    nullable = pd.array(rng.integers(0, 9, N), dtype="Int64")
    nullable[[1, 5]] = pd.NA
    strings = [f"s{i}" if i % 7 else None for i in range(N)]
    return {
        "numeric": base,
        "categorical": base.assign(c=cat),
        "tz_datetime": base.assign(
            t=pd.date_range("2024-03-01", periods=N, freq="h", tz="Europe/Paris")
        ),
        "naive_datetime_ns": base.assign(t=pd.date_range("2024-03-01", periods=N, freq="37s")),
        "nullable_int": base.assign(
            n=nullable, b=pd.array([True, None] * (N // 2), dtype="boolean")
        ),
        "pyarrow_strings": base.assign(s=pd.array(strings, dtype="string[pyarrow]")),
        "default_strings": base.assign(s=pd.array([f"v{i}" for i in range(N)], dtype="str")),
        "object_strings": base.assign(
            s=pd.Series([f"o{i}" if i % 3 else None for i in range(N)], dtype=object)
        ),
        "object_index": base.set_index(
            pd.Index([f"r{i}" for i in range(N)], dtype=object, name="o")
        ),
        "named_index": base.set_index(pd.Index(np.arange(N) * 3, name="row_id")),
        "string_index": base.set_index(pd.Index([f"r{i}" for i in range(N)], name="key")),
        "multiindex": base.set_index(
            pd.MultiIndex.from_arrays([np.arange(N) % 5, np.arange(N)], names=["g", "i"])
        ),
        "range_index_step": base.set_index(pd.RangeIndex(10, 10 + 2 * N, 2)),
        "column_order": base.assign(z=1.5, a="t")[["z", "k", "a", "x"]],
        "float32_uint8": pd.DataFrame(
            {"f": np.arange(N, dtype="float32"), "u": np.arange(N, dtype="uint8")}
        ),
        "nan_and_inf": pd.DataFrame({"f": [np.nan, np.inf, -np.inf, 0.0, -0.0] * (N // 5)}),
        "timedelta": base.assign(d=pd.to_timedelta(np.arange(N), unit="s")),
        "bytes": pd.DataFrame({"b": [bytes([i, 0, 255]) for i in range(N)]}),
        "empty": base.head(0),
        "int_column_names": pd.DataFrame({0: np.arange(N), 1: np.arange(N) * 2.0}),
        "index_with_frequency": base.set_index(
            pd.date_range("2024-03-01", periods=N, freq="h", tz="America/New_York", name="ts")
        ),
        "rows_without_columns": pd.DataFrame(index=pd.RangeIndex(N)),
        "uint64_extremes": pd.DataFrame({"u": np.array([2**64 - 1] * N, dtype="uint64")}),
        "multiindex_columns": pd.DataFrame(
            np.arange(2 * N).reshape(N, 2),
            columns=pd.MultiIndex.from_tuples([("a", "x"), ("a", "y")]),
        ),
    }


FRAMES = _frames()


@pytest.mark.parametrize("case", sorted(FRAMES))
def test_restore_returns_an_equal_frame(project: Path, case: str) -> None:
    df = FRAMES[case]
    snap = snapshot(df, f"t-{case}".replace("_", "-"))
    back = restore(snap.ref)
    pd.testing.assert_frame_equal(back, df, check_exact=True)
    assert list(back.columns) == list(df.columns)
    assert back.dtypes.map(str).tolist() == df.dtypes.map(str).tolist()


# --- generated frames: exact, or refused in one line ----------------------------------------

_ELEMENTS = {
    "int8": st.integers(-128, 127),
    "int64": st.integers(-(2**63), 2**63 - 1),
    "uint64": st.integers(0, 2**64 - 1),
    "float16": st.floats(width=16, allow_nan=True),
    "float32": st.floats(width=32, allow_nan=True),
    "float64": st.floats(allow_nan=True, allow_infinity=True),
    "bool": st.booleans(),
    "datetime64[ns]": st.datetimes(
        min_value=pd.Timestamp("1700-01-01").to_pydatetime(),
        max_value=pd.Timestamp("2200-01-01").to_pydatetime(),
    ),
    "timedelta64[ns]": st.timedeltas(
        min_value=pd.Timedelta(days=-9999).to_pytimedelta(),
        max_value=pd.Timedelta(days=9999).to_pytimedelta(),
    ),
    "object": st.one_of(st.none(), st.text(max_size=5)),
    "category": st.sampled_from(["lo", "mid", "hi"]),
}
_NAMES = st.one_of(st.text(max_size=4), st.integers(-3, 3))


@st.composite
def _generated_frames(draw: st.DrawFn) -> pd.DataFrame:
    names = draw(st.lists(_NAMES, max_size=5, unique_by=lambda n: (type(n), n)))
    columns = [
        hpd.column(
            name,
            elements=_ELEMENTS[kind],
            dtype=None if kind in ("object", "category") else kind,
        )
        for name in names
        for kind in [draw(st.sampled_from(sorted(_ELEMENTS)))]
    ]
    index = st.one_of(
        hpd.range_indexes(max_size=8),
        hpd.indexes(elements=st.integers(-5, 5), max_size=8),
        hpd.indexes(elements=st.text(max_size=3), max_size=8, unique=True),
    )
    frame = draw(hpd.data_frames(columns, index=index))
    for name, kind in zip(names, [c.dtype for c in columns], strict=True):
        if kind is None and draw(st.booleans()) and len(frame):
            frame[name] = frame[name].astype("category")  # a categorical column now and then
    return frame


SEEN = {"refused": 0, "stored": 0}


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(frame=_generated_frames())
def test_generated_frames_restore_exactly_or_are_refused_in_one_line(
    project: Path, frame: pd.DataFrame
) -> None:
    # Given any frame of everyday dtypes, names and indexes
    name = f"gen-{SEEN['refused'] + SEEN['stored']}"
    # When it is snapshotted
    try:
        snap = snapshot(frame, name)
    except DataError as exc:
        # Then it is refused in one line that says what to do
        SEEN["refused"] += 1
        assert "\n" not in str(exc)
        return
    # Or it comes back exactly: values, dtypes, names, index
    SEEN["stored"] += 1
    back = restore(snap.ref)
    pd.testing.assert_frame_equal(back, frame, check_exact=True)
    assert back.dtypes.map(str).tolist() == frame.dtypes.map(str).tolist()


ARRAYS = {
    "f8_2d": np.arange(12, dtype="f8").reshape(3, 4),
    "i2_3d": np.arange(24, dtype="i2").reshape(2, 3, 4),
    "bool": np.array([True, False, True]),
    "complex": np.array([1 + 2j, 3 - 4j]),
    "fortran": np.asfortranarray(np.arange(6, dtype="u4").reshape(2, 3)),
    "datetime64": np.array(["2024-01-01", "2024-02-01"], dtype="datetime64[ns]"),
    "unicode": np.array(["a", "bb", "ccc"]),
    "scalar": np.array(3.5),
    "empty": np.zeros((0, 3)),
}


@pytest.mark.parametrize("case", sorted(ARRAYS))
def test_restore_returns_an_equal_array(project: Path, case: str) -> None:
    arr = ARRAYS[case]
    back = restore(snapshot(arr, f"a-{case}".replace("_", "-")).ref)
    assert back.dtype == arr.dtype and back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)


def test_list_cells_come_back_as_numpy_arrays(project: Path) -> None:
    # documented behaviour (Arrow's): list cells restore as 1-d arrays with the same values
    df = pd.DataFrame({"l": [[i, i + 1] for i in range(N)]})
    back = restore(snapshot(df, "lists").ref)
    assert [list(v) for v in back["l"]] == df["l"].tolist()


def test_unsupported_objects_are_refused_clearly(project: Path) -> None:
    with pytest.raises(DataError, match="object and structured arrays"):
        snapshot(np.array([object(), 1]), "bad")
    with pytest.raises(DataError, match="mixed-type"):
        snapshot(pd.DataFrame({"m": [1, "a", 2.5]}), "bad")
    with pytest.raises(DataError, match=r"column names \(0, 'a'\) would not come back"):
        snapshot(pd.DataFrame({0: [1], "a": [2]}), "mixed-names")
    with pytest.raises(DataError, match=r"make sparse columns dense first"):
        snapshot(pd.DataFrame({"s": pd.arrays.SparseArray([0, 1])}), "sparse")
    with pytest.raises(DataError, match="duplicate column"):
        snapshot(pd.DataFrame([[1, 2]], columns=["a", "a"]), "bad")
    with pytest.raises(DataError, match="cannot snapshot a dict"):
        snapshot({"a": 1}, "bad")
    with pytest.raises(DataError, match="needs a name"):
        snapshot(FRAMES["numeric"])
    with pytest.raises(DataError, match="invalid context"):
        snapshot(FRAMES["numeric"], "ok", context="training")


def _big(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "f": rng.standard_normal(n),
            "i": rng.integers(0, 1_000_000, n),
            "s": pd.array([f"k{v}" for v in rng.integers(0, 50_000, n)], dtype="str"),
        }
    )


def test_versions_dedup_appends_and_scattered_edits(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given chunks of ~1,000 rows on a 100,000-row frame
    monkeypatch.setattr(frames, "_TARGET_CHUNK_BYTES", 30_000)
    df = _big(100_000)
    v1 = snapshot(df, "train", context="train", message="first")
    assert (v1.version, v1.rows, v1.new) == (1, 100_000, True)
    assert v1.bytes_added > 0 and v1.context == "train" and v1.message == "first"

    # unchanged content → the same version, no bytes
    again = snapshot(df.copy(), "train")
    assert (again.version, again.new, again.bytes_added, again.digest) == (1, False, 0, v1.digest)

    # +1 % rows appended → a new version storing little more than the new rows
    appended = pd.concat([df, _big(1_000, seed=1)], ignore_index=True)
    v2 = snapshot(appended, "train")
    assert v2.version == 2 and v2.bytes_added < 0.05 * v1.bytes_added

    # 1 % rows edited at random places → row patches, not whole chunks
    edited = appended.copy()
    rows = np.random.default_rng(3).choice(len(edited), len(edited) // 100, replace=False)
    edited.loc[rows, "f"] = 42.0
    v3 = snapshot(edited, "train")
    assert v3.version == 3 and v3.bytes_added < 0.25 * v1.bytes_added
    pd.testing.assert_frame_equal(restore("train@v3"), edited, check_exact=True)
    pd.testing.assert_frame_equal(restore("train", 2), appended, check_exact=True)
    pd.testing.assert_frame_equal(restore("train@v1"), df, check_exact=True)

    # diff sees the rows that moved
    d12 = diff("train@v1", "train@v2")
    assert d12["rows"] == {"a": 100_000, "b": 101_000, "delta": 1_000}
    assert (d12["rows_added"], d12["rows_removed"], d12["rows_changed"]) == (1_000, 0, 0)
    d23 = diff("train@v2", "train@v3")
    assert d23["rows_changed"] == len(rows) and d23["rows_added"] == 0
    assert "f" in d23["stats"] and d23["stats"]["f"]["mean"]["delta"] != 0

    assert [s.version for s in snapshots("train")] == [1, 2, 3]
    assert nb_mlops.snapshots is snapshots


def test_diff_reports_column_changes(project: Path) -> None:
    df = FRAMES["numeric"]
    snapshot(df, "cols")
    snapshot(df.drop(columns="k").assign(k=df["k"].astype("float64"), new=1), "cols")
    d = diff("cols@v1", "cols@v2")
    assert d["columns"] == {"added": ["new"], "removed": [], "retyped": [["k", "int64", "float64"]]}
    # rows are compared on the columns both versions share with the same type: all equal
    assert (d["rows_added"], d["rows_removed"], d["rows_changed"]) == (0, 0, None)


def test_profile_has_the_promised_statistics(project: Path) -> None:
    df = FRAMES["categorical"].assign(n=FRAMES["nullable_int"]["n"])
    prof = snapshot(df, "prof").profile
    assert prof["rows"] == N and prof["sampled"] is False
    x = prof["columns"]["x"]
    assert {"min", "max", "mean", "std", "quantiles", "histogram", "nulls"} <= x.keys()
    assert x["min"] == pytest.approx(df["x"].min()) and x["mean"] == pytest.approx(df["x"].mean())
    assert x["std"] == pytest.approx(df["x"].std())
    assert prof["columns"]["n"]["nulls"] == 2
    assert prof["columns"]["c"]["top"][0][1] == df["c"].value_counts().max()
    assert sum(x["histogram"]["counts"]) == N


def test_unknown_names_and_versions(project: Path) -> None:
    with pytest.raises(SnapshotNotFound, match="no snapshot named 'nope'"):
        restore("nope")
    snapshot(FRAMES["numeric"], "one")
    with pytest.raises(SnapshotNotFound, match=r"no version 4 .*v1"):
        restore("one@v4")
    with pytest.raises(DataError, match="names version 1 but version=2"):
        restore("one@v1", 2)


def test_source_edits_after_a_snapshot_never_reach_the_pending_write(project: Path) -> None:
    """`snapshot` returns before the bytes are durable: what it captured is what is stored, even
    if the caller overwrites the memory Arrow shared with numpy; restore waits for the write."""
    arr = np.arange(300_000, dtype=np.float64)
    expected = arr.copy()
    snap = snapshot(arr, "live")
    arr[:] = -1.0  # the array Arrow wrapped without a copy
    back = restore(snap.ref)  # waits for the pending write
    assert snap.durable and snap.bytes_added > 0
    np.testing.assert_array_equal(back, expected)
    again = snapshot(expected, "live")
    assert not again.new and again.version == 1


def _profiled_table() -> pa.Table:
    rng = np.random.default_rng(11)
    n = 5_000
    f = rng.standard_normal(n) * 1e6 + 3.0
    f[rng.choice(n, 40, replace=False)] = np.nan
    return pa.table(
        {
            "f": pa.array(f, mask=rng.random(n) < 0.02),
            "i": pa.array(rng.integers(-(2**40), 2**40, n)),
            "u8": pa.array(rng.integers(0, 255, n).astype("uint8")),
            "b": pa.array(rng.random(n) < 0.3, mask=rng.random(n) < 0.1),
            "s": pa.array([f"k{v}" for v in rng.integers(0, 30, n)]),
            "empty": pa.nulls(n, pa.float64()),
            "nan_only_tail": pa.array(np.r_[np.ones(n - 100), np.full(100, np.nan)]),
        }
    )


def _assert_same_profile(merged: dict[str, Any], full: dict[str, Any]) -> None:
    assert merged.keys() == full.keys() and merged["rows"] == full["rows"]
    for name, col in full["columns"].items():
        other = merged["columns"][name]
        assert other.keys() == col.keys(), name
        for key, value in col.items():
            if key in ("mean", "std") and value is not None:
                # the only inexact statistics: merged means and M2 round differently
                assert other[key] == pytest.approx(value, rel=1e-9), (name, key)
            else:
                assert other[key] == value, (name, key)


@pytest.mark.parametrize("cuts", [[], [1], [17, 2_000, 2_001, 4_900], list(range(250, 5_000, 250))])
def test_merged_chunk_statistics_equal_a_full_profile(cuts: list[int]) -> None:
    """Per-chunk statistics merged (Chan's formula) give the profile of the whole table: counts,
    nulls, min and max exactly, mean and std within 1e-9 relative."""
    table = _profiled_table()
    bounds = list(zip([0, *cuts], [*cuts, table.num_rows], strict=True))
    parts = [profile.chunk_stats(table.slice(a, b - a)) for a, b in bounds]
    full = profile.profile_table(table)
    _assert_same_profile(profile.profile_table(table, parts), full)
    f = full["columns"]["f"]
    values = pd.Series(table.column("f").to_pandas()).dropna()
    assert f["min"] == values.min() and f["max"] == values.max()
    assert f["std"] is None and f["mean"] is None  # NaN present: not a number, as pyarrow says
    i = full["columns"]["i"]
    assert i["mean"] == pytest.approx(np.mean(table.column("i").to_numpy()), rel=1e-12)
    assert i["std"] == pytest.approx(np.std(table.column("i").to_numpy(), ddof=1), rel=1e-9)
    assert full["columns"]["empty"]["min"] is None and full["columns"]["nan_only_tail"]["max"] == 1


def test_an_appended_version_profiles_only_new_chunks_yet_equals_a_full_profile(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(frames, "_TARGET_CHUNK_BYTES", 30_000)
    df = _big(60_000)
    snapshot(df, "grow", wait=True)
    frames._STATS_CACHE.clear()  # the statistics must come from the chunk index on disk
    computed: list[int] = []
    real = profile.chunk_stats

    def counting(table: pa.Table) -> dict[str, Any]:
        computed.append(table.num_rows)
        return real(table)

    monkeypatch.setattr(profile, "chunk_stats", counting)
    appended = pd.concat([df, _big(600, seed=5)], ignore_index=True)
    v2 = snapshot(appended, "grow")
    assert 0 < sum(computed) < 0.1 * len(appended)  # the tail chunks only
    monkeypatch.setattr(profile, "chunk_stats", real)
    full = profile.profile_table(frames.prepare(appended).source_table)
    _assert_same_profile(v2.profile, full)
    assert v2.wait().profile == snapshots("grow@v2")[0].profile
    # chunk statistics stay in the chunk index, out of the manifests
    manifest = json.loads((project / ".nb_mlops/data/refs/grow/v000002.json").read_text())
    assert all("stats" not in chunk for chunk in manifest["chunks"])


def test_chunks_are_arrow_ipc_and_parquet_chunks_still_restore(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    df = _big(3_000)
    snap = snapshot(df, "fmt", wait=True)
    store = open_store()
    oids = [c["object"] for c in store.manifest("fmt", 1)["chunks"]]
    assert all(store.objects.path(o).read_bytes()[:6] == b"ARROW1" for o in oids)

    def parquet(table: pa.Table) -> pa.Buffer:  # the chunk format of earlier stores
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="snappy", use_dictionary=False)
        return sink.getvalue()

    ipc = frames._encode
    monkeypatch.setattr(frames, "_encode", parquet)
    old = df.assign(f=df["f"] + 1)
    snapshot(old, "legacy", wait=True)
    oids = [c["object"] for c in store.manifest("legacy", 1)["chunks"]]
    assert all(store.objects.path(o).read_bytes()[:4] == b"PAR1" for o in oids)
    monkeypatch.setattr(frames, "_encode", ipc)
    pd.testing.assert_frame_equal(restore("legacy@v1"), old, check_exact=True)
    pd.testing.assert_frame_equal(restore(snap), df, check_exact=True)


def test_row_hashes_do_not_depend_on_blocks_or_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    table = pa.Table.from_pandas(_big(10_000), preserve_index=False)
    whole = frames.row_hashes(table)
    monkeypatch.setattr(frames, "_BLOCK_ROWS", 333)
    np.testing.assert_array_equal(frames.row_hashes(table), whole)
    np.testing.assert_array_equal(frames.row_hashes(table.slice(1_234, 5_000)), whole[1_234:6_234])
    assert len(np.unique(whole)) == len(whole)


def test_the_same_frame_under_the_same_name_in_two_projects_is_stored_in_both(
    project: Path, tmp_path: Path
) -> None:
    """One process (a test run, a server) may snapshot into several projects: a write still
    pending in one store says nothing about another store."""
    from nb_mlops.core.config import load_config

    other = tmp_path / "other"
    other.mkdir()
    (other / "pyproject.toml").write_text('[project]\nname = "other"\n\n[tool.nb_mlops]\n')
    frame = pd.DataFrame({"x": np.arange(20_000), "y": np.arange(20_000) * 0.5})
    first = snapshot(frame, "shared-name")  # no wait: its write may still be pending
    second = snapshot(frame, "shared-name", cfg=load_config(other))
    assert first.new and second.new and second.version == 1
    pd.testing.assert_frame_equal(restore("shared-name@v1", cfg=load_config(other)), frame)
    pd.testing.assert_frame_equal(restore("shared-name@v1"), frame)
