"""The one place where server-side errors become HTTP statuses and safe JSON messages.

validation → 400, not found → 404, refused or unauthorised → 403, too large → 413, anything else
→ 500 with a generic message. Every message is scrubbed: no traceback, no path outside the root, no token, no
database URI.
"""

from __future__ import annotations

import os
import re
from typing import Any

from tornado.web import HTTPError

from nb_mlops.core.errors import (
    BuildError,
    ConfigError,
    NbMlopsError,
    ParameterError,
    RollbackError,
    SnapshotNotFound,
)
from nb_mlops.server.jobs import JobNotFound
from nb_mlops.server.paths import PathNotFound, PathRefused

__all__ = [
    "BadRequest",
    "CommandFailed",
    "NotFound",
    "PayloadTooLarge",
    "Scrubber",
    "status_and_message",
]

INTERNAL = "internal error in the nb_mlops server extension; the server log has the details"


class BadRequest(ValueError):
    """The request body or query is malformed or fails validation (400)."""


class NotFound(LookupError):
    """A model, job or notebook does not exist (404)."""


class PayloadTooLarge(ValueError):
    """A request body or one of its values is over the server's size limit (413)."""


class CommandFailed(NbMlopsError):
    """An `nb-mlops` command run by the server exited with a one-line `error:` message."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


# (exception classes, status, whether the exception's own message is shown)
_TABLE: tuple[tuple[tuple[type[BaseException], ...], int], ...] = (
    ((BadRequest, ParameterError, BuildError, ConfigError, RollbackError), 400),
    ((PathRefused,), 403),
    ((NotFound, PathNotFound, JobNotFound, SnapshotNotFound), 404),
    ((PayloadTooLarge,), 413),
)


def status_and_message(exc: BaseException | None, scrub: Scrubber) -> tuple[int, str]:
    """Map an exception raised in a handler to (HTTP status, message safe to show)."""
    if exc is None:
        return 500, INTERNAL
    if isinstance(exc, HTTPError):
        message = exc.reason or _default_reason(exc.status_code)
        if exc.status_code == 403:
            message = "forbidden: not authenticated or not authorised for nb_mlops"
        return exc.status_code, scrub(message)
    if isinstance(exc, CommandFailed):
        return exc.status, scrub(str(exc))
    for classes, status in _TABLE:
        if isinstance(exc, classes):
            return status, scrub(str(exc) or type(exc).__name__)
    if isinstance(exc, NbMlopsError):
        # Raised on purpose with a one-line message meant for the user.
        return 500, scrub(str(exc))
    return 500, INTERNAL


def _default_reason(code: int) -> str:
    from http.client import responses

    return responses.get(code, "error")


class Scrubber:
    """Rewrites text so it names no path outside the root, no token and no database URI.

    Paths inside the root become root-relative; other absolute paths become `<path>`.
    """

    _URI = re.compile(r"\b(?:sqlite|postgresql|postgres|mysql|mssql|file)(?:\+\w+)?://\S*", re.I)
    _ABS = re.compile(r"(?<![\w.:/])/(?:[^\s'\"<>()\[\],;:]+)")
    _TOKEN = re.compile(r"(token[=: ]+)[A-Za-z0-9_\-]{8,}", re.I)

    def __init__(self, root: str | os.PathLike[str], secrets: list[str] | None = None) -> None:
        self.roots = sorted({str(root), os.path.realpath(root)}, key=len, reverse=True)
        self.secrets = [s for s in (secrets or []) if s and len(s) >= 4]

    def __call__(self, text: Any) -> str:
        out = str(text)
        for secret in self.secrets:
            out = out.replace(secret, "<secret>")
        out = self._TOKEN.sub(r"\1<secret>", out)
        out = self._URI.sub("<uri>", out)
        out = self._ABS.sub(self._path, out)
        return out

    def _path(self, match: re.Match[str]) -> str:
        path = match.group(0)
        for root in self.roots:
            if path == root:
                return "."
            if path.startswith(root + "/"):
                return path[len(root) + 1 :]
        return "<path>"
