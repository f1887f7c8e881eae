"""Run a child process on a small or read-only filesystem the test creates.

A private mount namespace (`unshare --user --map-root-user --mount`) lets an unprivileged test mount
a size-limited tmpfs (a disk that fills up) or bind a folder read-only; the mounts vanish with the
child, so nothing leaks onto the machine. Where namespaces are not permitted, `unavailable()` says
why and the caller skips with that reason.
"""

from __future__ import annotations

import functools
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["Mount", "run", "unavailable"]


class Mount:
    """A mount made inside the child's namespace before it runs."""

    def __init__(self, kind: str, path: Path, size_kb: int = 0) -> None:
        self.kind, self.path, self.size_kb = kind, path, size_kb

    @classmethod
    def read_only(cls, path: Path) -> Mount:
        """Bind `path` onto itself, read-only."""
        return cls("ro", path)

    @classmethod
    def small_disk(cls, path: Path, size_kb: int) -> Mount:
        """A tmpfs of `size_kb` KiB on `path`, holding a copy of what `path` held before."""
        return cls("tmpfs", path, size_kb)

    def shell(self) -> str:
        p = shlex.quote(str(self.path))
        if self.kind == "ro":
            return f"mount --bind {p} {p} && mount -o remount,bind,ro {p}"
        keep = shlex.quote(str(self.path) + ".before")
        # the copy made before mounting is put back onto the small disk, then removed
        return (
            f"cp -a {p} {keep} && mount -t tmpfs -o size={self.size_kb}k tmpfs {p} && "
            f"cp -a {keep}/. {p}/ && rm -rf {keep}"
        )


@functools.cache
def unavailable() -> str | None:
    """Why mounts in a private namespace cannot be made here, or None when they can."""
    if not sys.platform.startswith("linux") or shutil.which("unshare") is None:
        return "needs Linux and util-linux `unshare`"
    probe = subprocess.run(
        [
            "unshare",
            "--user",
            "--map-root-user",
            "--mount",
            "sh",
            "-c",
            "mount -t tmpfs -o size=64k tmpfs /mnt 2>&1 || mount -t tmpfs -o size=64k tmpfs /tmp",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if probe.returncode != 0:
        return f"mount namespaces are not permitted here: {probe.stderr.strip()[:200]}"
    return None


def run(
    argv: Sequence[str],
    mounts: Sequence[Mount],
    *,
    cwd: Path,
    env: dict[str, str] | None = None,
    keep: Path | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run `argv` inside a private mount namespace with `mounts` made first.

    Args:
        keep: a folder whose content (on the small disk) is copied back to `<keep>.after` once
            the child exits, for the test to inspect (the tmpfs vanishes with the namespace).
    """
    steps = [m.shell() for m in mounts]
    command = " ".join(shlex.quote(a) for a in argv)
    tail = ""
    if keep is not None:
        after = shlex.quote(str(keep) + ".after")
        tail = f"; rc=$?; mkdir -p {after} && cp -a {shlex.quote(str(keep))}/. {after}/; exit $rc"
    script = " && ".join(steps) + f" && {{ {command}{tail}; }}"
    return subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script],
        cwd=cwd,
        env=env if env is not None else dict(os.environ),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
