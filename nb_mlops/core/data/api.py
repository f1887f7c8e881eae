"""The public data-version API: `snapshot`, `restore`, `snapshots`, `diff`, `verify`, `gc`.

Every face (magics, CLI, widgets) calls these. A snapshot taken or restored is noted in
`nb_mlops.core.session`, which tracking turns into MLflow dataset inputs of the session's runs.
`snapshot` returns once the version is fingerprinted and its new bytes captured; the durable write
finishes in the background (`Snapshot.wait()`, `Snapshot.durable`; see `pending`), and every other
call here waits for it first.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from nb_mlops.core.config import Config, load_config
from nb_mlops.core.data import pending
from nb_mlops.core.data.names import check_name, format_ref, parse_ref, suggest_name
from nb_mlops.core.data.pins import note_latest, pinned
from nb_mlops.core.data.refs import DataStore, open_store
from nb_mlops.core.errors import DataError, IntegrityError, SnapshotNotFound
from nb_mlops.core.session import DataUse, note_data_use

__all__ = ["CONTEXTS", "Snapshot", "diff", "gc", "restore", "snapshot", "snapshots", "verify"]

CONTEXTS = ("train", "eval", "test")
TAG_PREFIX = "nb_mlops.data."


@dataclass(frozen=True)
class Snapshot:
    """One stored data version.

    Attributes:
        name: the snapshot name.
        version: 1, 2, ...
        digest: blake3 content hash of the version.
        kind: "frame", "array", "file" or "dir".
        rows: row count of a frame, else None.
        bytes_added: bytes this snapshot added to the store (0 when the content was stored
            already); reading it waits until the version is durable.
        size: bytes the version occupies in the store (shared objects counted in full); waits too.
        profile: schema and summary statistics (frames and arrays).
        schema: column → dtype (frames), {"values": dtype} (arrays), {} (files).
        path: the workspace path of a file or folder snapshot, else None.
        created: ISO timestamp (UTC).
        message: the message given at snapshot time.
        context: "train", "eval", "test" or None, as given when the version was created.
        new: False when an unchanged snapshot returned the existing version.
        lineage: where the data came from, when its producer said (a scoring run: model
            version, input snapshot, run id).
    """

    name: str
    version: int
    digest: str
    kind: str
    rows: int | None
    stored_bytes_added: int = field(repr=False, default=0)
    stored_size: int = field(repr=False, default=0)
    profile: dict[str, Any] = field(repr=False, default_factory=dict)
    schema: dict[str, str] = field(repr=False, default_factory=dict)
    path: str | None = None
    created: str = ""
    message: str | None = None
    context: str | None = None
    new: bool = True
    job: pending.PendingWrite | None = field(repr=False, compare=False, default=None)
    lineage: dict[str, str] | None = field(repr=False, default=None)

    @property
    def durable(self) -> bool:
        """True once the version's bytes and manifest are on disk (always, for listed versions)."""
        return self.job is None or (self.job.done() and not self.job.failed())

    def wait(self) -> Snapshot:
        """Block until the version is durable; DataError when its background write failed."""
        if self.job is not None:
            self.job.wait()
        return self

    def _stored(self) -> dict[str, Any] | None:
        return self.job.wait() if self.job is not None else None

    @property
    def bytes_added(self) -> int:
        """Bytes this snapshot added to the store (waits for a pending write)."""
        stored = self._stored()
        if stored is None:
            return self.stored_bytes_added
        return int(stored.get("bytes_added", 0)) if self.new else 0

    @property
    def size(self) -> int:
        """Bytes the version occupies in the store (waits for a pending write)."""
        stored = self._stored()
        return self.stored_size if stored is None else int(stored.get("size", 0))

    @property
    def ref(self) -> str:
        """`NAME@vN`."""
        return format_ref(self.name, self.version)

    @property
    def source(self) -> str:
        """The MLflow dataset source: `nbmlops://NAME@vN` (files and folders: `?path=...`)."""
        base = f"nbmlops://{self.ref}"
        return f"{base}?path={quote(self.path)}" if self.path else base

    @property
    def tag_value(self) -> str:
        """The run tag value `vN:<digest>`."""
        return f"v{self.version}:{self.digest}"

    @classmethod
    def from_manifest(
        cls, m: dict[str, Any], new: bool = False, added: int | None = None
    ) -> Snapshot:
        """The version a manifest records; `added` overrides the bytes it records as added
        (0 when a call found the content stored already)."""
        return cls(
            name=m["name"],
            version=int(m["version"]),
            digest=m["digest"],
            kind=m["kind"],
            rows=m.get("rows"),
            stored_bytes_added=int(m.get("bytes_added", 0)) if added is None else added,
            stored_size=int(m.get("size", 0)),
            profile=m.get("profile", {}),
            schema=m.get("schema", {}),
            path=m.get("path") if m["kind"] in ("file", "dir") else None,
            created=m.get("created", ""),
            message=m.get("message"),
            context=m.get("context"),
            new=new,
            lineage=m.get("lineage"),
        )


