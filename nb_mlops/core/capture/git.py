"""The git state of the project root: commit, branch and whether the work tree is dirty."""

from __future__ import annotations

import subprocess
from pathlib import Path

__all__ = ["git_state"]


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_state(root: Path) -> dict[str, str] | None:
    """`{"commit", "branch", "dirty"}` when `root` is inside a git work tree with a commit, else None."""
    commit = _git(root, "rev-parse", "HEAD")
    if not commit:
        return None
    status = _git(root, "status", "--porcelain", "--untracked-files=no")
    return {
        "commit": commit,
        "branch": _git(root, "rev-parse", "--abbrev-ref", "HEAD") or "",
        "dirty": "true" if status else "false",
    }
