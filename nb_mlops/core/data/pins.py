"""Data pins: which snapshot version `restore(NAME)` reads inside a re-pointed pipeline step.

A pipeline run given `data={"train": "batch@v3"}` makes each step's `restore("train")` (and
`%restore train`) read `batch@v3` instead of the latest `train`. The runner sends the pins in the
step's context; the step kernel's setup puts them here with `install`, and `restore` asks
`pinned`. This module is the hook between the two, so core never imports the pipeline package.
A module-level setting rather than an environment variable: it is set once per step kernel, is
not inherited by the processes a step starts, and a notebook session never carries one by chance.
Only restores by name are re-pointed: `NAME@vN` and `run_id=` restores read what they name.

The other half of the hook: an unpinned restore by name reads whatever version is latest, so
`restore` notes here which version it read (`note_latest`); the step kernel puts that into its
completion marker and the step cache refuses the step once a newer version of a name exists.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from nb_mlops.core.config import Config
from nb_mlops.core.data.names import check_name, format_ref, parse_ref
from nb_mlops.core.errors import DataError, SnapshotNotFound

__all__ = [
    "check_pins",
    "dumps",
    "install",
    "latest_reads",
    "note_latest",
    "parse_pin",
    "parse_pins",
    "pinned",
    "pins_json",
]

_PINS: dict[str, tuple[str, int]] = {}
_LATEST: dict[str, int] = {}  # restores by name in this process → the version they read
PIN_SYNTAX = "NAME=OTHER@vN or NAME@vN"


def parse_pin(text: str) -> tuple[str, str]:
    """`NAME=OTHER@vN` → (NAME, OTHER@vN); `NAME@vN` → (NAME, NAME@vN).

    Raises:
        DataError: not that form (the message names the text and the form).
    """
    name, sep, ref = text.partition("=")
    if not sep:
        name, ref = text.partition("@")[0], text
    try:
        parse_pins({name: ref})
    except DataError as exc:
        raise DataError(f"{str(exc).rstrip('.')} (--data takes {PIN_SYNTAX})") from None
    return name.strip(), ref.strip()


def parse_pins(data: Mapping[str, str] | None) -> dict[str, tuple[str, int]]:
    """Validate pins: snapshot name → `OTHER@vN` (a version is required: a pin is exact).

    Raises:
        DataError: a bad name or reference, or a reference without a version.
    """
    found: dict[str, tuple[str, int]] = {}
    for name, ref in (data or {}).items():
        try:
            check_name(name.strip() if isinstance(name, str) else name)
            target, version = parse_ref(ref)
        except DataError as exc:
            raise DataError(f"data pin {name}={ref}: {exc}") from None
        if version is None:
            raise DataError(f"data pin {name}={ref}: name a version, e.g. {target}@v1")
        found[name.strip()] = (target, version)
    return found


def pins_json(data: Mapping[str, str] | None) -> dict[str, str]:
    """The pins in their canonical form, NAME → OTHER@vN, sorted (what runs record and hash)."""
    return {name: format_ref(*ref) for name, ref in sorted(parse_pins(data).items())}


def check_pins(data: Mapping[str, str] | None, cfg: Config) -> None:
    """Fail when a pin names a snapshot or version the store does not hold.

    Raises:
        SnapshotNotFound: one line naming the pin, what is missing and what to do.
    """
    pins = parse_pins(data)
    if not pins:
        return
    from nb_mlops.core.data import pending
    from nb_mlops.core.data.refs import open_store

    pending.wait_all()
    store = open_store(cfg)
    for name, (target, version) in pins.items():
        try:
            store.manifest(target, version)
        except SnapshotNotFound as exc:
            raise SnapshotNotFound(
                f"data pin {name}={format_ref(target, version)}: {exc}; pin a stored version "
                f"(`nb-mlops data list {target}`)"
            ) from None


def install(data: Mapping[str, str] | None) -> None:
    """Make this process's restores by name read the pinned versions (a step kernel's setup)."""
    pins = parse_pins(data)
    _PINS.clear()
    _PINS.update(pins)


def pinned(name: str) -> tuple[str, int] | None:
    """(snapshot name, version) that `restore(name)` reads here, or None when not pinned."""
    return _PINS.get(name)


def note_latest(name: str, version: int) -> None:
    """An unpinned `restore(name)` read `version`, the latest at that moment."""
    _LATEST[name] = version


def latest_reads() -> dict[str, int]:
    """Each name this process restored by name (unpinned) → the version it read."""
    return dict(_LATEST)


def dumps(data: Mapping[str, str] | None) -> str:
    """The pins as the JSON text a run records (tag `nb_mlops.data_pins`)."""
    return json.dumps(pins_json(data), sort_keys=True)
