"""Snapshot names and references: `NAME`, `NAME@vN`, and the rule names must follow.

Names become folder names under `.nb_mlops/data/refs/`, so the rule keeps them to one portable path
component: no separators, no leading dot, at most 128 characters.
"""

from __future__ import annotations

import re

from nb_mlops.core.errors import DataError

__all__ = ["NAME_RULE", "check_name", "parse_ref", "suggest_name", "format_ref"]

NAME_RULE = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
_NAME = re.compile(NAME_RULE)
_REF = re.compile(r"^(?P<name>.+?)(?:@v?(?P<version>\d+))?\Z")


def check_name(name: object) -> str:
    """Return `name` if it is a valid snapshot name, else raise DataError quoting the rule."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name.endswith("."):
        raise DataError(
            f"invalid snapshot name {name!r}: names must match {NAME_RULE} (and not end with '.')"
        )
    return name


def parse_ref(ref: str, version: int | None = None) -> tuple[str, int | None]:
    """Split `NAME@vN` (or `NAME@N`) into (name, version); `version` wins when both are given.

    Example:
        >>> parse_ref("train@v3")
        ('train', 3)
    """
    if not isinstance(ref, str):
        raise DataError(f"a snapshot reference must be a string like 'train@v3', got {ref!r}")
    match = _REF.fullmatch(ref.strip())
    if match is None:  # pragma: no cover - the pattern matches any non-empty string
        raise DataError(f"invalid snapshot reference {ref!r}: use NAME or NAME@vN")
    name = check_name(match["name"])
    found = int(match["version"]) if match["version"] is not None else None
    if version is not None:
        if found is not None and found != version:
            raise DataError(f"{ref!r} names version {found} but version={version} was passed")
        found = version
    if found is not None and found < 1:
        raise DataError(f"invalid version in {ref!r}: versions start at 1")
    return name, found


def suggest_name(raw: str) -> str:
    """A valid name derived from a variable name or a file name (invalid characters become '_')."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "_", raw).lstrip("._-")[:128].rstrip(".")
    return cleaned or "data"


def format_ref(name: str, version: int) -> str:
    return f"{name}@v{version}"
