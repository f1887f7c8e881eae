"""The one place where server-side errors become HTTP statuses and safe JSON messages.

`STATUS` is the table: the first row whose classes match the exception gives the status, from
the most specific classes to the broadest. Validation → 400, refused → 403, not found → 404, a
blocked promotion or an approval already decided or stale → 409, too large → 413, a tracking server that does not answer → 503; any
other `NbMlopsError` (raised on purpose, one line meant for the user) → 500 with its message;
anything else → 500 with a generic message. Every message is scrubbed: no traceback, no path
outside the root, no token, no database URI.
"""

from __future__ import annotations

import os
import re
from typing import Any

from tornado.web import HTTPError

from nb_mlops.core.errors import (
    ApprovalError,
    ConfigError,
    GatesBlocked,
    ModelNotFound,
    NbMlopsError,
    PermissionDenied,
    PipelineError,
    PromotionError,
    RequestNotFound,
    SnapshotNotFound,
    StoreUnavailable,
)
from nb_mlops.server.jobs import JobNotFound
from nb_mlops.server.paths import PathNotFound, PathRefused

__all__ = [
    "BadRequest",
    "NotFound",
    "PayloadTooLarge",
    "STATUS",
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


# (exception classes, HTTP status); the first matching row wins, so subclasses come first
STATUS: tuple[tuple[tuple[type[BaseException], ...], int], ...] = (
    ((PathRefused, PermissionDenied), 403),
    ((NotFound, PathNotFound, JobNotFound, SnapshotNotFound, ModelNotFound, RequestNotFound), 404),
    ((GatesBlocked, ApprovalError), 409),
    ((PayloadTooLarge,), 413),
    ((StoreUnavailable,), 503),
    ((BadRequest, ConfigError, PipelineError, PromotionError), 400),
    ((NbMlopsError,), 500),
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
    for classes, status in STATUS:
        if isinstance(exc, classes):
            # raised on purpose: the message is meant for the user
            return status, scrub(str(exc) or type(exc).__name__)
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
