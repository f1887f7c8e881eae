"""DataFrame and ndarray snapshots: Arrow fingerprints, content-defined row chunks, row patches.

A frame becomes an Arrow table (pandas metadata kept aside, categorical columns split into codes plus
a stored dictionary). Its digest is blake3 over each column's Arrow buffers, normalised so the same
values give the same digest whatever the chunk layout. Rows get a cheap vectorised 64-bit hash
(numpy over the buffers); a row whose hash has its low bits zero ends a chunk (min/max sizes
bounded), so an append or a local edit changes only the chunks around it. `plan_table` (blocking)
digests the chunks and copies out the rows of those not stored yet; `write_plan` (background)
encodes each once, as an Arrow IPC file (lz4: restore is a decompression, not a Parquet decode),
indexed by its logical digest. The index entry keeps the chunk's mergeable statistics
(`profile.chunk_stats`), so a version that reuses stored chunks profiles only its new rows; a
sketch of its rows for drift statistics is kept beside it (`sketch`). A
changed chunk that pairs with one of the previous version (same boundary row, same length) is
stored as a patch of the rows that differ, so edits scattered over every chunk still cost only
the edited rows.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import blake3
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from nb_mlops.core.data.refs import DataStore
from nb_mlops.core.errors import DataError

__all__ = [
    "Plan",
    "Prepared",
    "load_table",
    "plan_table",
    "prepare",
    "row_hashes",
    "to_python",
    "write_plan",
]

ROW_COL = "__nb_mlops_row__"
_TARGET_CHUNK_BYTES = 8 << 20
# Chunks were Parquet before; both decode (by their magic bytes), new chunks are Arrow IPC.
_IPC_WRITE = pa.ipc.IpcWriteOptions(compression="lz4", use_threads=False)
_IPC_READ = pa.ipc.IpcReadOptions(use_threads=False)
# one thread per core: more threads decoding/hashing at once measured 3x slower on 2 cores
_WORKERS = max(2, min(4, os.cpu_count() or 2))
_BLOCK_ROWS = 1 << 20
_PARALLEL_DIGEST_BYTES = 64 << 20
# per-chunk statistics of chunks this process fingerprinted (their index entries may be pending)
_STATS_CACHE: dict[str, dict[str, Any]] = {}
_STATS_CACHE_MAX = 1 << 16
_THREADED_HASH_BYTES = 16 << 20
_K = np.array(
    [
        0x9E3779B97F4A7C15,
        0xC2B2AE3D27D4EB4F,
        0x165667B19E3779F9,
        0xD6E8FEB86659FD93,
        0xFF51AFD7ED558CCD,
        0xC4CEB9FE1A85EC53,
    ],
    dtype=np.uint64,
)


_KEEP = np.array([(1 << (8 * k)) - 1 for k in range(8)] + [2**64 - 1], dtype=np.uint64)
_SHIFT = np.array([0] + [8 * (8 - k) for k in range(1, 9)], dtype=np.uint64)


@dataclass
class Prepared:
    """A frame or array in the form that is hashed and stored.

    Attributes:
        kind: "frame" or "array".
        table: the stored columns (no schema metadata, categorical columns as their codes).
        schema: the full Arrow schema, with pandas metadata and dictionary types.
        dictionaries: column name → (dictionary values, ordered) for categorical columns.
        extra: kind-specific facts (array dtype and shape).
        source_table: the table with dictionary columns, for profiling.
    """

    kind: str
    table: pa.Table
    schema: pa.Schema
    dictionaries: dict[str, tuple[pa.Array, bool]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    source_table: pa.Table | None = None
    column_dtypes: dict[str, str] = field(default_factory=dict)


# --- conversion ---------------------------------------------------------------------------------


def prepare(obj: Any) -> Prepared:
    """Turn a pandas DataFrame or a numpy array into a `Prepared` table (DataError if unsupported)."""
    import pandas as pd

    if isinstance(obj, pd.DataFrame):
        return _prepare_frame(obj)
    if isinstance(obj, np.ndarray):
        return _prepare_array(obj)
    raise DataError(
        f"cannot snapshot a {type(obj).__name__}: pass a pandas DataFrame, a numpy array, "
        "or a path to a file or folder"
    )


def _prepare_frame(df: Any) -> Prepared:
    if not df.columns.is_unique:
        dupes = sorted({str(c) for c in df.columns[df.columns.duplicated()]})
        raise DataError(f"DataFrame has duplicate column names {dupes}; rename them to snapshot it")
    if df.columns.inferred_type not in ("string", "integer", "empty"):
        _check_column_names(df)
    try:
        with warnings.catch_warnings():  # the names were checked above
            warnings.filterwarnings("ignore", message=_MIXED_NAMES)
            # a frame without columns keeps its rows only as an index column
            table = pa.Table.from_pandas(df, preserve_index=True if df.shape[1] == 0 else None)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError) as exc:
        raise DataError(
            f"cannot convert the DataFrame to Arrow ({str(exc).splitlines()[0]}); "
            + _conversion_hint(str(exc))
        ) from exc
    dtypes = {str(col): str(dtype) for col, dtype in df.dtypes.items()}
    # Arrow gives strings back as pandas' string dtype: remember which columns were `object`
    extra = {
        "object_columns": [i for i, dtype in enumerate(df.dtypes) if dtype == np.dtype("O")],
        "object_index": [
            i
            for i in range(df.index.nlevels)
            if df.index.get_level_values(i).dtype == np.dtype("O")
        ],
    }
    freq = getattr(df.index, "freqstr", None)
    if freq:  # a DatetimeIndex's frequency: Arrow keeps the values, not the frequency
        extra["index_freq"] = freq
    return _split_dictionaries("frame", table, extra, dtypes)


_MIXED_NAMES = "The DataFrame has column names of mixed type"


def _check_column_names(df: Any) -> None:
    """Arrow names columns with strings and pandas' metadata restores most other names; those it
    would not restore as they were (`[0, "a"]` comes back `["0", "a"]`) are refused."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_MIXED_NAMES)
            back = pa.Table.from_pandas(df.head(0), preserve_index=None).to_pandas().columns
    except (pa.ArrowException, TypeError, ValueError):
        return  # the conversion of the whole frame says what is wrong
    if not back.equals(df.columns) or list(map(type, back)) != list(map(type, df.columns)):
        shown = ", ".join(repr(c) for c in df.columns[:4])
        raise DataError(
            f"DataFrame column names ({shown}{', ...' if len(df.columns) > 4 else ''}) would not "
            "come back as they are; make them all strings (df.columns = df.columns.astype(str))"
        )


