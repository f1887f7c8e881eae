"""The content-addressed object store under `.nb_mlops/data/objects/`.

An object is named by the blake3 of its bytes and fanned out by its first two hex digits. Writes go
to a temp file in `data/tmp/`, are fsynced, made read-only and renamed into place, so a crash never
leaves partial bytes under a hash name. A file can be staged (copied and hashed)
now and finished (fsync + rename) later, from the background writer. Every read re-hashes and refuses bytes that
do not match, naming the object and the snapshot that needed it.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import shutil
import stat
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import blake3

from nb_mlops.core.errors import DataError, IntegrityError
from nb_mlops.core.files import fsync_dir

__all__ = ["ObjectStore", "MissingObject", "hash_bytes", "hash_file"]

# below this size a file is read into memory in one go (mmap of tiny files costs more than it saves)
_SMALL = 4 << 20
_COPY_BLOCK = 8 << 20


class MissingObject(IntegrityError):
    """An object a snapshot references is not in the store."""


# below this size blake3's own threads cost more than they save (chunks are hashed in a pool)
_THREADED = 16 << 20


def _hasher(nbytes: int = _THREADED) -> Any:
    if nbytes < _THREADED:
        return blake3.blake3()
    return blake3.blake3(max_threads=blake3.blake3.AUTO)


def hash_bytes(data: Any) -> str:
    """blake3 hex digest of a bytes-like object (multi-threaded for large buffers)."""
    hasher = _hasher(memoryview(data).nbytes)
    hasher.update(data)
    return str(hasher.hexdigest())


def hash_file(path: Path) -> str:
    """blake3 hex digest of a file's bytes (mmap + threads for large files)."""
    size = path.stat().st_size
    if size < _SMALL:
        return hash_bytes(path.read_bytes())
    with path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as view:
        return hash_bytes(view)


@contextlib.contextmanager
def _discarded_on_failure(tmp: Path, what: str) -> Iterator[None]:
    """A failure inside removes the temp file `tmp`; a disk error becomes a one-line DataError."""
    try:
        yield
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _disk_error(exc, what) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _disk_error(exc: OSError, what: str) -> DataError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return DataError(
            f"no space left while writing {what} ({exc.strerror}); free disk space or run "
            "`nb-mlops data gc`, then snapshot again (nothing was stored, the source is untouched)"
        )
    return DataError(f"cannot write {what}: {exc.strerror or exc}")


