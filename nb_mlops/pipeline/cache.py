"""The step cache: a step is skipped when its code, parameter values, input value digests and
environment fingerprint equal those of an earlier successful run whose outputs still verify.

Entries live in `.nb_mlops/cache/steps/<key>.json` and point at that run's value files (hashed
again with blake3 before reuse).
"""

from __future__ import annotations

import hashlib
import json
import os
import site
import sys
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

from nb_mlops.core.config import Config

__all__ = ["cache_key", "env_fingerprint", "file_digest", "lookup", "remember", "verify_outputs"]


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


def cache_key(code_sha256: str, params: dict[str, Any], inputs: dict[str, str], env: str) -> str:
    """The key of one step execution: sha256 over its code, parameters, input digests, environment.

    Key order counts: a step sees a dict parameter in the order it was given (parameters come in
    declaration order, inputs sorted by name, so equal runs still meet).
    """
    payload = json.dumps(
        {"code": code_sha256, "params": params, "inputs": inputs, "env": env},
        ensure_ascii=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def file_digest(path: Path) -> str:
    """blake3 of a file's bytes (memory-mapped for large files)."""
    from blake3 import blake3

    hasher = blake3(max_threads=blake3.AUTO) if path.stat().st_size > 1 << 24 else blake3()
    if hasattr(hasher, "update_mmap"):
        hasher.update_mmap(str(path))
    else:  # pragma: no cover - older blake3
        hasher.update(path.read_bytes())
    return str(hasher.hexdigest())


def verify_outputs(values_dir: Path, marker: dict[str, Any]) -> bool:
    """True when every output file named by a completion marker exists with its recorded digest."""
    try:
        return all(
            file_digest(values_dir / entry["file"]) == entry["digest"]
            for entry in marker.get("outputs", {}).values()
        )
    except OSError:
        return False


def _entry_path(cfg: Config, key: str) -> Path:
    return cfg.store_dir / "cache" / "steps" / f"{key}.json"


def lookup(cfg: Config, key: str) -> dict[str, Any] | None:
    """The cache entry for `key` if its outputs still verify, else None."""
    path = _entry_path(cfg, key)
    try:
        entry: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not verify_outputs(Path(entry["values_dir"]), entry.get("marker", {})):
        return None
    return entry


def remember(cfg: Config, key: str, entry: dict[str, Any]) -> None:
    """Store a cache entry atomically (last writer wins: both describe equal results)."""
    path = _entry_path(cfg, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(entry, sort_keys=True))
    os.replace(tmp, path)