def _conversion_hint(error: str) -> str:
    if "Sparse" in error:
        return "make sparse columns dense first (df.sparse.to_dense())"
    if "complex" in error:
        return "store complex columns as their real and imaginary parts"
    return "give mixed-type object columns one type (e.g. .astype(str))"


def _prepare_array(arr: np.ndarray) -> Prepared:
    if arr.dtype.hasobject or arr.dtype.fields is not None:
        raise DataError(
            f"cannot snapshot a numpy array of dtype {arr.dtype}: object and structured arrays "
            "are not supported; convert it to a DataFrame or a typed array"
        )
    flat = np.ascontiguousarray(arr).reshape(-1)
    if flat.dtype.byteorder == ">":
        flat = flat.astype(flat.dtype.newbyteorder("="))
    stored = flat.view(flat.real.dtype) if np.iscomplexobj(flat) else flat
    try:
        values = pa.array(stored)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise DataError(f"cannot snapshot a numpy array of dtype {arr.dtype}: {exc}") from exc
    table = pa.table({"values": values})
    extra = {"dtype": arr.dtype.str, "shape": list(arr.shape)}
    return _split_dictionaries("array", table, extra, {"values": str(arr.dtype)})


def _split_dictionaries(
    kind: str, table: pa.Table, extra: dict[str, Any], dtypes: dict[str, str]
) -> Prepared:
    dictionaries: dict[str, tuple[pa.Array, bool]] = {}
    columns = []
    if any(pa.types.is_dictionary(f.type) for f in table.schema):
        table = table.unify_dictionaries()
    for fld, col in zip(table.schema, table.columns, strict=True):
        if pa.types.is_dictionary(fld.type):
            chunks = col.chunks
            values = chunks[0].dictionary if chunks else pa.array([], fld.type.value_type)
            dictionaries[fld.name] = (values, bool(fld.type.ordered))
            col = pa.chunked_array([c.indices for c in chunks], type=fld.type.index_type)
        columns.append(col)
    stored = pa.Table.from_arrays(columns, names=table.column_names)
    return Prepared(kind, stored, table.schema, dictionaries, extra, table, dtypes)


# --- canonical digests ---------------------------------------------------------------------------


