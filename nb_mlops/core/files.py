"""Files written whole: a reader, or a process killed mid-write, sees the old file or the new one,
never half of either (`write_atomic`), and JSONL journals appended one whole, fsynced line at a
time (`append_line`).
"""

from __future__ import annotations

import contextlib
import os
import threading
import uuid
from pathlib import Path

__all__ = ["append_fd", "append_line", "fsync_dir", "write_atomic"]


def fsync_dir(path: Path) -> None:
    """Make a rename or a new file inside `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, *, durable: bool = False) -> None:
    """Write `data` to `path` through a temp file in the same folder and a rename.

    Args:
        path: the file to (re)place; missing parent folders are made.
        data: its whole content.
        durable: fsync the file and the rename, so the content survives a power loss too (a
            cache or a status file a later run recomputes does not need it).

    Raises:
        OSError: the write failed; no temp file is left behind.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # unique per process and thread; the name is cut so a long `path.name` still fits
    tmp = path.with_name(
        f".{path.name[:160]}.{os.getpid()}.{threading.get_ident()}.{uuid.uuid4().hex[:8]}.tmp"
    )
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)


def append_line(path: Path, line: bytes) -> None:
    """Append one line (ending in a newline) to a journal and fsync it.

    A killed writer can leave a torn last line: the new one then starts on a fresh line, so a
    reader skipping lines it cannot parse loses only the torn one.
    """
    new = not path.exists()
    if new:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size:
            with path.open("rb") as fh:
                fh.seek(size - 1)
                if fh.read(1) != b"\n":
                    line = b"\n" + line
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
    if new:
        with contextlib.suppress(OSError):  # the line itself is durable; some filesystems refuse
            fsync_dir(path.parent)


def append_fd(fd: int, line: bytes) -> None:
    """Append one whole line (ending in a newline) to a journal this process keeps open with
    `O_APPEND` and alone writes to, and fsync it: two system calls, for a cell's critical path."""
    view = memoryview(line)
    while view:
        view = view[os.write(fd, view) :]
    os.fsync(fd)