def _note(snap: Snapshot, context: str | None) -> None:
    note_data_use(
        DataUse(
            name=snap.name,
            version=snap.version,
            digest=snap.digest,
            context=context,
            source=snap.source,
            path=snap.path,
            rows=snap.rows,
            schema=dict(snap.schema),
            profile=snap.profile,
        )
    )


def _check_context(context: str | None) -> str | None:
    if context is not None and context not in CONTEXTS:
        raise DataError(f"invalid context {context!r}: use one of {', '.join(CONTEXTS)}")
    return context


def snapshot(
    obj_or_path: Any,
    name: str | None = None,
    context: str | None = None,
    message: str | None = None,
    *,
    wait: bool = False,
    lineage: dict[str, str] | None = None,
    cfg: Config | None = None,
) -> Snapshot:
    """Store a version of a DataFrame, a numpy array, a file or a folder.

    Unchanged content returns the latest version (`new=False`, no bytes added). The call returns
    once the content is fingerprinted and captured; new bytes become durable in the background
    (`snap.wait()`; restore, verify, gc and process exit wait for them).

    Args:
        obj_or_path: a pandas DataFrame, a numpy ndarray, or a path (str / PathLike).
        name: the snapshot name (default for paths: the file or folder name).
        context: "train", "eval" or "test" (recorded on the MLflow dataset input).
        message: a free-text note kept with the version.
        wait: return only once the version is durable.
        lineage: where the data came from (kept in the manifest, e.g. the scoring run's model
            version, input snapshot and run id).
        cfg: the project configuration (default: found from the current folder).

    Returns:
        The stored `Snapshot`.

    Example:
        >>> snap = nb_mlops.snapshot(df, "train", context="train")   # doctest: +SKIP
        >>> snap.ref
        'train@v1'
    """
    _check_context(context)
    pending.raise_failures()
    is_path = isinstance(obj_or_path, str | os.PathLike)
    name = _name_of(obj_or_path, name, is_path)
    cfg = cfg or load_config()
    try:
        store = open_store(cfg)
        hold = store.gc_hold()  # handed to the background write, which releases it
    except OSError as exc:
        raise _os_error(exc, cfg) from exc
    try:
        snap = _take(store, hold, obj_or_path, name, is_path, context, message, lineage)
    except BaseException as exc:
        os.close(hold)
        if isinstance(exc, OSError):
            raise _os_error(exc, cfg) from exc
        raise
    if snap.job is None or not snap.new:
        os.close(hold)
    if wait:
        snap.wait()
    _note(snap, context)
    return snap


def _name_of(obj: Any, name: str | None, is_path: bool) -> str:
    """The snapshot name: the one given, else (paths only) one made from the file name."""
    if name is None:
        if not is_path:
            raise DataError("a DataFrame or array snapshot needs a name: snapshot(df, 'train')")
        name = suggest_name(Path(os.path.abspath(obj)).name)
    check_name(name)
    return name


