"""A shared data store at an object-store URL (`data_store = "s3://bucket/prefix"`), via fsspec/s3fs.

The bucket holds the folder store's layout: `objects/ab/cdef...` (blake3-named bytes),
`refs/<name>/v000003.json` (manifests) and `refs/<name>/v000003.pending` (reservations). This
project's copy sits in a local cache (`cfg.data_store`): a snapshot is written there first by the
folder store's code, and uploaded when its version is committed; a read downloads a missing object,
re-hashes it and refuses bytes that do not match their name (verify-on-read).

Concurrent writers (other project roots, users, hosts) never corrupt or lose a version because no
shared key is ever rewritten: every put is conditional, `PutObject` with `If-None-Match: *` (s3fs
`pipe_file(..., mode="create")` / `put_file(..., mode="create")`, botocore >= 1.35.20; honoured by
S3 since 2024-08 and by moto's server), which the server applies atomically and answers 412 (s3fs:
FileExistsError) when the key exists. Claiming version N is a create of `vN.pending`: of two racing
writers one gets it and the other claims N+1. Then objects are put (a 412 there means the same bytes
are stored: names are content hashes), and last the manifest `vN.json`, also create-only. A
compare-and-swap on one mutable ref (If-Match on its ETag) would work as well, but would need a
re-read and retry on every conflict and a read-modify-write index; immutable numbered keys need
neither. A writer that dies leaves its `.pending` behind: readers ignore it and its number is
skipped, never reused.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nb_mlops.core.config import Config
from nb_mlops.core.data.integrity import manifest_objects
from nb_mlops.core.data.names import check_name, format_ref
from nb_mlops.core.data.objects import MissingObject, ObjectStore, hash_file
from nb_mlops.core.data.refs import DataStore, write_json_atomic
from nb_mlops.core.errors import DataError, IntegrityError

__all__ = ["Remote", "RemoteDataStore", "RemoteObjects", "filesystem"]


def filesystem(cfg: Config, protocol: str) -> Any:
    """The fsspec filesystem of the URL: endpoint from config, else AWS's usual environment."""
    if protocol not in ("s3", "s3a"):
        raise DataError(
            f"data_store {cfg.data_store_url!r}: only folders and s3://bucket/prefix are supported"
        )
    try:
        import s3fs
    except ImportError as exc:
        raise DataError("an s3:// data_store needs s3fs: pip install 'nb_mlops[s3]'") from exc
    # one client per process and settings (fsspec's instance cache); listings always fresh
    options: dict[str, Any] = {"use_listings_cache": False}
    endpoint = cfg.settings.get("data_store_endpoint")
    if endpoint:
        options["endpoint_url"] = endpoint
    return s3fs.S3FileSystem(**options)


class Remote:
    """Conditional reads and writes of one store's keys in a bucket."""

    def __init__(self, cfg: Config, url: str) -> None:
        self.url = url
        protocol, _, path = url.partition("://")
        self.fs = filesystem(cfg, protocol)
        self.base = path.strip("/")

    @contextlib.contextmanager
    def _talking(self, what: str) -> Iterator[None]:
        """Any other failure (no bucket, no credentials, no network) is one line naming the store.

        FileExistsError (a conditional put lost) and FileNotFoundError (no such key) pass: callers
        give them a meaning. s3fs raises botocore's and aiohttp's own exception types besides
        OSError, hence the broad catch.
        """
        try:
            yield
        except (FileExistsError, FileNotFoundError):
            raise
        except Exception as exc:
            raise DataError(
                f"cannot {what} the data store {self.url} ({type(exc).__name__}: {exc}); check "
                "the bucket, data_store_endpoint or AWS_ENDPOINT_URL, and the AWS credentials"
            ) from exc

    def key(self, *parts: str) -> str:
        return "/".join([self.base, *parts])

    def object_key(self, oid: str) -> str:
        return self.key("objects", oid[:2], oid[2:])

    def create(self, key: str, data: bytes) -> bool:
        """Put `data` at `key` only if absent (If-None-Match: *); False when it existed."""
        try:
            with self._talking("write to"):
                self.fs.pipe_file(key, data, mode="create")
        except FileExistsError:
            return False
        except FileNotFoundError as exc:  # no such bucket
            raise DataError(f"cannot write to the data store {self.url}: {exc}") from exc
        return True

    def read(self, key: str) -> bytes:
        with self._talking("read"):
            return bytes(self.fs.cat_file(key))

    def listdir(self, key: str) -> list[str]:
        """Names directly under `key` (fresh: listings are not cached)."""
        try:
            with self._talking("list"):
                entries = self.fs.ls(key, detail=False, refresh=True)
        except FileNotFoundError:
            return []
        return sorted(entry.rstrip("/").rsplit("/", 1)[-1] for entry in entries)

    def remove(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError), self._talking("write to"):
            self.fs.rm_file(key)

    def upload(self, objects: ObjectStore, oid: str, snapshot: str) -> None:
        """Put a local object create-only (already there: the same bytes, nothing to do). The
        local copy is re-hashed first, so a damaged cache never spreads to the shared store."""
        key = self.object_key(oid)
        with self._talking("write to"):
            if self.fs.exists(key):
                return
        source = objects._open_checked(oid, snapshot)
        if hash_file(source) != oid:
            raise IntegrityError(
                f"object {oid} of snapshot {snapshot} is corrupt in the local cache "
                f"{objects.root}; nothing was uploaded, take the snapshot again"
            )
        with contextlib.suppress(FileExistsError), self._talking("write to"):
            self.fs.put_file(str(source), key, mode="create")

    def download(self, objects: ObjectStore, oid: str, snapshot: str) -> None:
        """Fetch an object into the local cache, refusing bytes that do not match its name."""
        objects.finish(self.fetch(objects, oid, snapshot), oid, f"object {oid}")

    def fetch(self, objects: ObjectStore, oid: str, snapshot: str) -> Path:
        """Download an object to a temp file of the cache and re-hash it; return the temp file."""
        tmp = objects._temp()
        try:
            with self._talking("read"):
                self.fs.get_file(self.object_key(oid), str(tmp))
        except FileNotFoundError:
            tmp.unlink(missing_ok=True)
            raise MissingObject(
                f"object {oid} of snapshot {snapshot} is missing from {self.url}; "
                "take the snapshot again from its source"
            ) from None
        if hash_file(tmp) != oid:
            tmp.unlink(missing_ok=True)
            raise IntegrityError(
                f"object {oid} of snapshot {snapshot} in {self.url} is corrupt: its bytes no "
                "longer match their blake3 hash (it was changed in the shared store after it was "
                "written); nothing was restored, take the snapshot again from its source"
            )
        return tmp


