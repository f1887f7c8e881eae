"""The Python environment of this process: interpreter, platform, installed distributions.

Captured once per process (a kernel session): listing distributions costs tens of milliseconds.
"""

from __future__ import annotations

import functools
import hashlib
import json
import platform
import sys
from importlib import metadata
from typing import Any

__all__ = ["environment", "pip_requirements", "requirements_text"]


@functools.cache
def environment() -> dict[str, Any]:
    """Python version, implementation, platform and `{distribution: version}` (sorted), plus
    `sha256` over all of it (equal environments hash equal)."""
    dists: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            dists.setdefault(name, dist.version)
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "executable": sys.executable,
        "distributions": dict(sorted(dists.items(), key=lambda kv: kv[0].lower())),
    }
    env["sha256"] = hashlib.sha256(json.dumps(env, sort_keys=True).encode()).hexdigest()
    return env


def requirements_text(env: dict[str, Any]) -> str:
    """`pip freeze`-style lines for the captured distributions."""
    return "".join(f"{name}=={version}\n" for name, version in env["distributions"].items())


def pip_requirements(env: dict[str, Any], *names: str) -> list[str]:
    """Pinned requirements for the given distributions that are installed (others skipped)."""
    lower = {k.lower().replace("_", "-"): (k, v) for k, v in env["distributions"].items()}
    found = []
    for name in names:
        hit = lower.get(name.lower().replace("_", "-"))
        if hit:
            found.append(f"{hit[0]}=={hit[1]}")
    return found
