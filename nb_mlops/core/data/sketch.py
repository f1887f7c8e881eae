"""Mergeable per-chunk sketches of a frame version: a coordinated row sample and exact counts.

Every stored chunk gets a sketch beside its index entry (`index/sketch/`, a cache: a lost or
missing one is recomputed from the chunk's rows and kept): the chunk's rows with the smallest
pseudo-random priorities (a 64-bit mix of the chunk's digest and the row's position, so the same
chunk always keeps the same rows), its exact missing-value counts, and the exact value counts of its
boolean, string and categorical columns when they have at most `COUNT_CAP` distinct values.

Merging the chunks of a version keeps the rows whose priority is at most the smallest "largest kept
priority" of the chunks that kept only part of their rows: exactly the rows of the whole version
below that priority, a uniform random sample of it (bottom-k sampling). Drift statistics computed on
it have sampling error of order 1/sqrt(sample rows), about 0.003 in the KS statistic at the target
size, where a KLL quantile sketch of k=200 guarantees 0.017; counts stay exact. An append or edit
computes the sketches of its new chunks only, in the background write.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from nb_mlops.core.data.refs import DataStore
from nb_mlops.core.files import write_atomic

__all__ = [
    "COUNT_CAP",
    "SAMPLE_ROWS",
    "ChunkSketch",
    "SnapshotSketch",
    "chunk_sketch",
    "has_sketch",
    "keep_count",
    "prune_sketches",
    "put_sketch",
    "read_sketch",
    "snapshot_sketch",
]

SAMPLE_ROWS = 1 << 17  # rows a version's sample aims at (every row of a smaller one is kept)
MIN_KEEP = 256  # rows a chunk keeps at least (a sample of a huge version stays this dense)
COUNT_CAP = 1000  # distinct values a chunk counts exactly; more and the sample stands in
PRIORITY = "__nb_mlops_priority__"
_META_KEY = b"nb_mlops.sketch"
_VERSION = 1
# uncompressed: a sketch is small and read often; sampled doubles do not compress anyway
_IPC_WRITE = pa.ipc.IpcWriteOptions(compression=None, use_threads=False)
_IPC_READ = pa.ipc.IpcReadOptions(use_threads=False)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


# --- one chunk ------------------------------------------------------------------------------------


@dataclass
class ChunkSketch:
    """The sketch of one chunk.

    Attributes:
        rows: rows of the chunk.
        sample: the kept rows (stored columns, plus their priority in `PRIORITY`).
        complete: every row is kept.
        missing: column → null (and NaN) count over every row.
        counts: column → (values, counts) over every row, for the columns counted exactly.
    """

    rows: int
    sample: pa.Table
    complete: bool
    missing: dict[str, int] = field(default_factory=dict)
    counts: dict[str, tuple[list[Any], list[int]]] = field(default_factory=dict)

    @property
    def top_priority(self) -> float:
        """The largest kept priority (rows above it were left out when `complete` is False)."""
        if self.sample.num_rows == 0:
            return 0.0
        return float(pc.max(self.sample.column(PRIORITY)).as_py())


def keep_count(rows: int, total_rows: int) -> int:
    """Rows a chunk of `rows` keeps in a version of `total_rows`: its share of `SAMPLE_ROWS`."""
    share = math.ceil(SAMPLE_ROWS * rows / max(total_rows, 1))
    return min(rows, max(MIN_KEEP, share))


def _priorities(digest: str, rows: int) -> np.ndarray:
    """A uniform [0, 1) priority per row, a function of the chunk digest and the row position."""
    seed = np.uint64(int(digest[:16], 16))
    x = np.arange(rows, dtype=np.uint64) * _GOLDEN + seed  # wraps modulo 2**64, as intended
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    out: np.ndarray = (x >> np.uint64(11)).astype(np.float64) * 2.0**-53
    return out


def _countable(t: pa.DataType) -> bool:
    return bool(
        pa.types.is_boolean(t)
        or pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_dictionary(t)
    )


def _missing(col: pa.ChunkedArray) -> int:
    count = col.null_count
    if pa.types.is_floating(col.type) and len(col):
        count += int(pc.sum(pc.is_nan(col)).as_py() or 0)
    return int(count)


def _count(col: pa.ChunkedArray, sampled: pa.ChunkedArray, subset: bool) -> Any:
    """(values, counts) of `col`, or None when it has more than `COUNT_CAP` distinct values. The
    sample decides first, cheaply: many distinct values there mean many in the chunk."""
    seen = int(pc.count_distinct(sampled).as_py() or 0)
    if seen > COUNT_CAP or (subset and seen > max(16, len(sampled) // 2)):
        return None
    counted = pc.value_counts(col)
    if len(counted) > COUNT_CAP + 1:
        return None
    values = counted.field("values").to_pylist()
    counts = counted.field("counts").to_pylist()
    pairs = [(v, int(c)) for v, c in zip(values, counts, strict=True) if v is not None]
    if len(pairs) > COUNT_CAP:
        return None
    return [v for v, _ in pairs], [c for _, c in pairs]


def chunk_sketch(
    part: pa.Table, digest: str, total_rows: int, categorical: Iterable[str] = ()
) -> ChunkSketch:
    """Sketch one chunk of a version.

    Args:
        part: the chunk's stored rows (categorical columns as their integer codes).
        digest: the chunk's logical digest (seeds the row priorities).
        total_rows: rows of the whole version (sets how many rows this chunk keeps).
        categorical: columns stored as codes of a dictionary (counted like strings).
    """
    rows = part.num_rows
    keep = keep_count(rows, total_rows)
    priority = _priorities(digest, rows)
    if keep < rows:
        index = np.sort(np.argpartition(priority, keep - 1)[:keep])
        sample = part.take(pa.array(index))
        kept = priority[index]
    else:
        sample, kept = part, priority
    sample = sample.append_column(PRIORITY, pa.array(kept, pa.float64()))
    coded = set(categorical)
    missing: dict[str, int] = {}
    counts: dict[str, tuple[list[Any], list[int]]] = {}
    for name, col in zip(part.column_names, part.columns, strict=True):
        missing[name] = _missing(col)
        if _countable(col.type) or name in coded:
            found = _count(col, sample.column(name), keep < rows)
            if found is not None:
                counts[name] = found
    return ChunkSketch(rows, sample, keep >= rows, missing, counts)


# --- storage (a cache beside the chunk index) -----------------------------------------------------


def _path(store: DataStore, digest: str) -> Path:
    return store.root / "index" / "sketch" / digest[:2] / f"{digest[2:]}.arrow"


def has_sketch(store: DataStore, digest: str) -> bool:
    return _path(store, digest).is_file()


def encode(sketch: ChunkSketch) -> bytes:
    meta = {
        "v": _VERSION,
        "rows": sketch.rows,
        "complete": sketch.complete,
        "missing": sketch.missing,
        "counts": {k: [v, c] for k, (v, c) in sketch.counts.items()},
    }
    table = sketch.sample.replace_schema_metadata({_META_KEY: json.dumps(meta, default=str)})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema, options=_IPC_WRITE) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def decode(data: bytes) -> ChunkSketch | None:
    """A stored sketch, or None when it is unreadable or of another format version."""
    try:
        table = pa.ipc.open_file(pa.py_buffer(data), options=_IPC_READ).read_all()
        meta = json.loads((table.schema.metadata or {})[_META_KEY])
    except (pa.ArrowException, KeyError, ValueError, OSError):
        return None
    if meta.get("v") != _VERSION:
        return None
    counts = {k: (list(v), [int(c) for c in n]) for k, (v, n) in meta["counts"].items()}
    return ChunkSketch(
        int(meta["rows"]),
        table.replace_schema_metadata(None),
        bool(meta["complete"]),
        {k: int(v) for k, v in meta["missing"].items()},
        counts,
    )


def put_sketch(store: DataStore, digest: str, sketch: ChunkSketch) -> None:
    """Keep a chunk's sketch (temp file + rename; not fsynced: it is recomputed if lost)."""
    # a cache: a sketch that cannot be written now is computed again when needed
    with contextlib.suppress(OSError):
        write_atomic(_path(store, digest), encode(sketch))