def _hasher(nbytes: int = 1 << 30) -> Any:
    # blake3's own threads pay off on large inputs only; chunk digests run in a pool already
    if nbytes < _THREADED_HASH_BYTES:
        return blake3.blake3()
    return blake3.blake3(max_threads=blake3.blake3.AUTO)


def _byte_width(t: pa.DataType) -> int | None:
    if pa.types.is_boolean(t):
        return None
    try:
        bits = t.bit_width
    except ValueError:
        return None
    return bits // 8 if bits and bits % 8 == 0 else None


def _fixed_bytes(piece: pa.Array, width: int) -> memoryview | bytes:
    buf = piece.buffers()[1]
    view = memoryview(buf)[piece.offset * width : (piece.offset + len(piece)) * width]
    if piece.null_count == 0:
        return view
    # values under nulls are undefined in Arrow: zero them so equal frames hash equal
    raw = np.frombuffer(view, dtype=np.uint8).reshape(len(piece), width).copy()
    raw[~_valid(piece)] = 0
    return raw.tobytes()


def _valid(piece: pa.Array) -> np.ndarray:
    if piece.null_count == 0:
        return np.ones(len(piece), dtype=bool)
    mask: np.ndarray = pc.is_valid(piece).to_numpy(zero_copy_only=False)
    return mask


def _offsets(piece: pa.Array) -> np.ndarray:
    dtype = (
        np.int64
        if pa.types.is_large_string(piece.type) or pa.types.is_large_binary(piece.type)
        else np.int32
    )
    offsets: np.ndarray = np.frombuffer(piece.buffers()[1], dtype=dtype)[
        piece.offset : piece.offset + len(piece) + 1
    ]
    return offsets


def _is_binary_like(t: pa.DataType) -> bool:
    return bool(
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
    )


def _lengths(piece: pa.Array) -> Iterator[np.ndarray]:
    """The value lengths of a binary-like array, `_BLOCK_ROWS` at a time."""
    offsets = _offsets(piece)
    for start in range(0, len(offsets) - 1, _BLOCK_ROWS):
        yield np.diff(offsets[start : start + _BLOCK_ROWS + 1])


_LENGTH_TYPES = [
    (np.iinfo(t).max, np.dtype(t).newbyteorder("<")) for t in (np.uint8, np.uint16, np.uint32)
]


def _length_type(longest: int) -> np.dtype[Any]:
    for top, dtype in _LENGTH_TYPES:
        if longest <= top:
            return dtype
    return np.dtype("<u8")


def column_digest(col: pa.ChunkedArray, threaded: bool = True) -> bytes:
    """blake3 of a column's values, independent of how the column is split into chunks.

    Args:
        threaded: let blake3 use its own threads on a large column.
    """
    t = col.type
    nbytes = col.nbytes if threaded else 0
    out = _hasher(nbytes)
    out.update(f"{t}|{len(col)}|".encode())
    pieces = [p for p in col.chunks if len(p)]
    if col.null_count:
        validity = _hasher(nbytes)
        for piece in pieces:
            validity.update(_valid(piece).view(np.uint8))
        out.update(validity.digest())
    width = _byte_width(t)
    if width is not None:
        for piece in pieces:
            out.update(_fixed_bytes(piece, width))
    elif pa.types.is_boolean(t):
        for piece in pieces:
            out.update(pc.fill_null(piece, False).to_numpy(zero_copy_only=False).view(np.uint8))
    elif _is_binary_like(t):
        lengths, data = _hasher(nbytes), _hasher(nbytes)
        # lengths in the narrowest unsigned type that holds the longest value (a function of the
        # values, not of the layout): most strings are short, and hashing 8 bytes per value of
        # mostly zero bytes was a quarter of a frame's fingerprint. Computed a block of rows at a
        # time: fresh whole-column temporaries cost more in page faults than the hashing.
        narrow = _length_type(
            max((int(size.max()) for piece in pieces for size in _lengths(piece)), default=0)
        )
        lengths.update(narrow.str.encode())
        for piece in pieces:
            for size in _lengths(piece):
                lengths.update(size.astype(narrow).view(np.uint8))
            offsets = _offsets(piece)
            data.update(
                memoryview(piece.buffers()[2])[offsets[0] : offsets[-1]]
                if len(offsets) > 1 and offsets[-1] > offsets[0]
                else b""
            )
        out.update(lengths.digest() + data.digest())
    else:
        # nested and rare types: hash the IPC form of one contiguous copy
        arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
        batch = pa.record_batch([arr], names=["x"])
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, batch.schema) as writer:
            writer.write_batch(batch)
        out.update(sink.getvalue())
    return bytes(out.digest())


