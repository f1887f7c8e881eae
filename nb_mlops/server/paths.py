"""Turn a notebook path sent by the browser into a real file inside the server's root.

The path is resolved with `realpath` and checked with `commonpath` (never `startswith`, which lets
`/root` accept `/rootx`). Absolute paths, `..`, hidden parts, URL-encoded dots and symlinks that
leave the root are refused before any file is opened.
"""

from __future__ import annotations

import os
import re
import unicodedata
from pathlib import Path

__all__ = ["PathRefused", "PathNotFound", "resolve_notebook", "relative_to_root"]

_PERCENT = re.compile(r"%[0-9a-fA-F]{2}")


class PathRefused(ValueError):
    """The path names something the server must not reach (mapped to 403)."""


class PathNotFound(LookupError):
    """The path is well formed but no such notebook exists inside the root (mapped to 404)."""


def resolve_notebook(root_dir: str | os.PathLike[str], api_path: str) -> Path:
    """Resolve a Contents-API style path (`dir/name.ipynb`) to a notebook file under `root_dir`.

    Args:
        root_dir: the server's root folder (`ServerApp.root_dir`).
        api_path: the path as sent by the client, relative to the root, `/`-separated.

    Returns:
        The real path of the notebook (symlinks resolved), inside the root.

    Raises:
        PathRefused: absolute, `..`, hidden, percent-encoded, NUL-carrying or escaping paths.
        PathNotFound: no notebook there.

    Example:
        >>> resolve_notebook("/srv/project", "notebooks/train.ipynb")  # doctest: +SKIP
        PosixPath('/srv/project/notebooks/train.ipynb')
    """
    if not isinstance(api_path, str) or not api_path.strip():
        raise PathRefused("a notebook path is required, e.g. path=notebooks/train.ipynb")
    text = unicodedata.normalize("NFC", api_path)
    if "\x00" in text or "\\" in text:
        raise PathRefused("the notebook path holds a forbidden character")
    if _PERCENT.search(text):
        # The query string was already decoded once: a second layer of encoding is an attack.
        raise PathRefused("the notebook path must not be percent-encoded twice")
    if text.startswith("/") or os.path.isabs(text) or re.match(r"^[A-Za-z]:", text):
        raise PathRefused("the notebook path must be relative to the server root")
    parts = [part for part in text.split("/") if part not in ("", ".")]
    if not parts:
        raise PathRefused("the notebook path is empty")
    for part in parts:
        if part == "..":
            raise PathRefused("the notebook path must not contain '..'")
        if part.startswith("."):
            raise PathRefused("hidden files and folders are not served")
    if not parts[-1].endswith(".ipynb"):
        raise PathRefused("only .ipynb notebooks can be promoted")

    root = os.path.realpath(root_dir)
    candidate = os.path.realpath(os.path.join(root, *parts))
    if os.path.commonpath([root, candidate]) != root:
        raise PathRefused("the notebook path leads outside the server root")
    # A symlink inside the root may point at a hidden file inside the root: refuse that too.
    inner = os.path.relpath(candidate, root).split(os.sep)
    if any(part.startswith(".") for part in inner):
        raise PathRefused("hidden files and folders are not served")
    if not os.path.isfile(candidate):
        raise PathNotFound(f"no notebook at {'/'.join(parts)}")
    return Path(candidate)


def relative_to_root(root_dir: str | os.PathLike[str], path: str | os.PathLike[str]) -> str:
    """The `/`-separated path of `path` relative to the root (for messages and job records)."""
    return Path(os.path.relpath(os.path.realpath(path), os.path.realpath(root_dir))).as_posix()