def read_sketch(store: DataStore, digest: str) -> ChunkSketch | None:
    try:
        data = _path(store, digest).read_bytes()
    except OSError:
        return None
    return decode(data)


def prune_sketches(store: DataStore) -> int:
    """Remove the sketches of chunks the index no longer holds, and the merged sketches of
    versions no manifest names (gc); returns how many."""
    folder = store.root / "index" / "sketch"
    if not folder.is_dir():
        return 0
    digests = {str(m.get("digest")) for m in store.manifests()}
    removed = 0
    for path in folder.glob("*/*.arrow"):
        if path.parent.name == "versions":
            dead = path.name[: -len(".arrow")] not in digests
        else:
            dead = store.chunk_entry(path.parent.name + path.name[: -len(".arrow")]) is None
        if dead:
            with contextlib.suppress(OSError):
                path.unlink()
                removed += 1
    return removed


# --- a whole version ------------------------------------------------------------------------------


@dataclass
class SnapshotSketch:
    """The merged sketch of one frame version.

    Attributes:
        ref: `NAME@vN`.
        rows: rows of the version.
        columns: the frame's columns (index columns left out).
        dtypes: column → pandas dtype, as snapshotted.
        types: column → Arrow type of its values (categoricals: their categories' type).
        categorical: columns stored as pandas categoricals.
        sample: the sampled rows (categoricals decoded), every row when `rate` is 1.
        rate: the share of rows sampled (the priority bound).
        missing: column → missing values over every row.
        counts: column → {value: count} over every row, for the columns counted exactly.
    """

    ref: str
    rows: int
    columns: list[str]
    dtypes: dict[str, str]
    types: dict[str, pa.DataType]
    categorical: set[str]
    sample: pa.Table
    rate: float
    missing: dict[str, int]
    counts: dict[str, dict[Any, int]]