def table_digest(table: pa.Table, start: int = 0, stop: int | None = None) -> str:
    """blake3 over the column digests of rows [start, stop) (names and types included)."""
    stop = table.num_rows if stop is None else stop
    part = table.slice(start, stop - start) if (start, stop) != (0, table.num_rows) else table
    if part.nbytes >= _PARALLEL_DIGEST_BYTES and part.num_columns > 1:
        # one column per thread, each hashed single-threaded: blake3's own threads gained 1.3x
        # on 2 cores, columns side by side nearly 2x (numpy and blake3 release the GIL)
        with ThreadPoolExecutor(_WORKERS) as pool:
            digests = list(pool.map(lambda c: column_digest(c, threaded=False), part.columns))
    else:
        threaded = part.nbytes >= _THREADED_HASH_BYTES
        digests = [column_digest(col, threaded) for col in part.columns]
    out = _hasher()
    for name, digest in zip(part.column_names, digests, strict=True):
        out.update(name.encode("utf-8", "surrogatepass") + b"\0")
        out.update(digest)
    return str(out.hexdigest())


def prepared_digest(prep: Prepared) -> str:
    """The snapshot digest: the full schema (pandas metadata included), dictionaries and values."""
    out = _hasher()
    out.update(prep.schema.serialize())
    for name, (values, ordered) in sorted(prep.dictionaries.items()):
        out.update(f"{name}|{ordered}|".encode())
        out.update(column_digest(pa.chunked_array([values])))
    out.update(json.dumps(prep.extra, sort_keys=True).encode())
    out.update(table_digest(prep.table).encode())
    return str(out.hexdigest())


# --- row hashes and chunk boundaries -------------------------------------------------------------


def _column_u64(col: pa.ChunkedArray) -> np.ndarray | None:
    """A cheap 64-bit value per row (for chunk boundaries, not for identity)."""
    t = col.type
    width = _byte_width(t)
    if width in (1, 2, 4, 8):
        parts = []
        for piece in col.chunks:
            values = np.frombuffer(_fixed_bytes(piece, width), dtype=f"<u{width}")
            parts.append(values)
        flat = np.concatenate(parts) if len(parts) != 1 else parts[0]
        out: np.ndarray = flat.astype(np.uint64, copy=width != 8).view(np.uint64)
        return out
    if pa.types.is_boolean(t):
        flags: np.ndarray = pc.fill_null(col, False).to_numpy().astype(np.uint64)
        return flags
    if _is_binary_like(t):
        # one contiguous array: pieces of a chunked column share (and would each copy) one buffer
        return _string_u64(col.combine_chunks() if col.num_chunks != 1 else col.chunk(0))
    return None


def _string_u64(piece: pa.Array) -> np.ndarray:
    """Length, first 8 and last 8 bytes of each string, from the Arrow buffers (no Python loop)."""
    offsets = _offsets(piece).astype(np.int64)
    starts, ends = offsets[:-1], offsets[1:]
    lengths = (ends - starts).astype(np.uint64)
    data = piece.buffers()[2]
    body = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, np.uint8)
    # 8 zero bytes on each side so every window below stays inside the buffer
    raw = np.concatenate([np.zeros(8, np.uint8), body, np.zeros(8, np.uint8)])
    # an 8-byte little-endian window at every byte offset, without copying (stride 1)
    windows = np.ndarray((len(raw) - 7,), dtype="<u8", buffer=raw, strides=(1,))
    short = np.minimum(lengths, np.uint64(8)).astype(np.intp)
    keep = _KEEP[short]  # lookup tables: numpy shifts by 64 are undefined
    first = windows[starts + 8] & keep  # bytes beyond the string's end are masked off
    last = (windows[ends] >> _SHIFT[short]) & keep  # bytes before its start too
    mixed: np.ndarray = (first * _K[4]) ^ (last * _K[5]) ^ lengths
    return mixed


def boundary_columns(table: pa.Table) -> list[str]:
    """The columns whose row values place chunk boundaries: up to three fixed-width ones (cheapest
    to hash), strings only when there are fewer than two of those. Any choice is correct (the choice
    is kept in the manifest and reused by later versions); this one keeps the fingerprint of a
    10M-row frame well under a second."""
    fixed = [f.name for f in table.schema if _byte_width(f.type) in (1, 2, 4, 8)]
    strings = [f.name for f in table.schema if _is_binary_like(f.type)]
    chosen = fixed[:3]
    if len(chosen) < 2:
        chosen += strings[: 2 - len(chosen)]
    return chosen or table.column_names[:1]