class RemoteObjects(ObjectStore):
    """The local cache of a shared store's objects: a missing object is downloaded and verified."""

    def __init__(self, data_root: Path, remote: Remote) -> None:
        super().__init__(data_root)
        self.remote = remote

    def _open_checked(self, oid: str, snapshot: str) -> Path:
        if not self.path(oid).exists():
            self.remote.download(self, oid, snapshot)
        return super()._open_checked(oid, snapshot)

    def check(self, oid: str) -> str | None:
        """Re-hash the shared copy (the cache may hold an intact copy of a tampered object)."""
        try:
            self.remote.fetch(self, oid, "?").unlink()
        except MissingObject:
            return "missing"
        except IntegrityError:
            return "corrupt"
        return None


class RemoteDataStore(DataStore):
    """A data store in a bucket, with this project's local cache in front of it."""

    def __init__(self, cfg: Config, url: str) -> None:
        super().__init__(cfg)
        self.remote = Remote(cfg, url)
        self.objects = RemoteObjects(self.root, self.remote)

    def _key(self, name: str, version: int, suffix: str) -> str:
        return self.remote.key("refs", check_name(name), f"v{version:06d}.{suffix}")

    def names(self) -> list[str]:
        found = []
        for name in self.remote.listdir(self.remote.key("refs")):
            try:
                check_name(name)
            except DataError:  # a key no snapshot name could have made
                continue
            if self.versions(name):
                found.append(name)
        return found

    def _claimed(self, name: str) -> dict[str, list[int]]:
        """Version numbers under `refs/<name>/`, by suffix ("json": committed, "pending")."""
        found: dict[str, list[int]] = {"json": [], "pending": []}
        for entry in self.remote.listdir(self.remote.key("refs", check_name(name))):
            stem, _, suffix = entry.partition(".")
            if suffix in found and stem.startswith("v") and stem[1:].isdigit():
                found[suffix].append(int(stem[1:]))
        return {suffix: sorted(numbers) for suffix, numbers in found.items()}

    def versions(self, name: str) -> list[int]:
        return self._claimed(name)["json"]

    def manifest(self, name: str, version: int | None = None) -> dict[str, Any]:
        """A cached manifest needs no listing of the bucket: versions are never rewritten."""
        if version is not None and (self._dir(name) / self._file(version)).exists():
            return super()._read_manifest(name, version)
        return super().manifest(name, version)

    def _read_manifest(self, name: str, version: int) -> dict[str, Any]:
        """A manifest from the local cache (they are immutable), else from the bucket."""
        cached = self._dir(name) / self._file(version)
        if cached.exists():
            return super()._read_manifest(name, version)
        value: dict[str, Any] = json.loads(self.remote.read(self._key(name, version, "json")))
        write_json_atomic(cached, value, durable=False)
        return value

    def reserve_version(self, name: str, digest: str, dedup: bool = True) -> dict[str, Any] | int:
        """The latest manifest when it has `digest`, else a version number claimed in the bucket."""
        with self.write_lock():  # this project's threads and processes take turns
            claimed = self._claimed(name)
            if claimed["json"] and dedup:
                current = self.manifest(name, claimed["json"][-1])
                if current.get("digest") == digest:
                    return current
            version = max([0, *claimed["json"], *claimed["pending"]]) + 1
            info = {
                "digest": digest,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
            }
            while not self.remote.create(
                self._key(name, version, "pending"), json.dumps(info).encode()
            ):
                version += 1
            return version

    def release_version(self, name: str, version: int) -> None:
        self.remote.remove(self._key(name, version, "pending"))

    def commit_version(self, name: str, version: int, manifest: dict[str, Any]) -> dict[str, Any]:
        """Upload the version's objects, then its manifest (create-only), then drop the claim."""
        manifest = {**manifest, "name": name, "version": version}
        ref = format_ref(name, version)
        for oid in {oid for oid, _ in manifest_objects(manifest)}:
            self.remote.upload(self.objects, oid, ref)
        data = json.dumps(manifest, separators=(",", ":"), sort_keys=True).encode()
        if not self.remote.create(self._key(name, version, "json"), data):
            raise DataError(
                f"{ref} exists already in {self.remote.url}: another "
                "writer took a version it had not claimed; snapshot again"
            )
        write_json_atomic(self._dir(name) / self._file(version), manifest, durable=False)
        self.release_version(name, version)
        return manifest