def _schema(manifest: dict[str, Any]) -> pa.Schema:
    import base64

    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(manifest["arrow_schema"])))


def _dictionary(store: DataStore, manifest: dict[str, Any], name: str, ref: str) -> pa.Array:
    meta = manifest["dictionaries"][name]
    data = store.objects.read_bytes(meta["object"], ref)
    return pa.ipc.open_stream(data).read_all().column(0).combine_chunks()


def snapshot_sketch(
    store: DataStore, manifest: dict[str, Any], limit: int = SAMPLE_ROWS
) -> SnapshotSketch:
    """The merged sketch of a frame version: kept per version digest (merged when the version
    was stored), else merged from its chunks' sketches (computing and keeping missing ones).

    Args:
        manifest: the version's manifest (kind "frame" or "array").
        limit: keep at most this many sampled rows (the ones of smallest priority).
    """
    ref = f"{manifest['name']}@v{manifest['version']}"
    if limit == SAMPLE_ROWS:
        kept = read_version_sketch(store, manifest)
        if kept is not None:
            kept.ref = ref
            return kept
    merged = _merge_chunks(store, manifest, limit)
    if limit == SAMPLE_ROWS:
        put_version_sketch(store, manifest, merged)
    return merged


def _version_path(store: DataStore, digest: str) -> Path:
    return store.root / "index" / "sketch" / "versions" / f"{digest}.arrow"


def _json_key(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def put_version_sketch(store: DataStore, manifest: dict[str, Any], sketch: SnapshotSketch) -> None:
    """Keep a version's merged sketch by its digest (a cache, like the chunks' sketches)."""
    if not all(_json_key(k) for counts in sketch.counts.values() for k in counts):
        return  # categories JSON cannot name exactly (dates, bytes): merged on each use
    meta = {
        "v": _VERSION,
        "rows": sketch.rows,
        "rate": sketch.rate,
        "columns": sketch.columns,
        "dtypes": sketch.dtypes,
        "categorical": sorted(sketch.categorical),
        "missing": sketch.missing,
        "counts": {k: [list(c), list(c.values())] for k, c in sketch.counts.items()},
    }
    table = sketch.sample.replace_schema_metadata({_META_KEY: json.dumps(meta)})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema, options=_IPC_WRITE) as writer:
        writer.write_table(table)
    with contextlib.suppress(OSError):
        write_atomic(_version_path(store, str(manifest["digest"])), sink.getvalue().to_pybytes())


def read_version_sketch(store: DataStore, manifest: dict[str, Any]) -> SnapshotSketch | None:
    try:
        data = _version_path(store, str(manifest["digest"])).read_bytes()
        table = pa.ipc.open_file(pa.py_buffer(data), options=_IPC_READ).read_all()
        meta = json.loads((table.schema.metadata or {})[_META_KEY])
    except (OSError, KeyError, ValueError, pa.ArrowException):
        return None
    if meta.get("v") != _VERSION:
        return None
    sample = table.replace_schema_metadata(None)
    columns = [str(c) for c in meta["columns"]]
    return SnapshotSketch(
        ref="",
        rows=int(meta["rows"]),
        columns=columns,
        dtypes=dict(meta["dtypes"]),
        types={c: sample.schema.field(c).type for c in columns},
        categorical=set(meta["categorical"]),
        sample=sample,
        rate=float(meta["rate"]),
        missing={k: int(v) for k, v in meta["missing"].items()},
        counts={
            k: dict(zip(values, (int(n) for n in freq), strict=True))
            for k, (values, freq) in meta["counts"].items()
        },
    )