def row_hashes(table: pa.Table, columns: list[str] | None = None) -> np.ndarray:
    """One uint64 per row mixing the given columns (default: all; splitmix64 finaliser)."""
    n = table.num_rows
    h = np.zeros(n, dtype=np.uint64)
    selected = (
        table if columns is None else table.select([c for c in columns if c in table.column_names])
    )
    values = [(index, _column_u64(col)) for index, col in enumerate(selected.columns)]
    starts = list(range(0, n, _BLOCK_ROWS))
    if len(starts) > 2:
        # numpy releases the GIL: blocks side by side on every core
        step = -(-len(starts) // _WORKERS)
        with ThreadPoolExecutor(_WORKERS) as pool:
            list(
                pool.map(
                    lambda i: _mix_rows(h, values, starts[i : i + step]),
                    range(0, len(starts), step),
                )
            )
    else:
        _mix_rows(h, values, starts)
    return h


def _mix_rows(
    h: np.ndarray, values: list[tuple[int, np.ndarray | None]], starts: list[int]
) -> None:
    # in place, a block of rows at a time: whole-column temporaries cost more in fresh pages
    # than in arithmetic
    tmp = np.empty(min(len(h), _BLOCK_ROWS), dtype=np.uint64)
    for start in starts:
        out = h[start : start + _BLOCK_ROWS]
        t = tmp[: len(out)]
        for index, column in values:
            if column is None:
                continue
            np.multiply(column[start : start + _BLOCK_ROWS], _K[index % 4], out=t)
            t += np.uint64(index + 1)
            out ^= t
            out *= _K[(index + 1) % 4]
            np.right_shift(out, np.uint64(29), out=t)
            out ^= t
        for shift, factor in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
            np.right_shift(out, np.uint64(shift), out=t)
            out ^= t
            out *= np.uint64(factor)
        np.right_shift(out, np.uint64(31), out=t)
        out ^= t


def choose_avg_rows(table: pa.Table) -> int:
    """Average rows per chunk: a power of two near 1/256 of the table, between 1/8 of
    `_TARGET_CHUNK_BYTES` and all of it (1–8 MiB): an append rewrites one tail chunk, so chunks
    small against the table keep its cost small, and not too small to stay cheap to store."""
    per_row = max(1.0, table.nbytes / max(1, table.num_rows))
    chunk_bytes = min(_TARGET_CHUNK_BYTES, max(_TARGET_CHUNK_BYTES / 8, table.nbytes / 256))
    rows = chunk_bytes / per_row
    return int(min(1 << 20, max(1 << 10, 1 << int(round(np.log2(rows))))))


def chunk_bounds(h: np.ndarray, avg: int) -> list[tuple[int, int]]:
    """Cut after every row whose hash has its low log2(avg) bits zero, keeping chunks within
    [avg/4, 4*avg] rows."""
    n = len(h)
    low, high = max(1, avg // 4), avg * 4
    candidates = np.flatnonzero((h & np.uint64(avg - 1)) == 0) + 1
    cuts: list[int] = []
    last = 0
    for cut in candidates.tolist():
        while cut - last > high:
            last += high
            cuts.append(last)
        if cut - last >= low:
            cuts.append(cut)
            last = cut
    while n - last > high:
        last += high
        cuts.append(last)
    if last < n or not cuts:
        cuts.append(n)
    bounds, start = [], 0
    for cut in cuts:
        bounds.append((start, cut))
        start = cut
    return bounds


# --- chunk storage -------------------------------------------------------------------------------


def _encode(table: pa.Table) -> pa.Buffer:
    table = table.replace_schema_metadata(None)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema, options=_IPC_WRITE) as writer:
        writer.write_table(table)
    return sink.getvalue()


def _decode(data: bytes, ref: str, oid: str) -> pa.Table:
    try:
        if data[:6] == b"ARROW1":
            return pa.ipc.open_file(pa.py_buffer(data), options=_IPC_READ).read_all()
        return pq.read_table(pa.BufferReader(data), use_threads=False)  # chunks stored before
    except (pa.ArrowException, OSError) as exc:  # pragma: no cover - bytes were hash-verified
        raise DataError(f"object {oid} of snapshot {ref} cannot be decoded: {exc}") from exc


def _read_chunk_object(store: DataStore, oid: str, ref: str) -> pa.Table:
    return _decode(store.objects.read_bytes(oid, ref), ref, oid)


def _changed_rows(old: pa.Table, new: pa.Table) -> np.ndarray | None:
    """Positions where `new` differs from `old` (same length and schema), None if not comparable."""
    same_types = old.schema.types == new.schema.types and old.column_names == new.column_names
    if not same_types or old.num_rows != new.num_rows:
        return None
    changed = np.zeros(new.num_rows, dtype=bool)
    for a, b in zip(old.columns, new.columns, strict=True):
        try:
            equal = pc.equal(a, b)
        except (pa.ArrowNotImplementedError, pa.ArrowInvalid, pa.ArrowTypeError):
            return None
        same = pc.fill_null(equal, False)
        both_null = pc.and_(pc.is_null(a), pc.is_null(b))
        same = pc.or_(same, both_null)
        if pa.types.is_floating(a.type):
            same = pc.or_(same, pc.fill_null(pc.and_(pc.is_nan(a), pc.is_nan(b)), False))
        changed |= ~same.to_numpy(zero_copy_only=False).astype(bool)
    return changed


class _Writer:
    """Stores the chunks of one snapshot, reusing stored chunks and patching paired ones."""

    def __init__(self, store: DataStore, ref: str, previous: dict[str, Any] | None) -> None:
        self.store = store
        self.ref = ref
        self.added = 0
        self.pairs: dict[tuple[str, int], dict[str, Any]] = {}
        if previous is not None:
            for chunk in previous.get("chunks", []):
                self.pairs.setdefault((chunk["key"], chunk["rows"]), chunk)
            self.previous_ref = f"{previous['name']}@v{previous['version']}"

    def store_chunk(
        self, digest: str, part: pa.Table | None, key: str, stats: dict[str, Any] | None
    ) -> dict[str, Any]:
        entry = self.store.chunk_entry(digest)
        if entry is None:
            if part is None:
                raise DataError(
                    f"chunk {digest} of {self.ref} was expected from an earlier snapshot that was "
                    "not stored; take the snapshot again"
                )
            entry = self._patch(part, key) or self._full(part)
            self.store.put_chunk_entry(digest, {**entry, "stats": stats})
        elif stats is not None and entry.get("stats") is None:
            self.store.put_chunk_entry(digest, {**entry, "stats": stats})
        # the statistics live in the index only: manifests stay small
        return {k: v for k, v in entry.items() if k != "stats"}

    def _full(self, part: pa.Table) -> dict[str, Any]:
        oid, added = self.store.objects.put_bytes(_encode(part), what=f"a chunk of {self.ref}")
        self.added += added
        return {"object": oid}

    def _patch(self, part: pa.Table, key: str) -> dict[str, Any] | None:
        old = self.pairs.get((key, part.num_rows))
        if old is None:
            return None
        base_object = str(old.get("base_object") or old["object"])
        try:
            base = _read_chunk_object(self.store, base_object, self.previous_ref)
        except DataError:
            return None  # unreadable base: store the chunk whole
        changed = _changed_rows(base, part)
        if changed is None or changed.mean() > 0.5:
            return None
        positions = np.flatnonzero(changed).astype(np.int32)
        rows = part.take(pa.array(positions)).append_column(ROW_COL, pa.array(positions))
        oid, added = self.store.objects.put_bytes(_encode(rows), what=f"a patch of {self.ref}")
        self.added += added
        return {"base_object": base_object, "patch": oid}


def _detach(part: pa.Table) -> pa.Table:
    """A copy of the fixed-width columns of `part` (Arrow shares them with the caller's numpy
    memory, which the caller may change while the chunk waits to be written); other columns are
    Arrow-owned and immutable already."""
    columns = []
    for col in part.columns:
        if _byte_width(col.type) is not None:
            empty = pa.array([], col.type)
            col = pa.chunked_array([pa.concat_arrays([p, empty]) for p in col.chunks], col.type)
        columns.append(col)
    return pa.Table.from_arrays(columns, names=part.column_names)


@dataclass
class Plan:
    """What a frame snapshot still has to store, fixed while the caller waits.

    Attributes:
        fields: manifest fields known from the fingerprint (digest, schema, chunking, profile...).
        chunks: (logical digest, rows, boundary key, detached rows or None when already stored).
        dictionaries: categorical column → (values, ordered).
        stats: logical digest → the chunk's `profile.chunk_stats` (kept in the chunk index).
        sketches: logical digest → the sketch of a stored chunk that had none yet (new chunks
            are sketched while they are written).
    """

    fields: dict[str, Any]
    chunks: list[tuple[str, int, str, pa.Table | None]]
    dictionaries: dict[str, tuple[pa.Array, bool]]
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    sketches: dict[str, Any] = field(default_factory=dict)

    @property
    def chunk_digests(self) -> set[str]:
        return {d for d, _, _, part in self.chunks if part is not None}


def plan_table(
    store: DataStore,
    prep: Prepared,
    digest: str,
    chunking: dict[str, Any] | None,
) -> Plan:
    """Fingerprint the chunks of `prep` and capture the rows not stored yet (the blocking part).

    Args:
        chunking: the previous version's chunk parameters (reused so unchanged rows chunk alike).
    """
    from nb_mlops.core.data.profile import chunk_stats, finish_profile, merge_stats, sample_profile
    from nb_mlops.core.data.sketch import chunk_sketch, has_sketch

    table = prep.table
    avg = int(chunking["avg"]) if chunking else choose_avg_rows(table)
    keyed = chunking.get("columns") if chunking else None
    if not keyed or not set(keyed) <= set(table.column_names):
        keyed = boundary_columns(table)
    source = prep.source_table or table
    stats: dict[str, dict[str, Any]] = {}
    sketches: dict[str, Any] = {}
    with ThreadPoolExecutor(_WORKERS) as pool:
        profile_job = pool.submit(sample_profile, source)
        hashes = row_hashes(table, keyed)
        bounds = chunk_bounds(hashes, avg) if table.num_rows else [(0, 0)]

        def fingerprint(bound: tuple[int, int]) -> tuple[str, int, str, pa.Table | None]:
            start, stop = bound
            part = table.slice(start, stop - start)
            chunk = table_digest(part)
            key = f"{int(hashes[stop - 1]):016x}" if stop else ""
            entry = store.chunk_entry(chunk)
            known = (entry or {}).get("stats") or _STATS_CACHE.get(chunk)
            stats[chunk] = known if known is not None else chunk_stats(part)
            if entry is not None and not has_sketch(store, chunk):  # stored before sketches
                sketches[chunk] = chunk_sketch(part, chunk, table.num_rows, prep.dictionaries)
            # pending chunks are captured too: if that earlier write fails, this one still can
            return chunk, stop - start, key, None if entry is not None else _detach(part)

        chunks = list(pool.map(fingerprint, bounds))
        profile = finish_profile(
            source, profile_job.result(), merge_stats(stats[c[0]] for c in chunks)
        )
    if len(_STATS_CACHE) + len(stats) > _STATS_CACHE_MAX:
        _STATS_CACHE.clear()
    _STATS_CACHE.update(stats)
    fields = {
        "kind": prep.kind,
        "digest": digest,
        "rows": table.num_rows if prep.kind == "frame" else None,
        "columns": list(prep.column_dtypes),
        "schema": prep.column_dtypes,
        "arrow_schema": base64.b64encode(prep.schema.serialize().to_pybytes()).decode(),
        "extra": prep.extra,
        "chunking": {"avg": avg, "columns": keyed},
        "profile": profile,
    }
    return Plan(fields, chunks, dict(prep.dictionaries), stats, sketches)


def write_plan(
    store: DataStore, plan: Plan, ref: str, previous: dict[str, Any] | None
) -> dict[str, Any]:
    """Store what `plan` captured (durably) and return the complete manifest fields.

    Args:
        ref: `NAME@vN` of the version, for messages.
        previous: the latest stored manifest of the name (its chunks may serve as patch bases).
    """
    from nb_mlops.core.data.sketch import chunk_sketch, put_sketch, snapshot_sketch

    if previous is not None and previous.get("kind") != plan.fields["kind"]:
        previous = None
    writer = _Writer(store, ref, previous)
    total = plan.fields.get("rows") or sum(rows for _, rows, _, _ in plan.chunks)

    def put(c: tuple[str, int, str, pa.Table | None]) -> dict[str, Any]:
        entry = writer.store_chunk(c[0], c[3], c[2], plan.stats.get(c[0]))
        if c[3] is not None:
            put_sketch(store, c[0], chunk_sketch(c[3], c[0], total, plan.dictionaries))
        return entry

    for digest, sketch in plan.sketches.items():
        put_sketch(store, digest, sketch)
    with ThreadPoolExecutor(_WORKERS) as pool:
        entries = list(pool.map(put, plan.chunks))
    chunks = [
        {"d": d, "rows": rows, "key": key, **entry}
        for (d, rows, key, _), entry in zip(plan.chunks, entries, strict=True)
    ]
    dictionaries = {}
    for col, (values, ordered) in plan.dictionaries.items():
        oid, added = store.objects.put_bytes(_ipc(values), what=f"the categories of {col}")
        writer.added += added
        dictionaries[col] = {"object": oid, "ordered": ordered}
    size = 0
    for chunk in chunks:
        for key in ("object", "base_object", "patch"):
            if chunk.get(key):
                size += store.objects.size(str(chunk[key]))
    stored = {
        **plan.fields,
        "dictionaries": dictionaries,
        "chunks": chunks,
        "size": size,
        "bytes_added": writer.added,
    }
    name, _, version = ref.rpartition("@v")
    with contextlib.suppress(DataError, pa.ArrowException, OSError, ValueError, KeyError):
        # the version's merged sketch, kept for drift checks (a cache: never fails the snapshot)
        snapshot_sketch(store, {**stored, "name": name, "version": int(version)})
    return stored


def _ipc(values: pa.Array) -> bytes:
    batch = pa.record_batch([values], names=["values"])
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return sink.getvalue()


# --- restore -------------------------------------------------------------------------------------


def _load_chunk(store: DataStore, ref: str, chunk: dict[str, Any]) -> pa.Table:
    if "object" in chunk:
        return _read_chunk_object(store, chunk["object"], ref)
    base = _read_chunk_object(store, chunk["base_object"], ref)
    patch = _read_chunk_object(store, chunk["patch"], ref)
    positions = patch.column(ROW_COL).to_numpy()
    patch = patch.drop_columns([ROW_COL])
    index = np.arange(base.num_rows, dtype=np.int64)
    index[positions] = base.num_rows + np.arange(len(positions))
    return pa.concat_tables([base, patch.cast(base.schema)]).take(pa.array(index))


def load_table(store: DataStore, manifest: dict[str, Any]) -> pa.Table:
    """The full Arrow table of a frame/array version (every object hash-verified)."""
    ref = f"{manifest['name']}@v{manifest['version']}"
    schema = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(manifest["arrow_schema"])))
    with ThreadPoolExecutor(_WORKERS) as pool:
        parts = list(pool.map(lambda c: _load_chunk(store, ref, c), manifest["chunks"]))
    stored = pa.concat_tables(parts) if parts else None
    columns = []
    for fld in schema:
        col = stored.column(fld.name) if stored is not None else pa.chunked_array([], fld.type)
        meta = manifest.get("dictionaries", {}).get(fld.name)
        if meta is not None:
            data = store.objects.read_bytes(meta["object"], ref)
            values = pa.ipc.open_stream(data).read_all().column(0).combine_chunks()
            indices = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
            col = pa.chunked_array(
                [pa.DictionaryArray.from_arrays(indices, values, ordered=meta["ordered"])]
            )
        elif col.type != fld.type:
            col = col.cast(fld.type)
        columns.append(col)
    return pa.Table.from_arrays(columns, schema=schema)


