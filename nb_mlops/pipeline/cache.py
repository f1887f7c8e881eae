"""The step cache: a step is skipped when its code, parameter values, input value digests and
environment fingerprint equal those of an earlier successful run whose outputs still verify and
whose files read (recorded at run time) are unchanged.

Entries live in `.nb_mlops/cache/steps/<key>.json` and point at that run's value files (hashed
again with blake3 before reuse; files too large to hash on every save are checked by stat). A
file read is unchanged when its stat (size, mtime, ctime, inode) is, or else its content digest.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import site
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

from nb_mlops.core.config import Config
from nb_mlops.core.files import write_atomic

__all__ = [
    "cache_key",
    "changed_reads",
    "env_fingerprint",
    "file_digest",
    "link_values",
    "lookup",
    "remember",
    "verify_outputs",
]


@lru_cache(maxsize=1)
def env_fingerprint() -> str:
    """Python, platform and the installed distributions (names and versions, from site-packages)."""
    h = hashlib.sha256()
    h.update(f"{sys.version}\0{sys.executable}\0{sys.platform}\n".encode())
    folders = {*site.getsitepackages(), site.getusersitepackages(), *sys.path}
    for folder in sorted(f for f in folders if f and os.path.isdir(f)):
        try:
            names = sorted(n for n in os.listdir(folder) if n.endswith((".dist-info", ".egg-info")))
        except OSError:
            continue
        h.update(f"{folder}\0{','.join(names)}\n".encode())
    return h.hexdigest()


def cache_key(
    code_sha256: str,
    params: dict[str, Any],
    inputs: dict[str, str],
    env: str,
    data: dict[str, str] | None = None,
) -> str:
    """The key of one step execution: sha256 over its code, parameters, input digests, environment
    and the run's data pins (`data`: a re-pointed run never meets a step computed on other data;
    without pins the key is what it always was).

    Key order counts: a step sees a dict parameter in the order it was given (parameters come in
    declaration order, inputs sorted by name, so equal runs still meet).
    """
    fields: dict[str, Any] = {"code": code_sha256, "params": params, "inputs": inputs, "env": env}
    if data:
        fields["data"] = dict(sorted(data.items()))
    payload = json.dumps(fields, ensure_ascii=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def file_digest(path: Path) -> str:
    """blake3 of a file's bytes (memory-mapped for large files)."""
    from nb_mlops.pipeline.reads import file_digest as digest

    return digest(path)


def _same_stat(path: Path, entry: dict[str, Any]) -> bool:
    st = path.stat()
    return (st.st_size, st.st_mtime_ns, st.st_ino) == (
        entry.get("size"),
        entry.get("mtime_ns"),
        entry.get("ino"),
    )


def verify_outputs(values_dir: Path, marker: dict[str, Any]) -> bool:
    """True when every value file named by a completion marker exists and still holds what the
    step wrote (its digest, or for files too large to hash on save, its stat)."""
    files = marker.get("files")
    if files is None:
        return False  # written before a step's values were saved together: not loadable now
    try:
        for name, entry in files.items():
            path = values_dir / name
            if entry.get("digest"):
                if file_digest(path) != entry["digest"]:
                    return False
            elif not _same_stat(path, entry):
                return False
        return True
    except OSError:
        return False


def changed_reads(marker: dict[str, Any]) -> list[str]:
    """The files a step read (as its marker records them) that are gone or changed since."""
    from nb_mlops.pipeline.reads import stat_key

    changed = []
    for path, entry in marker.get("reads", {}).items():
        try:
            if stat_key(os.stat(path)) == entry.get("stat"):
                continue
            digest = entry.get("digest")
            if digest and file_digest(Path(path)) == digest:
                continue
        except OSError:
            pass
        changed.append(path)
    return changed


def newer_snapshots(cfg: Config, marker: dict[str, Any]) -> list[str]:
    """The snapshots a step restored by name (latest version, as its marker records them) that
    have a newer version since: the step would read other data now."""
    restored = marker.get("restores") or {}
    if not restored:
        return []
    from nb_mlops.core.data import pending
    from nb_mlops.core.data.refs import open_store

    pending.wait_all()
    store = open_store(cfg)
    return [name for name, version in sorted(restored.items()) if store.latest(name) != version]


def link_values(src: Path, dst: Path, marker: dict[str, Any]) -> None:
    """Make the value files of a cached step (in `src`) those of this run (in `dst`): hard links
    (value files are never edited), copies where links are impossible."""
    names = set(marker.get("files", {}))
    dst.mkdir(parents=True, exist_ok=True)
    for name in sorted(names):
        target = dst / name
        target.unlink(missing_ok=True)
        try:
            os.link(src / name, target)
        except OSError:
            shutil.copy2(src / name, target)


def _entry_path(cfg: Config, key: str) -> Path:
    return cfg.store_dir / "cache" / "steps" / f"{key}.json"


def lookup(cfg: Config, key: str) -> dict[str, Any] | None:
    """The cache entry for `key` if its outputs still verify and the files the step read are
    unchanged, else None."""
    path = _entry_path(cfg, key)
    try:
        entry: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    marker = entry.get("marker", {})
    if changed_reads(marker) or newer_snapshots(cfg, marker):
        return None
    if not verify_outputs(Path(entry["values_dir"]), marker):
        return None
    return entry


def remember(cfg: Config, key: str, entry: dict[str, Any]) -> None:
    """Store a cache entry atomically (last writer wins: both describe equal results)."""
    path = _entry_path(cfg, key)
    write_atomic(path, json.dumps(entry, sort_keys=True).encode())