def _os_error(exc: OSError, cfg: Config) -> DataError:
    """One line for an OS error met while snapshotting: the store's folder, or the source."""
    where = Path(exc.filename) if exc.filename else None
    reason = exc.strerror or str(exc)
    inside = where is not None and (
        where.is_relative_to(cfg.data_store) or where.is_relative_to(cfg.store_dir)
    )
    if where is None or inside:
        return DataError(
            f"cannot write to the data store {cfg.data_store} ({reason}"
            f"{f': {where}' if where else ''}); make {cfg.store_dir} writable, or set "
            "NB_MLOPS_ROOT to a project folder you can write"
        )
    return DataError(f"cannot read {where} ({reason}); check the path and its permissions")


def _fingerprint(
    store: DataStore, obj: Any, is_path: bool
) -> tuple[str, dict[str, Any], Path | None, Any]:
    """(digest, fields of a path, staged copy of a file, prepared table of a frame/array)."""
    if is_path:
        fields, staged = _snapshot_path(store, Path(os.fspath(obj)))
        return fields["digest"], fields, staged, None
    from nb_mlops.core.data.frames import prepare, prepared_digest

    prep = prepare(obj)
    return prepared_digest(prep), {}, None, prep


_Plan = tuple[dict[str, Any], set[str], set[str], Callable[[], dict[str, Any]]]


def _frame_plan(
    store: DataStore,
    name: str,
    version: int,
    prep: Any,
    digest: str,
    job: pending.PendingWrite | None,
    on_disk: int | None,
) -> _Plan:
    """Chunk a frame or array against the previous version; the write runs later."""
    from nb_mlops.core.data.frames import plan_table, write_plan

    previous = store.manifest(name, on_disk) if on_disk else None
    chunking = (job.meta if job is not None else previous or {}).get("chunking")
    if previous is not None and previous.get("kind") != prep.kind:
        chunking = None
    plan = plan_table(store, prep, digest, chunking)
    ref = format_ref(name, version)

    def complete() -> dict[str, Any]:
        latest = store.latest(name)
        return write_plan(store, plan, ref, store.manifest(name, latest) if latest else None)

    return plan.fields, set(), plan.chunk_digests, complete


def _file_plan(store: DataStore, fields: dict[str, Any], staged: Path | None, digest: str) -> _Plan:
    """A file's staged copy is made durable later (None: its object was stored already)."""

    def complete() -> dict[str, Any]:
        added = store.objects.finish(staged, digest, f"a copy of {fields['abspath']}")
        return {**fields, "bytes_added": added}

    return fields, ({digest} if staged else set()), set(), complete


def _take(
    store: DataStore,
    hold: int,
    obj: Any,
    name: str,
    is_path: bool,
    context: str | None,
    message: str | None,
    lineage: dict[str, str] | None = None,
) -> Snapshot:
    """Fingerprint `obj`, reserve its version and queue the durable write (see `pending`)."""
    digest, fields, staged, prep = _fingerprint(store, obj, is_path)
    on_disk = store.latest(name)
    job = pending.latest_pending(name, str(store.root))
    if job is not None and on_disk is not None and job.version <= on_disk:
        job = None
    if job is not None and job.digest == digest:
        _discard(staged)
        return _pending_snapshot(job, new=False)
    reserved = store.reserve_version(name, digest, dedup=job is None)
    if isinstance(reserved, dict):
        _discard(staged)
        return Snapshot.from_manifest(reserved, new=False, added=0)
    version = reserved
    try:
        if prep is not None:
            plan = _frame_plan(store, name, version, prep, digest, job, on_disk)
        elif staged is not None or fields["kind"] == "file":
            plan = _file_plan(store, fields, staged, digest)
        else:  # a folder: its objects are durable already
            meta = _meta(fields, context, message, lineage=lineage)
            return Snapshot.from_manifest(store.commit_version(name, version, meta), new=True)
    except BaseException:
        _discard(staged)
        store.release_version(name, version)
        raise
    fields, objects, chunks, complete = plan
    meta = _meta(fields, context, message, lineage=lineage)
    job = pending.PendingWrite(name, version, digest, objects, chunks, meta, str(store.root))

    def work() -> dict[str, Any]:
        try:
            done = {**complete(), **_meta({}, context, message, meta["created"], lineage)}
            return store.commit_version(name, version, done)
        except BaseException:
            _discard(staged)
            store.release_version(name, version)
            raise
        finally:
            os.close(hold)

    pending.submit(job, work)
    return _pending_snapshot(job, new=True)


