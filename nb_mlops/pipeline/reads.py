"""The files a step reads, recorded at run time so the step cache can tell when they change.

An audit hook (`sys.addaudithook`, event `open`) notes each file a step kernel opens for reading,
with its stat at that moment, unless the step created or truncated it first, or it belongs to the
interpreter, the installed packages, Jupyter's own folders, the nb_mlops store or a temporary
folder. At the end of the step each file is hashed (blake3) if it did not change meanwhile.
Files opened by native code (a C++ CSV reader, for instance) raise no audit event and are not seen.
"""

from __future__ import annotations

import os
import site
import stat
import sys
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["Recorder", "file_digest", "stat_key"]

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR
_TRUNCATING = os.O_TRUNC | os.O_CREAT


def stat_key(st: os.stat_result) -> list[int]:
    """What says a file is unchanged without reading it: size, mtime, ctime and inode."""
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def file_digest(path: str | os.PathLike[str]) -> str:
    """blake3 of a file's bytes (memory-mapped, several threads for large files)."""
    from blake3 import blake3

    size = os.stat(path).st_size
    hasher = blake3(max_threads=blake3.AUTO) if size > 1 << 24 else blake3()
    if size and hasattr(hasher, "update_mmap"):
        hasher.update_mmap(str(path))
    else:
        with open(path, "rb") as fh:
            hasher.update(fh.read())
    return str(hasher.hexdigest())


def _ignored_roots(extra: list[str]) -> tuple[str, ...]:
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, tempfile.gettempdir(), "/proc", "/sys"}
    roots |= {"/dev", "/usr/lib", "/usr/share", "/etc"}
    roots |= set(site.getsitepackages()) | {site.getusersitepackages()}
    home = Path.home()
    roots |= {str(home / d) for d in (".ipython", ".jupyter", ".cache", ".config", ".local")}
    for var in ("JUPYTER_RUNTIME_DIR", "JUPYTER_DATA_DIR", "JUPYTER_CONFIG_DIR", "IPYTHONDIR"):
        if os.environ.get(var):
            roots.add(os.environ[var])
    roots |= {e for e in extra if e}
    return tuple(sorted(os.path.join(os.path.realpath(r), "") for r in roots if r))


class Recorder:
    """Collects the files a step reads (one per kernel: the audit hook cannot be removed)."""

    def __init__(self) -> None:
        self.reads: dict[str, list[int]] = {}
        self.written: set[str] = set()
        self.ignore: tuple[str, ...] = ()
        self.active = False

    def start(self, ignore: list[str]) -> None:
        """Begin a step: forget earlier ones, ignore files below the given folders too."""
        self.reads.clear()
        self.written.clear()
        self.ignore = _ignored_roots(ignore)
        if not self.active:
            sys.addaudithook(self._hook)
            self.active = True

    def _hook(self, event: str, args: tuple[Any, ...]) -> None:
        if event != "open":
            return
        path, mode, flags = args
        if isinstance(path, int) or path is None:
            return
        try:
            full = os.path.realpath(os.fsdecode(path))
        except (TypeError, ValueError):
            return
        if full.startswith(self.ignore):
            return
        if isinstance(mode, str):
            writes = any(c in mode for c in "wax+")
            creates = "w" in mode or "x" in mode
            reads = "r" in mode or "+" in mode or "a" in mode
        else:
            flags = flags or 0
            writes = bool(flags & _WRITE_FLAGS)
            creates = bool(flags & _TRUNCATING) and writes
            reads = not (flags & os.O_WRONLY) or bool(flags & os.O_APPEND)
        if creates and full not in self.reads:
            self.written.add(full)
            return
        if not reads or full in self.written or full in self.reads:
            return
        try:
            st = os.stat(full)
        except OSError:
            return
        if stat.S_ISREG(st.st_mode):
            self.reads[full] = stat_key(st)
        del writes

    def collect(self) -> dict[str, dict[str, Any]]:
        """Each file read: its stat when first opened and its digest (None when it changed
        during the step: a cache entry then never matches)."""
        found: dict[str, dict[str, Any]] = {}
        for path, key in sorted(self.reads.items()):
            try:
                now = stat_key(os.stat(path))
                digest = file_digest(path) if now == key else None
            except OSError:
                now, digest = key, None
            found[path] = {"stat": key, "digest": digest}
        return found
