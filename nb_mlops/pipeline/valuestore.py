"""Where a pipeline run's inter-step values live when its steps run on other machines.

By default a step's values stay in the run folder (`.nb_mlops/runs/<pipeline>/<run>/values/<step>`),
which every step of a local run reads directly. Dask workers on other machines cannot see that
folder: their steps' values go through the project's shared data store instead (a shared folder or
an `s3://bucket/prefix`), under `runs/<run_id>/values/<step>/<file>`. Keys are plain (one run, one
writer per step); every read is checked against the digests and sizes of the producing step's
completion marker, so bytes changed in the shared store are refused rather than loaded.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from nb_mlops.core.errors import IntegrityError, PipelineError

__all__ = ["ValueStore", "shared_location"]


def shared_location(settings: dict[str, Any], root: Path) -> str | None:
    """The project's data store when other machines can reach it: an object-store URL, or an
    absolute folder outside the project's `.nb_mlops` (a mounted share); else None."""
    value = str(settings.get("data_store", "") or "")
    if "://" in value:
        return value.rstrip("/")
    if not value or not os.path.isabs(value):
        return None
    store_dir = (root / ".nb_mlops").resolve()
    folder = Path(value).resolve()
    if folder == store_dir or store_dir in folder.parents:
        return None
    return str(folder)


class ValueStore:
    """The values of one run's steps under `runs/<run_id>/values/` of a shared data store."""

    def __init__(self, location: str, settings: dict[str, Any], run_id: str) -> None:
        self.location = location
        self.prefix = f"runs/{run_id}/values"
        self.fs: Any = None
        if "://" in location:
            from nb_mlops.core.config import Config
            from nb_mlops.core.data.remote import filesystem

            cfg = Config(Path("."), None, "", "", "", None, settings={**settings})
            self.fs = filesystem(cfg, location.partition("://")[0])

    def _key(self, step: str, name: str) -> str:
        if self.fs is not None:
            base = self.location.partition("://")[2].strip("/")
            return f"{base}/{self.prefix}/{step}/{name}"
        return os.path.join(self.location, self.prefix, step, name)

    def has(self, step: str, marker: dict[str, Any]) -> bool:
        """Whether every file of the step's values is in the store (sizes only)."""
        for name, entry in _files(marker).items():
            key = self._key(step, name)
            try:
                size = self.fs.size(key) if self.fs is not None else os.path.getsize(key)
            except (FileNotFoundError, OSError):
                return False
            if size != entry.get("size"):
                return False
        return True

    def put(self, step: str, folder: Path, marker: dict[str, Any]) -> None:
        """Copy the step's value files (those its marker lists) from `folder` into the store."""
        for name in _files(marker):
            key = self._key(step, name)
            if self.fs is not None:
                self.fs.put_file(str(folder / name), key)
                continue
            os.makedirs(os.path.dirname(key), exist_ok=True)
            tmp = f"{key}.{uuid.uuid4().hex}.tmp"
            shutil.copyfile(folder / name, tmp)
            os.replace(tmp, key)

    def get(self, step: str, folder: Path, marker: dict[str, Any]) -> None:
        """Copy the step's value files into `folder`, each checked against its marker entry."""
        folder.mkdir(parents=True, exist_ok=True)
        for name, entry in _files(marker).items():
            key, target = self._key(step, name), folder / name
            try:
                if self.fs is not None:
                    self.fs.get_file(key, str(target))
                else:
                    shutil.copyfile(key, target)
            except FileNotFoundError:
                raise PipelineError(
                    f"the values of step {step!r} are missing from the data store ({key})"
                ) from None
            _verify(step, key, target, entry)


def _files(marker: dict[str, Any]) -> dict[str, dict[str, Any]]:
    files: dict[str, dict[str, Any]] = marker.get("files") or {}
    return files


def _verify(step: str, key: str, path: Path, entry: dict[str, Any]) -> None:
    from nb_mlops.pipeline.reads import file_digest

    size = path.stat().st_size
    digest = entry.get("digest")
    if size == entry.get("size") and (digest is None or file_digest(path) == digest):
        return
    path.unlink(missing_ok=True)
    raise IntegrityError(
        f"the values of step {step!r} in the data store ({key}) do not match what the step "
        "saved (changed after it was written); nothing was loaded, run the step again"
    )
