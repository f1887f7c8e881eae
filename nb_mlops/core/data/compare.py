"""What changed between two data versions: columns, rows, per-column statistics, files.

Rows are compared chunk by chunk: chunks with the same digest are equal without being read; a
changed chunk that pairs with one of the other version (same boundary row, same length) is compared
row by row exactly (rows changed); the remaining rows are matched as a multiset of 64-bit row
hashes (rows added / removed; a moved row counts as unchanged).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from nb_mlops.core.data.refs import DataStore

__all__ = ["diff_manifests"]

_STATS = ("nulls", "min", "max", "mean", "std")


def _ref(m: dict[str, Any]) -> str:
    return f"{m['name']}@v{m['version']}"


def _stat_deltas(pa_: dict[str, Any], pb: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    ca, cb = pa_.get("columns", {}), pb.get("columns", {})
    for col in ca.keys() & cb.keys():
        deltas = {}
        for stat in _STATS:
            a, b = ca[col].get(stat), cb[col].get(stat)
            if a is None and b is None:
                continue
            entry: dict[str, Any] = {"a": a, "b": b}
            if isinstance(a, int | float) and isinstance(b, int | float):
                entry["delta"] = b - a
            if a != b:
                deltas[stat] = entry
        if deltas:
            out[col] = deltas
    return dict(sorted(out.items()))


def _multiset_diff(ha: np.ndarray, hb: np.ndarray) -> tuple[int, int]:
    """(rows only in b, rows only in a) by row hash, counting duplicates."""
    ca, cb = Counter(ha.tolist()), Counter(hb.tolist())
    return sum((cb - ca).values()), sum((ca - cb).values())


def _rows_by_common_columns(
    store: DataStore, ma: dict[str, Any], mb: dict[str, Any]
) -> dict[str, Any]:
    """Rows added/removed when the layouts differ: hashes of the columns both share."""
    from nb_mlops.core.data.frames import load_table, row_hashes

    ta, tb = load_table(store, ma), load_table(store, mb)
    common = [
        c
        for c in ta.column_names
        if c in tb.column_names and ta.schema.field(c).type == tb.schema.field(c).type
    ]
    added, removed = _multiset_diff(row_hashes(ta.select(common)), row_hashes(tb.select(common)))
    return {
        "rows_added": added,
        "rows_removed": removed,
        "rows_changed": None,
        "note": "schemas differ: rows compared on the common columns; an edited row "
        "counts as one removed and one added",
    }


def _unshared(chunks: list[dict[str, Any]], shared: Counter[str]) -> list[dict[str, Any]]:
    """The chunks left once the ones both sides hold (as many times as both do) are taken out."""
    budget = Counter(shared)
    rest = []
    for chunk in chunks:
        if budget[chunk["d"]]:
            budget[chunk["d"]] -= 1
        else:
            rest.append(chunk)
    return rest


def _pair_chunks(
    store: DataStore, ma: dict[str, Any], mb: dict[str, Any]
) -> tuple[int, list[dict[str, Any]], list[dict[str, Any]]]:
    """Rows changed in chunks paired by (key, rows); (changed, unpaired of a, unpaired of b)."""
    from nb_mlops.core.data.frames import _changed_rows, _load_chunk

    shared = Counter(c["d"] for c in ma["chunks"]) & Counter(c["d"] for c in mb["chunks"])
    rest_a, rest_b = _unshared(ma["chunks"], shared), _unshared(mb["chunks"], shared)
    changed = 0
    by_key = {(c["key"], c["rows"]): c for c in rest_a}
    unpaired_b = []
    for chunk in rest_b:
        other = by_key.pop((chunk["key"], chunk["rows"]), None)
        if other is None:
            unpaired_b.append(chunk)
            continue
        old, new = _load_chunk(store, _ref(ma), other), _load_chunk(store, _ref(mb), chunk)
        rows = _changed_rows(old, new)
        if rows is None:
            by_key[("unpaired", id(other))] = other
            unpaired_b.append(chunk)
        else:
            changed += int(rows.sum())
    return changed, list(by_key.values()), unpaired_b


def _frame_rows(store: DataStore, ma: dict[str, Any], mb: dict[str, Any]) -> dict[str, Any]:
    from nb_mlops.core.data.frames import _changed_rows, _load_chunk, row_hashes

    same_layout = ma.get("arrow_schema") == mb.get("arrow_schema") or (
        ma.get("schema") == mb.get("schema") and ma.get("dictionaries") == mb.get("dictionaries")
    )
    if not same_layout:
        return _rows_by_common_columns(store, ma, mb)
    changed, unpaired_a, unpaired_b = _pair_chunks(store, ma, mb)

    def hashes(manifest: dict[str, Any], chunks: list[dict[str, Any]]) -> np.ndarray:
        parts = [row_hashes(_load_chunk(store, _ref(manifest), c)) for c in chunks]
        return np.concatenate(parts) if parts else np.zeros(0, np.uint64)

    rows_a = sum(c["rows"] for c in unpaired_a)
    if unpaired_a and rows_a == sum(c["rows"] for c in unpaired_b):
        # same number of rows left on both sides: edits that moved boundaries; compare in place
        import pyarrow as pa

        old = pa.concat_tables([_load_chunk(store, _ref(ma), c) for c in unpaired_a])
        new = pa.concat_tables([_load_chunk(store, _ref(mb), c) for c in unpaired_b])
        rows = _changed_rows(old, new)
        if rows is not None:
            return {"rows_added": 0, "rows_removed": 0, "rows_changed": changed + int(rows.sum())}
    added, removed = _multiset_diff(hashes(ma, unpaired_a), hashes(mb, unpaired_b))
    return {"rows_added": added, "rows_removed": removed, "rows_changed": changed}


def diff_manifests(store: DataStore, ma: dict[str, Any], mb: dict[str, Any]) -> dict[str, Any]:
    """The differences from version `ma` to version `mb` as a JSON-ready dict."""
    out: dict[str, Any] = {
        "a": _ref(ma),
        "b": _ref(mb),
        "kind": [ma["kind"], mb["kind"]] if ma["kind"] != mb["kind"] else ma["kind"],
        "same_content": ma["digest"] == mb["digest"],
        "size": {"a": ma.get("size"), "b": mb.get("size")},
    }
    if ma["kind"] != mb["kind"]:
        return out
    if ma["kind"] in ("frame", "array"):
        sa, sb = ma.get("schema", {}), mb.get("schema", {})
        out["columns"] = {
            "added": [c for c in sb if c not in sa],
            "removed": [c for c in sa if c not in sb],
            "retyped": [[c, sa[c], sb[c]] for c in sa if c in sb and sa[c] != sb[c]],
        }
        ra = ma["profile"].get("rows", 0)
        rb = mb["profile"].get("rows", 0)
        out["rows"] = {"a": ra, "b": rb, "delta": rb - ra}
        if out["same_content"]:
            out.update(rows_added=0, rows_removed=0, rows_changed=0)
        else:
            out.update(_frame_rows(store, ma, mb))
        out["stats"] = _stat_deltas(ma.get("profile", {}), mb.get("profile", {}))
    elif ma["kind"] == "dir":
        fa = {rel: oid for rel, oid, *_ in ma["files"]}
        fb = {rel: oid for rel, oid, *_ in mb["files"]}
        out["files"] = {
            "added": sorted(fb.keys() - fa.keys()),
            "removed": sorted(fa.keys() - fb.keys()),
            "changed": sorted(k for k in fa.keys() & fb.keys() if fa[k] != fb[k]),
        }
    return out
