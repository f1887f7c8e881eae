"""Names → versions → manifests, plus the small indexes beside them (chunk index, stat cache).

`refs/<name>/v000003.json` is the manifest of version 3: written once (temp + fsync + rename) under
the data lock, never modified. A manifest is only written after every object it names is durable,
so a manifest never points at bytes that are not there. While a version is being
written its number is held by `v000003.pending` (the writer's pid; readers ignore it, a dead
writer's is taken over; a reservation made on another host is never judged dead from here). A data
store outside the project (a shared folder) keeps its locks in its own `locks/` folder, so
writers from different project roots take the same lock. `gc` takes the `data-gc` lock exclusively while snapshots hold it shared
(from fingerprint to manifest), so it never removes the objects of a snapshot still being written.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from filelock import FileLock

from nb_mlops.core.config import Config
from nb_mlops.core.data.names import check_name, format_ref
from nb_mlops.core.data.objects import ObjectStore
from nb_mlops.core.errors import DataError, SnapshotNotFound
from nb_mlops.core.files import write_atomic
from nb_mlops.core.procs import pid_alive
from nb_mlops.core.store import lock

__all__ = ["DataStore", "open_store"]


def write_json_atomic(path: Path, value: Any, durable: bool = True) -> None:
    """Write JSON to `path` via a temp file in the same folder (fsync + rename when durable)."""
    data = json.dumps(value, separators=(",", ":"), sort_keys=True).encode()
    try:
        write_atomic(path, data, durable=durable)
    except OSError as exc:
        raise DataError(f"cannot write {path}: {exc.strerror or exc}") from exc


def read_json(path: Path) -> Any:
    with path.open(encoding="utf-8") as fh:
        return json.load(fh)


class DataStore:
    """The data store of one project: objects, manifests, the chunk index and the stat cache."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.root = cfg.data_store
        self.objects = ObjectStore(self.root)
        self.refs = self.root / "refs"
        self.chunks = self.root / "index" / "chunks"
        self.stats = self.root / "index" / "stat"
        shared = not self.root.is_relative_to(cfg.store_dir)
        # a shared folder: its own locks, writable by every user of the folder
        self.locks = self.root / "locks" if shared else cfg.locks_dir
        self.lock_mode = 0o666 if shared else 0o644

    def ensure(self) -> None:
        for folder in (self.objects.root, self.objects.tmp, self.refs, self.chunks, self.stats):
            folder.mkdir(parents=True, exist_ok=True)

    # --- locks ------------------------------------------------------------------------------

    def write_lock(self) -> Any:
        """The short lock around version assignment (filelock: released by the OS on death)."""
        self.locks.mkdir(parents=True, exist_ok=True)
        if self.locks == self.cfg.locks_dir:
            return lock(self.cfg, "data")
        return FileLock(str(self.locks / "data.lock"), mode=self.lock_mode)

    @contextlib.contextmanager
    def gc_guard(self, exclusive: bool = False) -> Iterator[None]:
        """Snapshots hold this shared while they write; gc holds it exclusive."""
        fd = self.gc_hold(exclusive)
        try:
            yield
        finally:
            os.close(fd)  # closing releases the flock

    def gc_hold(self, exclusive: bool = False) -> int:
        """Take the gc lock and return its descriptor; `os.close` it to release (from any thread:
        a background write keeps the hold its snapshot took)."""
        self.locks.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.locks / "data-gc.lock", os.O_RDWR | os.O_CREAT, self.lock_mode)
        try:
            if self.lock_mode != 0o644:  # the umask cut it; another user must open it too
                with contextlib.suppress(PermissionError):
                    os.fchmod(fd, self.lock_mode)
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        except BaseException:
            os.close(fd)
            raise
        return fd

    # --- manifests --------------------------------------------------------------------------

    def _dir(self, name: str) -> Path:
        return self.refs / check_name(name)

    @staticmethod
    def _file(version: int) -> str:
        return f"v{version:06d}.json"

    def names(self) -> list[str]:
        if not self.refs.is_dir():
            return []
        return sorted(p.name for p in self.refs.iterdir() if p.is_dir() and self.versions(p.name))

    def versions(self, name: str) -> list[int]:
        folder = self._dir(name)
        if not folder.is_dir():
            return []
        found = []
        for entry in folder.iterdir():
            stem = entry.name
            if stem.startswith("v") and stem.endswith(".json") and stem[1:-5].isdigit():
                found.append(int(stem[1:-5]))
        return sorted(found)

    def latest(self, name: str) -> int | None:
        versions = self.versions(name)
        return versions[-1] if versions else None

    def manifest(self, name: str, version: int | None = None) -> dict[str, Any]:
        """The manifest of `name@vN` (latest when version is None); SnapshotNotFound if absent."""
        versions = self.versions(name)
        if not versions:
            known = ", ".join(self.names()[:20]) or "none yet"
            raise SnapshotNotFound(f"no snapshot named {name!r} (known: {known})")
        if version is None:
            version = versions[-1]
        if version not in versions:
            raise SnapshotNotFound(
                f"no version {version} of snapshot {name!r} (versions: "
                f"{', '.join(f'v{v}' for v in versions)})"
            )
        try:
            value = self._read_manifest(name, version)
        except (OSError, ValueError) as exc:
            raise DataError(
                f"manifest of {format_ref(name, version)} is unreadable: {exc}"
            ) from exc
        return value

    def _read_manifest(self, name: str, version: int) -> dict[str, Any]:
        value: dict[str, Any] = read_json(self._dir(name) / self._file(version))
        return value

    def manifests(self, name: str | None = None) -> Iterator[dict[str, Any]]:
        for each in [name] if name else self.names():
            for version in self.versions(each):
                yield self.manifest(each, version)

    # --- reservations: a version number held while its bytes are written in the background ----

    def _pending(self, name: str) -> dict[int, dict[str, Any]]:
        """Live reservations of `name` (version → {"pid", "digest"}); dead writers' are removed."""
        found: dict[int, dict[str, Any]] = {}
        folder = self._dir(name)
        if not folder.is_dir():
            return found
        for entry in folder.glob("v*.pending"):
            try:
                info = read_json(entry)
                here = info.get("host", socket.gethostname()) == socket.gethostname()
                alive = not here or pid_alive(int(info["pid"]))
            except (OSError, ValueError, KeyError, TypeError):
                info, alive = {}, False
            if alive:
                found[int(entry.name[1:-8])] = info
            else:
                with contextlib.suppress(OSError):
                    entry.unlink()
        return found

    def reserve_version(self, name: str, digest: str, dedup: bool = True) -> dict[str, Any] | int:
        """The latest manifest when it has `digest` already, else a newly reserved version number.

        `dedup=False` skips the comparison with the latest manifest (the caller knows of a newer
        pending version of its own). A live reservation of another process for the same digest is waited for, so two writers
        of the same content at once still make one version.
        """
        while True:
            with self.write_lock():
                latest = self.latest(name)
                if latest is not None and dedup:
                    current = self.manifest(name, latest)
                    if current.get("digest") == digest:
                        return current
                pending = self._pending(name)
                same = [v for v, info in pending.items() if info.get("digest") == digest]
                if not same or all(pending[v].get("pid") == os.getpid() for v in same):
                    version = max([latest or 0, *pending]) + 1
                    write_json_atomic(
                        self._dir(name) / f"v{version:06d}.pending",
                        {"pid": os.getpid(), "host": socket.gethostname(), "digest": digest},
                        durable=False,
                    )
                    return version
            time.sleep(0.05)

    def release_version(self, name: str, version: int) -> None:
        """Drop a reservation whose write failed (the number is reused by the next snapshot)."""
        with contextlib.suppress(OSError):
            (self._dir(name) / f"v{version:06d}.pending").unlink()

    def commit_version(self, name: str, version: int, manifest: dict[str, Any]) -> dict[str, Any]:
        """Write the manifest of reserved `version` (every object it names must be durable)."""
        manifest = {**manifest, "name": name, "version": version}
        with self.write_lock():
            write_json_atomic(self._dir(name) / self._file(version), manifest)
            self.release_version(name, version)
        return manifest

    # --- chunk index: logical chunk digest → stored form --------------------------------------

    def _chunk_path(self, digest: str) -> Path:
        return self.chunks / digest[:2] / digest[2:]

    def chunk_entry(self, digest: str) -> dict[str, Any] | None:
        """The stored form of a logical chunk, if every object it needs is still present."""
        path = self._chunk_path(digest)
        try:
            entry: dict[str, Any] = read_json(path)
        except (OSError, ValueError):
            return None
        needed = [entry.get("object"), entry.get("base_object"), entry.get("patch")]
        if any(oid and not self.objects.exists(oid) for oid in needed):
            return None
        return entry

    def put_chunk_entry(self, digest: str, entry: dict[str, Any]) -> None:
        # Not fsynced: the index is a cache; a lost entry only costs one rewrite of the chunk.
        write_json_atomic(self._chunk_path(digest), entry, durable=False)

    def drop_chunk_entry(self, digest: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._chunk_path(digest).unlink()

    def chunk_digests(self) -> Iterator[str]:
        if not self.chunks.is_dir():
            return
        for fan in self.chunks.iterdir():
            if fan.is_dir():
                for entry in fan.iterdir():
                    if not entry.name.startswith("."):
                        yield fan.name + entry.name

    # --- stat cache: workspace path → (size, mtime, ctime, inode) → object -------------------

    def _stat_path(self, key: str) -> Path:
        from nb_mlops.core.data.objects import hash_bytes

        return self.stats / hash_bytes(key.encode("utf-8", "surrogateescape"))[:40]

    def stat_cache(self, key: str) -> dict[str, Any]:
        try:
            value: dict[str, Any] = read_json(self._stat_path(key))
        except (OSError, ValueError):
            return {}
        return value if value.get("key") == key else {}

    def put_stat_cache(self, key: str, value: dict[str, Any]) -> None:
        write_json_atomic(self._stat_path(key), {**value, "key": key}, durable=False)


def open_store(cfg: Config | None = None) -> DataStore:
    """The data store of the project (created on first use; no MLflow import)."""
    from nb_mlops.core.config import load_config

    cfg = cfg or load_config()
    store = DataStore(cfg)
    if cfg.data_store_url is not None:
        from nb_mlops.core.data.remote import RemoteDataStore

        store = RemoteDataStore(cfg, cfg.data_store_url)
    store.ensure()
    return store