def _pending_snapshot(job: pending.PendingWrite, new: bool) -> Snapshot:
    meta = job.meta
    return Snapshot(
        name=job.name,
        version=job.version,
        digest=job.digest,
        kind=meta["kind"],
        rows=meta.get("rows"),
        profile=meta.get("profile", {}),
        schema=meta.get("schema", {}),
        path=meta.get("path") if meta["kind"] in ("file", "dir") else None,
        created=meta["created"],
        message=meta.get("message"),
        context=meta.get("context"),
        new=new,
        job=job,
        lineage=meta.get("lineage"),
    )


def _meta(
    fields: dict[str, Any],
    context: str | None,
    message: str | None,
    created: str | None = None,
    lineage: dict[str, str] | None = None,
) -> dict[str, Any]:
    meta = {
        **fields,
        "created": created or datetime.now(UTC).isoformat(timespec="milliseconds"),
        "message": message,
        "context": context,
    }
    if lineage:
        meta["lineage"] = dict(lineage)
    return meta


def _discard(staged: Path | None) -> None:
    if staged is not None:
        staged.unlink(missing_ok=True)


def _snapshot_path(store: DataStore, path: Path) -> tuple[dict[str, Any], Path | None]:
    from nb_mlops.core.data.files import snapshot_file, snapshot_folder

    if not os.path.lexists(path):
        raise DataError(f"{path} does not exist: pass an existing file or folder, or a variable")
    if path.is_dir():
        return snapshot_folder(store, path), None
    if path.is_file():
        return snapshot_file(store, path)
    raise DataError(f"{path} is not a regular file or folder (a broken link, a fifo or a device)")


def _run_version(cfg: Config, name: str, run_id: str) -> tuple[int, str]:
    from nb_mlops.core.store import client

    try:
        run = client(cfg).get_run(run_id)
    except Exception as exc:  # MLflow raises its own exception types for unknown runs
        raise SnapshotNotFound(f"cannot read run {run_id!r}: {str(exc).splitlines()[0]}") from exc
    value = run.data.tags.get(TAG_PREFIX + name)
    if not value:
        used = sorted(k[len(TAG_PREFIX) :] for k in run.data.tags if k.startswith(TAG_PREFIX))
        raise SnapshotNotFound(
            f"run {run_id} used no snapshot named {name!r} (it used: {', '.join(used) or 'none'})"
        )
    version, _, digest = value.partition(":")
    return int(version.lstrip("v")), digest


def _wanted(
    name: str | Snapshot, version: int | None, run_id: str | None
) -> tuple[str, int | None]:
    """(name, version) a restore reads: a pipeline step's data pin re-points a restore by name."""
    if isinstance(name, Snapshot):
        return name.name, version or name.version
    base, version = parse_ref(name, version)
    if version is None and run_id is None:
        return pinned(base) or (base, None)
    return base, version


