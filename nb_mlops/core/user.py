"""Who acts: the one answer runs, pipeline runs and the promotion journal record."""

from __future__ import annotations

import functools
import getpass
import os

__all__ = ["USER_VARIABLE", "current_user"]

USER_VARIABLE = "NB_MLOPS_USER"
"""Set by the Jupyter server to its authenticated user for the kernels and runners it starts."""


def current_user() -> str:
    """`NB_MLOPS_USER` when set, else the operating system's user name (`uid-<n>` when the system
    has no name for it, as in some containers)."""
    user = os.environ.get(USER_VARIABLE)
    if user:
        return user
    names = (os.environ.get(k) for k in ("LOGNAME", "USER", "LNAME", "USERNAME"))
    return next((name for name in names if name), None) or _os_user(os.getuid())


@functools.cache
def _os_user(uid: int) -> str:
    """The passwd name of `uid`, looked up once (a lookup may read /etc/passwd: milliseconds)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry
        return f"uid-{uid}"
