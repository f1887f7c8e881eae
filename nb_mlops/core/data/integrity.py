"""Checking and cleaning the data store: `verify` re-hashes objects, `gc` removes unreferenced ones.

`gc` holds the `data-gc` lock exclusively, which waits for every snapshot in progress (they hold it
shared), so objects written by a snapshot whose manifest is not yet written are never removed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from nb_mlops.core.data.names import parse_ref
from nb_mlops.core.data.refs import DataStore

__all__ = ["referenced_objects", "verify_store", "gc_store"]


def manifest_objects(manifest: dict[str, Any]) -> Iterator[tuple[str, str | None]]:
    """(object id, workspace path or None) for every object a manifest needs."""
    kind = manifest.get("kind")
    if kind == "file":
        yield manifest["object"], manifest.get("path")
    elif kind == "dir":
        for rel, oid, *_ in manifest["files"]:
            yield oid, rel
    else:
        for chunk in manifest.get("chunks", []):
            for key in ("object", "base_object", "patch"):
                if chunk.get(key):
                    yield chunk[key], None
        for meta in manifest.get("dictionaries", {}).values():
            yield meta["object"], None


def referenced_objects(store: DataStore) -> set[str]:
    return {oid for m in store.manifests() for oid, _ in manifest_objects(m)}


def verify_store(
    store: DataStore, name: str | None = None, everything: bool = False
) -> list[dict[str, Any]]:
    """Re-hash the objects of the selected versions; return one problem dict per bad object.

    Args:
        name: `NAME` (every version) or `NAME@vN`; None selects the latest version of every name.
        everything: every version of every name, and also unreferenced objects.
    """
    if name is not None:
        base, version = parse_ref(name)
        versions = [version] if version is not None else store.versions(base)
        manifests = [store.manifest(base, v) for v in versions] or [store.manifest(base)]
    elif everything:
        manifests = list(store.manifests())
    else:
        manifests = [store.manifest(n) for n in store.names()]
    checked: dict[str, str | None] = {}
    problems: list[dict[str, Any]] = []
    for manifest in manifests:
        ref = f"{manifest['name']}@v{manifest['version']}"
        for oid, path in manifest_objects(manifest):
            if oid not in checked:
                checked[oid] = store.objects.check(oid)
            if checked[oid]:
                problems.append(
                    {"snapshot": ref, "object": oid, "problem": checked[oid], "path": path}
                )
    if everything:
        for oid in store.objects.ids():
            if oid not in checked:
                checked[oid] = store.objects.check(oid)
                if checked[oid]:
                    problems.append(
                        {"snapshot": None, "object": oid, "problem": checked[oid], "path": None}
                    )
    return problems


def gc_store(store: DataStore, dry_run: bool = False) -> dict[str, int]:
    """Remove objects no manifest references, stale temp files and dead index entries."""
    removed = freed = 0
    with store.gc_guard(exclusive=True), store.write_lock():
        keep = referenced_objects(store)
        for oid in list(store.objects.ids()):
            if oid in keep:
                continue
            removed += 1
            freed += store.objects.size(oid) if dry_run else store.objects.delete(oid)
        if not dry_run:
            for tmp in store.objects.tmp.glob("*.tmp"):
                with contextlib.suppress(OSError):
                    freed += tmp.stat().st_size
                    tmp.unlink()
            for digest in list(store.chunk_digests()):
                if store.chunk_entry(digest) is None:
                    store.drop_chunk_entry(digest)
            from nb_mlops.core.data.sketch import prune_sketches

            prune_sketches(store)
    return {"removed": removed, "bytes_freed": freed, "kept": len(keep)}