def _chunk_sketches(
    store: DataStore, manifest: dict[str, Any], ref: str, rows: int, coded: set[str]
) -> list[ChunkSketch]:
    """The sketch of every chunk of a version (computed and cached when missing)."""
    from nb_mlops.core.data.frames import _load_chunk

    sketches: list[ChunkSketch] = []
    for chunk in manifest.get("chunks", []):
        found = read_sketch(store, chunk["d"])
        if found is None:
            part = _load_chunk(store, ref, chunk)
            found = chunk_sketch(part, chunk["d"], rows or part.num_rows, coded)
            put_sketch(store, chunk["d"], found)
        sketches.append(found)
    return sketches


def _merged_sample(
    sketches: list[ChunkSketch], schema: pa.Schema, coded: set[str], limit: int
) -> tuple[pa.Table, float]:
    """The chunks' samples as one, cut to `limit` rows by priority; (sample, sampling rate)."""
    bound = min((s.top_priority for s in sketches if not s.complete), default=1.0)
    if sketches:
        sample = pa.concat_tables([s.sample for s in sketches])
        if bound < 1.0:
            sample = sample.filter(pc.less_equal(sample.column(PRIORITY), bound))
    else:  # a version without chunks: an empty sample of the stored columns
        stored = {
            f.name: pa.array([], f.type.index_type if f.name in coded else f.type) for f in schema
        }
        sample = pa.table({**stored, PRIORITY: pa.array([], pa.float64())})
    if sample.num_rows > limit:
        priority = sample.column(PRIORITY).to_numpy()
        index = np.sort(np.argpartition(priority, limit - 1)[:limit])
        bound = float(priority[index].max())
        sample = sample.take(pa.array(index))
    return sample, 1.0 if bound >= 1.0 else bound


def _decoded_columns(
    store: DataStore, manifest: dict[str, Any], ref: str, sample: pa.Table, columns: list[str]
) -> tuple[pa.Table, dict[str, pa.DataType], dict[str, list[Any]]]:
    """The sample with dictionary codes decoded; (sample, column types, dictionary values)."""
    schema = _schema(manifest)
    coded = set(manifest.get("dictionaries", {}))
    types: dict[str, pa.DataType] = {}
    decoded: dict[str, pa.ChunkedArray] = {}
    values_of: dict[str, list[Any]] = {}
    for name in columns:
        t = schema.field(name).type
        if name in coded and pa.types.is_dictionary(t):
            values = _dictionary(store, manifest, name, ref)
            values_of[name] = values.to_pylist()
            codes = sample.column(name).combine_chunks() if sample.num_rows else None
            decoded[name] = (
                pa.chunked_array(
                    [pa.DictionaryArray.from_arrays(codes, values).dictionary_decode()]
                )
                if codes is not None
                else pa.chunked_array([], values.type)
            )
            types[name] = values.type
        else:
            decoded[name] = sample.column(name)
            types[name] = t
    # one contiguous piece per column: every statistic reads it whole
    merged = pa.table(decoded).combine_chunks() if columns else pa.table({})
    return merged, types, values_of


def _merged_counts(
    sketches: list[ChunkSketch], columns: list[str], values_of: dict[str, list[Any]]
) -> dict[str, dict[Any, int]]:
    """Value counts summed over chunks, for the columns every chunk counted."""
    counts: dict[str, dict[Any, int]] = {}
    for name in columns:
        if not sketches or not all(name in s.counts for s in sketches):
            continue
        total: dict[Any, int] = {}
        lookup = values_of.get(name)
        for s in sketches:
            values, freq = s.counts[name]
            for value, n in zip(values, freq, strict=True):
                key = lookup[int(value)] if lookup is not None else value
                total[key] = total.get(key, 0) + n
        counts[name] = total
    return counts


def _merge_chunks(store: DataStore, manifest: dict[str, Any], limit: int) -> SnapshotSketch:
    ref = f"{manifest['name']}@v{manifest['version']}"
    rows = int(manifest.get("rows") or 0)
    schema = _schema(manifest)
    coded = set(manifest.get("dictionaries", {}))
    sketches = _chunk_sketches(store, manifest, ref, rows, coded)
    rows = rows or sum(s.rows for s in sketches)
    sample, rate = _merged_sample(sketches, schema, coded, limit)
    columns = [str(c) for c in manifest.get("columns") or schema.names]
    columns = [c for c in columns if c in schema.names]
    merged_sample, types, values_of = _decoded_columns(store, manifest, ref, sample, columns)
    return SnapshotSketch(
        ref=ref,
        rows=rows,
        columns=columns,
        dtypes=dict(manifest.get("schema", {})),
        types=types,
        categorical={c for c in columns if c in coded},
        sample=merged_sample,
        rate=rate,
        missing={c: sum(s.missing.get(c, 0) for s in sketches) for c in columns},
        counts=_merged_counts(sketches, columns, values_of),
    )
