"""File and folder snapshots: a stat cache in front of the object store, and a safe restore.

Behaviour on hostile paths, as tested:
- a source path may be anywhere readable (absolute, `../x`): it is read, never modified;
- inside a folder, a symlink to a path inside the folder is stored as a link; one pointing outside
  the folder is refused (its target is never copied in silently); fifos, sockets, devices are refused;
- file names are kept byte for byte (non-UTF-8 names round-trip via surrogate escapes);
- a restore writes only below its target folder: a manifest entry that is absolute or climbs out
  with `..` is refused, and an existing different file is overwritten only with `force`.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from typing import Any

from nb_mlops.core.data.objects import MissingObject, hash_bytes, hash_file
from nb_mlops.core.data.refs import DataStore
from nb_mlops.core.errors import DataError, IntegrityError

__all__ = ["snapshot_file", "snapshot_folder", "restore_file", "restore_folder", "safe_join"]

# an mtime this close to "now" may still be followed by writes with the same timestamp tick,
# so such an entry is not trusted by the stat cache (git's "racy clean" rule)
_RACY_NS = 100_000_000


def _stat_key(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def _trusted(st: os.stat_result, hashed_at_ns: int) -> bool:
    return hashed_at_ns - st.st_mtime_ns > _RACY_NS and hashed_at_ns - st.st_ctime_ns > _RACY_NS


def display_path(store: DataStore, path: Path) -> str:
    """The path relative to the project root when inside it, else absolute."""
    try:
        return str(path.relative_to(store.cfg.root))
    except ValueError:
        return str(path)


def snapshot_file(store: DataStore, src: Path) -> tuple[dict[str, Any], Path | None]:
    """Copy and hash one file; return the manifest fields (kind, digest, object, size) and the
    staged temp copy that `ObjectStore.finish` makes durable (None when stored already)."""
    from nb_mlops.core.data import pending

    src = Path(os.path.abspath(src))
    try:
        st = src.stat()
    except OSError as exc:
        raise DataError(f"cannot read {src}: {exc.strerror}") from exc
    key = f"file:{src}"
    cached = store.stat_cache(key)
    oid = cached.get("object")
    staged = None
    if (
        oid
        and cached.get("stat") == _stat_key(st)
        and (store.objects.exists(oid) or pending.will_exist(str(store.root), oid=oid))
    ):
        size = st.st_size
    else:
        started = time.time_ns()
        oid, size, staged = store.objects.stage_file(src)
        if _trusted(st, started):
            store.put_stat_cache(key, {"stat": _stat_key(st), "object": oid})
    fields = {
        "kind": "file",
        "digest": oid,
        "object": oid,
        "size": size,
        "bytes_added": 0,
        "path": display_path(store, src),
        "abspath": str(src),
        "mode": stat.S_IMODE(st.st_mode),
    }
    return fields, staged


def _inside(path: str, root: str) -> bool:
    return os.path.commonpath([path, root]) == root


def _link(entry: os.DirEntry[str], rel: str, src: Path, real_root: str) -> list[str]:
    """[rel, target relative to the link's folder] of a symlink that stays inside `src`."""
    target = os.readlink(entry.path)
    resolved = os.path.realpath(entry.path)
    if not _inside(resolved, real_root):
        raise DataError(
            f"symlink {rel!r} in {src} points outside the snapshot folder "
            f"(to {target!r}); replace it with a copy or remove it, then snapshot again"
        )
    return [rel, os.path.relpath(resolved, os.path.dirname(os.path.join(real_root, rel)))]


def _entries(folder: str) -> list[os.DirEntry[str]]:
    try:
        return sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        raise DataError(f"cannot list {folder}: {exc.strerror}") from exc


def _store_entry(
    store: DataStore, entry: os.DirEntry[str], hit: list[Any] | None
) -> tuple[os.stat_result, str, int, int]:
    """(stat, object id, size, bytes added) of a regular file; the stat cache spares a re-hash."""
    st = entry.stat(follow_symlinks=False)
    if hit and hit[:4] == _stat_key(st) and store.objects.exists(hit[4]):
        return st, hit[4], st.st_size, 0
    oid, nbytes, extra = store.objects.put_file(Path(entry.path))
    return st, oid, nbytes, extra


def snapshot_folder(store: DataStore, src: Path) -> dict[str, Any]:
    """Store every file below `src`; symlinks stay links when they point inside `src`, and
    empty folders are listed so that a restore recreates them."""
    src = Path(os.path.abspath(src))
    real_root = os.path.realpath(src)
    skip = os.path.realpath(store.cfg.store_dir)
    key = f"dir:{src}"
    cache: dict[str, list[Any]] = store.stat_cache(key).get("files", {})
    new_cache: dict[str, list[Any]] = {}
    files: list[list[Any]] = []
    links: list[list[str]] = []
    empty: list[str] = []  # folders with nothing in them: restored too
    added = size = 0
    started = time.time_ns()
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        entries = _entries(os.path.join(src, rel_dir) if rel_dir else str(src))
        if rel_dir and not entries:
            empty.append(rel_dir)
        for entry in entries:
            rel = os.path.join(rel_dir, entry.name) if rel_dir else entry.name
            if entry.is_symlink():
                links.append(_link(entry, rel, src, real_root))
            elif entry.is_dir(follow_symlinks=False):
                if os.path.realpath(entry.path) != skip:
                    stack.append(rel)
            elif not entry.is_file(follow_symlinks=False):
                raise DataError(
                    f"{rel!r} in {src} is not a regular file (fifo, socket or device); "
                    "move it out of the folder to snapshot it"
                )
            else:
                st, oid, nbytes, extra = _store_entry(store, entry, cache.get(rel))
                if _trusted(st, started):
                    new_cache[rel] = [*_stat_key(st), oid]
                added += extra
                size += nbytes
                files.append([rel, oid, nbytes, stat.S_IMODE(st.st_mode)])
    files.sort()
    links.sort()
    empty.sort()
    listing = [[rel, oid] for rel, oid, _, _ in files] + [["->", rel, to] for rel, to in links]
    listing += [["/", rel] for rel in empty]
    store.put_stat_cache(key, {"files": new_cache})
    return {
        "kind": "dir",
        "digest": hash_bytes(_canonical(listing)),
        "files": files,
        "links": links,
        **({"empty_dirs": empty} if empty else {}),
        "size": size,
        "bytes_added": added,
        "path": display_path(store, src),
        "abspath": str(src),
    }


def _canonical(value: Any) -> bytes:
    import json

    return json.dumps(value, separators=(",", ":")).encode("utf-8")


def safe_join(root: Path, rel: str) -> Path:
    """`root / rel`, refusing absolute paths and `..` that would leave `root`."""
    if not rel or os.path.isabs(rel) or rel.startswith(("/", "\\")):
        raise DataError(f"refusing to restore {rel!r}: absolute or empty paths are not allowed")
    parts = Path(rel).parts
    if ".." in parts:
        raise DataError(f"refusing to restore {rel!r}: '..' would leave the target folder")
    joined = root / rel
    if not _inside(os.path.abspath(joined), os.path.abspath(root)):
        raise DataError(f"refusing to restore {rel!r}: it would land outside {root}")
    return joined


def _needs_write(dest: Path, oid: str, force: bool, conflicts: list[str]) -> bool:
    if dest.is_symlink():
        if force:
            dest.unlink()
            return True
        conflicts.append(str(dest))
        return False
    if not dest.exists():
        return True
    if dest.is_file() and dest.stat().st_size >= 0 and hash_file(dest) == oid:
        return False
    if force and dest.is_file():
        return True
    conflicts.append(str(dest))
    return False


def restore_file(store: DataStore, manifest: dict[str, Any], dest: Path, force: bool) -> Path:
    """Write the file version to `dest` (verified); an existing different file needs `force`."""
    ref = f"{manifest['name']}@v{manifest['version']}"
    conflicts: list[str] = []
    if dest.is_dir():
        dest = dest / Path(manifest["abspath"]).name
    if _needs_write(dest, manifest["object"], force, conflicts):
        store.objects.copy_out(manifest["object"], dest, ref)
        os.chmod(dest, manifest.get("mode", 0o644) | stat.S_IWUSR)
    elif conflicts:
        raise DataError(
            f"{dest} exists and differs from {ref}; pass force=True (--force) to overwrite it"
        )
    return dest


def restore_folder(store: DataStore, manifest: dict[str, Any], dest: Path, force: bool) -> Path:
    """Write every file of the folder version below `dest`. Files whose object is missing or
    corrupt are listed in one IntegrityError after all the others were restored."""
    ref = f"{manifest['name']}@v{manifest['version']}"
    plan = [(safe_join(dest, rel), rel, oid, mode) for rel, oid, _, mode in manifest["files"]]
    links = [(safe_join(dest, rel), rel, to) for rel, to in manifest.get("links", [])]
    conflicts: list[str] = []
    todo = [item for item in plan if _needs_write(item[0], item[2], force, conflicts)]
    if conflicts:
        shown = ", ".join(conflicts[:5]) + (" ..." if len(conflicts) > 5 else "")
        raise DataError(
            f"{len(conflicts)} file(s) exist and differ from {ref} ({shown}); "
            "pass force=True (--force) to overwrite them"
        )
    failed: list[str] = []
    dest.mkdir(parents=True, exist_ok=True)
    for rel in manifest.get("empty_dirs", []):
        safe_join(dest, rel).mkdir(parents=True, exist_ok=True)
    for target, rel, oid, mode in todo:
        try:
            store.objects.copy_out(oid, target, ref)
            os.chmod(target, mode | stat.S_IWUSR)
        except MissingObject:
            failed.append(f"{rel} (object {oid} missing)")
        except IntegrityError:
            failed.append(f"{rel} (object {oid} corrupt)")
    for target, rel, to in links:
        landing = os.path.abspath(os.path.join(os.path.dirname(target), to))
        if not _inside(landing, os.path.abspath(dest)):
            failed.append(f"{rel} (link to {to!r} leaves the target folder)")
            continue
        if target.is_symlink() or target.exists():
            if not force and os.path.islink(target) and os.readlink(target) == to:
                continue
            target.unlink()
        target.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(to, target)
    if failed:
        raise IntegrityError(
            f"restored {ref} to {dest} except {len(failed)} file(s): " + "; ".join(failed)
        )
    return dest