def restore(
    name: str | Snapshot,
    version: int | None = None,
    *,
    run_id: str | None = None,
    to: str | os.PathLike[str] | None = None,
    force: bool = False,
    cfg: Config | None = None,
) -> Any:
    """Bring a version back: a DataFrame or array, or the path a file/folder was written to.

    Args:
        name: `NAME`, `NAME@vN`, or a `Snapshot`.
        version: the version (default: the latest, or the one `run_id` used; in a pipeline
            step run with data pins, `NAME` reads its pinned version: `core.data.pins`).
        run_id: an MLflow run: restore exactly the version that run recorded (`nb_mlops.data.NAME`).
        to: where to write a file or folder (default: its original path inside the project).
        force: overwrite existing files that differ.
        cfg: the project configuration.

    Example:
        >>> df = nb_mlops.restore("train@v3")            # doctest: +SKIP
    """
    base, version = _wanted(name, version, run_id)
    cfg = cfg or load_config()
    pending.wait_all()
    store = open_store(cfg)
    expected = None
    if run_id is not None:
        used, expected = _run_version(cfg, base, run_id)
        if version is not None and version != used:
            raise DataError(f"run {run_id} used {format_ref(base, used)}, not v{version}")
        version = used
    manifest = store.manifest(base, version)
    if version is None:  # the latest: a step cache must know which one that was
        note_latest(base, manifest["version"])
    ref = format_ref(base, manifest["version"])
    if expected is not None and manifest["digest"] != expected:
        raise IntegrityError(
            f"{ref} has digest {manifest['digest']} but run {run_id} recorded {expected}; "
            "the store was changed after the run"
        )
    snap = Snapshot.from_manifest(manifest)
    if manifest["kind"] in ("frame", "array"):
        from nb_mlops.core.data.frames import load_table, to_python

        value = to_python(manifest, load_table(store, manifest))
    else:
        from nb_mlops.core.data.files import restore_file, restore_folder

        dest = _restore_target(cfg, manifest, to)
        if manifest["kind"] == "file":
            value = restore_file(store, manifest, dest, force)
        else:
            value = restore_folder(store, manifest, dest, force)
    _note(snap, manifest.get("context"))
    return value


def _restore_target(cfg: Config, manifest: dict[str, Any], to: Any) -> Path:
    if to is not None:
        return Path(os.path.abspath(to))
    original = Path(manifest["abspath"])
    try:
        original.relative_to(cfg.root)
    except ValueError:
        raise DataError(
            f"{manifest['name']}@v{manifest['version']} came from {original}, outside the project; "
            "pass to=PATH (--to PATH) to say where to restore it"
        ) from None
    return original


def snapshots(name: str | None = None, *, cfg: Config | None = None) -> list[Snapshot]:
    """Every stored version (of `name`, or of every name), oldest first within a name."""
    pending.wait_all()
    store = open_store(cfg)
    if name is not None:
        base, version = parse_ref(name)
        if version is not None:
            return [Snapshot.from_manifest(store.manifest(base, version))]
        if not store.versions(base):
            store.manifest(base)  # raises SnapshotNotFound with the known names
    return [Snapshot.from_manifest(m) for m in store.manifests(name)]


def _resolve(store: DataStore, ref: str | Snapshot) -> dict[str, Any]:
    if isinstance(ref, Snapshot):
        return store.manifest(ref.name, ref.version)
    base, version = parse_ref(ref)
    return store.manifest(base, version)


def diff(
    a: str | Snapshot, b: str | Snapshot | None = None, *, cfg: Config | None = None
) -> dict[str, Any]:
    """Differences from version `a` to `b` (default `b`: the latest version of a's name).

    Returns a JSON-ready dict: columns added/removed/retyped, row counts, rows added/removed/
    changed, per-column statistic deltas (frames); files added/removed/changed (folders).
    """
    from nb_mlops.core.data.compare import diff_manifests

    pending.wait_all()
    store = open_store(cfg)
    ma = _resolve(store, a)
    mb = _resolve(store, b) if b is not None else store.manifest(ma["name"])
    return diff_manifests(store, ma, mb)


def verify(
    name: str | None = None, everything: bool = False, *, cfg: Config | None = None
) -> list[dict[str, Any]]:
    """Re-hash stored objects; return the problems found (empty when all is intact).

    Each problem: {"snapshot": "NAME@vN", "object": id, "problem": "missing"|"corrupt", "path": ...}.
    """
    from nb_mlops.core.data.integrity import verify_store

    pending.wait_all()
    return verify_store(open_store(cfg), name, everything)


def gc(dry_run: bool = False, *, cfg: Config | None = None) -> dict[str, int]:
    """Remove objects that no snapshot references; return counts of removed/kept and bytes freed."""
    from nb_mlops.core.data.integrity import gc_store

    pending.wait_all()
    url = (cfg or load_config()).data_store_url
    if url is not None:
        raise DataError(
            f"gc of the shared data store {url} is not supported: other projects' snapshots may "
            "need any object; expire objects with the bucket's lifecycle rules instead"
        )
    return gc_store(open_store(cfg), dry_run)