class ObjectStore:
    """blake3-named immutable objects, written atomically and verified on read.

    Args:
        data_root: the data store folder (`cfg.data_store`); objects live in `objects/`.
    """

    def __init__(self, data_root: Path) -> None:
        self.root = data_root / "objects"
        self.tmp = data_root / "tmp"

    # --- naming -----------------------------------------------------------------------------

    def path(self, oid: str) -> Path:
        return self.root / oid[:2] / oid[2:]

    def exists(self, oid: str) -> bool:
        return self.path(oid).exists()

    def size(self, oid: str) -> int:
        return self.path(oid).stat().st_size

    def ids(self) -> Iterator[str]:
        """Every object id in the store."""
        if not self.root.is_dir():
            return
        for fan in sorted(self.root.iterdir()):
            if fan.is_dir() and len(fan.name) == 2:
                for entry in sorted(fan.iterdir()):
                    yield fan.name + entry.name

    # --- writing ----------------------------------------------------------------------------

    def _temp(self) -> Path:
        self.tmp.mkdir(parents=True, exist_ok=True)
        return self.tmp / f"{os.getpid()}-{uuid.uuid4().hex}.tmp"

    def _commit(self, tmp: Path, oid: str) -> int:
        """Move a fully written, fsynced temp file to its hash name; return the bytes added."""
        target = self.path(oid)
        if target.exists():
            tmp.unlink(missing_ok=True)
            return 0
        size = tmp.stat().st_size
        os.chmod(tmp, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, target)  # same bytes under the same name: a concurrent winner is fine
        fsync_dir(target.parent)
        return size

    def put_bytes(self, data: Any, what: str = "an object") -> tuple[str, int]:
        """Store a bytes-like object; return (object id, bytes added: 0 when already stored)."""
        oid = hash_bytes(data)
        if self.exists(oid):
            return oid, 0
        return oid, self.finish(self._write_temp(data, what), oid, what)

    def put_file(self, src: Path) -> tuple[str, int, int]:
        """Store a copy of file `src`; return (object id, size, bytes added)."""
        oid, size, staged = self.stage_file(src)
        return oid, size, self.finish(staged, oid, f"a copy of {src}")

    def stage_file(self, src: Path) -> tuple[str, int, Path | None]:
        """Hash file `src` and copy it to a temp file; return (object id, size, temp file or None
        when the object is stored already). `finish` makes the temp file durable under its name.

        The copy (`shutil.copyfile`: in-kernel `sendfile`) runs in a thread while this one hashes
        (mmap, blake3's threads): both read the same cached pages, so the pair costs about one
        copy (measured 0.6 s against 0.8-0.9 s one after the other for 1 GiB on an idle 2-core
        machine). A copy of content already stored is discarded. A stat before and after proves
        the source did not change meanwhile.
        """
        before = src.stat()
        if before.st_size < _SMALL:
            data = src.read_bytes()
            oid = hash_bytes(data)
            if self.exists(oid):
                return oid, len(data), None
            return oid, len(data), self._write_temp(data, f"a copy of {src}")
        tmp = self._temp()
        with _discarded_on_failure(tmp, f"a copy of {src}"):
            with ThreadPoolExecutor(1) as pool:
                copying = pool.submit(shutil.copyfile, src, tmp)
                try:
                    oid = hash_file(src)
                finally:
                    copying.result()
            if not _same_stat(before, src.stat()):
                raise DataError(f"{src} changed while it was being snapshotted; snapshot it again")
            if self.exists(oid):
                tmp.unlink(missing_ok=True)
                return oid, before.st_size, None
            return oid, before.st_size, tmp

    def _write_temp(self, data: Any, what: str) -> Path:
        tmp = self._temp()
        with _discarded_on_failure(tmp, what), tmp.open("wb") as fh:
            fh.write(data)
        return tmp

    def finish(self, staged: Path | None, oid: str, what: str = "an object") -> int:
        """fsync a staged temp file and rename it to `oid`; return the bytes added."""
        if staged is None:
            return 0
        with _discarded_on_failure(staged, what):
            with staged.open("rb+") as fh:
                os.fsync(fh.fileno())
            return self._commit(staged, oid)

    # --- reading ----------------------------------------------------------------------------

    def _open_checked(self, oid: str, snapshot: str) -> Path:
        target = self.path(oid)
        if not target.exists():
            raise MissingObject(
                f"object {oid} of snapshot {snapshot} is missing from {self.root}; "
                "restore it from a backup or take the snapshot again"
            )
        return target

    def read_bytes(self, oid: str, snapshot: str) -> bytes:
        """The object's bytes, re-hashed; IntegrityError names the object and the snapshot."""
        target = self._open_checked(oid, snapshot)
        data = target.read_bytes()
        if hash_bytes(data) != oid:
            raise _corrupt(oid, snapshot)
        return data

    def copy_out(self, oid: str, dest: Path, snapshot: str) -> None:
        """Write a verified, writable copy of the object to `dest` (atomically, via a temp file
        beside it), never a hardlink into the store."""
        source = self._open_checked(oid, snapshot)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(
            f".nbmlops-{uuid.uuid4().hex[:12]}.tmp"
        )  # short: dest may be 255 bytes
        try:
            shutil.copyfile(source, tmp)
            if hash_file(tmp) != oid:
                raise _corrupt(oid, snapshot)
            os.chmod(tmp, 0o644)
            os.replace(tmp, dest)
        except OSError as exc:
            raise _disk_error(exc, str(dest)) from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def check(self, oid: str) -> str | None:
        """None when the object is present and intact, else "missing" or "corrupt"."""
        target = self.path(oid)
        if not target.exists():
            return "missing"
        return None if hash_file(target) == oid else "corrupt"

    def delete(self, oid: str) -> int:
        target = self.path(oid)
        try:
            size = target.stat().st_size
            target.unlink()
        except FileNotFoundError:
            return 0
        return size


def _corrupt(oid: str, snapshot: str) -> IntegrityError:
    return IntegrityError(
        f"object {oid} of snapshot {snapshot} is corrupt (its bytes no longer match their "
        "blake3 hash); run `nb-mlops data verify --all` and take the snapshot again"
    )


def _same_stat(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_size, a.st_mtime_ns, a.st_ctime_ns, a.st_ino) == (
        b.st_size,
        b.st_mtime_ns,
        b.st_ctime_ns,
        b.st_ino,
    )