def to_python(manifest: dict[str, Any], table: pa.Table) -> Any:
    """The DataFrame or ndarray a version was taken from."""
    if manifest["kind"] == "frame":
        import pandas as pd

        # one block per column: no consolidation copy of all numeric columns into a 2-D block
        frame = table.to_pandas(split_blocks=True)
        extra = manifest.get("extra", {})
        for i in extra.get("object_columns", []):
            frame.isetitem(
                i,
                pd.Series(
                    table.column(i).to_numpy(zero_copy_only=False), index=frame.index, dtype=object
                ),
            )
        levels = extra.get("object_index", [])
        if levels:
            index = frame.index
            if index.nlevels == 1:
                frame.index = index.astype(object)
            else:
                frame.index = index.set_levels(
                    [index.levels[i].astype(object) for i in levels], level=levels
                )
        if extra.get("index_freq"):
            frame.index.freq = extra["index_freq"]
        return frame
    extra = manifest["extra"]
    dtype = np.dtype(extra["dtype"])
    values = table.column("values")
    flat = values.to_numpy() if values.null_count == 0 else values.to_numpy(zero_copy_only=False)
    if dtype.kind == "c":
        flat = np.ascontiguousarray(flat).view(dtype)
    return np.asarray(flat).astype(dtype, copy=False).reshape(extra["shape"])
