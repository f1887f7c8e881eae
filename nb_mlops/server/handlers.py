"""REST handlers under `/nb-mlops/api/`: notebook description, jobs, model history and rollback,
monitoring (the drift history) and retraining.

`app.NbMlopsApp` registers `ROUTES` and puts the shared `ServerState` in the web app's settings.

Every handler is an `APIHandler` whose verbs carry `@tornado.web.authenticated` and `@authorized`
(resource `nb_mlops`; acts on the champion ask for `nb_mlops:promote`, approving or rejecting a
promotion request for `nb_mlops:approve`, so a deployment's own Authorizer decides who may). Errors are mapped to statuses in one place (`errors.STATUS`, via
`write_error`). GET handlers never change state. Model history and rollback call
`nb_mlops.core.promotion` in the server process; slow work (notebook parsing, MLflow queries,
journal reads and writes) runs in a thread, off the event loop. Request bodies are streamed and
kept only up to a size limit (413 beyond it, as for a parameter value over its own limit); names
are checked with full matches.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import tornado.web
from jupyter_core.utils import ensure_async
from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler

from nb_mlops.server import notebook as nbinfo
from nb_mlops.server.errors import (
    BadRequest,
    NotFound,
    PayloadTooLarge,
    Scrubber,
    status_and_message,
)
from nb_mlops.server.jobs import ACTIONS, JobService
from nb_mlops.server.paths import relative_to_root, resolve_notebook

__all__ = [
    "API",
    "APPROVE_RESOURCE",
    "AUTH_RESOURCE",
    "PROMOTE_RESOURCE",
    "ROUTES",
    "STATE_KEY",
    "ServerState",
]

AUTH_RESOURCE = "nb_mlops"
PROMOTE_RESOURCE = "nb_mlops:promote"  # promote jobs and rollbacks
APPROVE_RESOURCE = "nb_mlops:approve"  # approving and rejecting promotion requests
API = "nb-mlops/api"
STATE_KEY = "nb_mlops_state"  # the web app's setting holding the `ServerState`
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}\Z")
SNAPSHOT_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}@v[0-9]{1,9}\Z")
# a notebook's parameters are settings, not data: data goes through snapshots or files
MAX_REQUEST_BYTES = 4 * 1024 * 1024
MAX_VALUE_BYTES = 1024 * 1024
MAX_PATH_CHARS = 4096
PAGE_SIZE, MAX_PAGE_SIZE = 50, 200


def _megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB"


@dataclass
class ServerState:
    """What the handlers share: the server root, the job service, the scrubber."""

    root_dir: Path
    project_root: Path
    jobs: JobService
    scrub: Scrubber
    ui_url: str = ""


@tornado.web.stream_request_body
class BaseHandler(APIHandler):
    """Shared plumbing: state, JSON bodies, and the single error → status mapping.

    Bodies are streamed (`data_received`): bytes past `MAX_REQUEST_BYTES` are counted and
    dropped, never held in memory, and `body()` then answers 413.
    """

    auth_resource = AUTH_RESOURCE
    _body_size = 0
    _chunks: list[bytes]

    def data_received(self, chunk: bytes) -> None:
        self._body_size += len(chunk)
        if self._body_size <= MAX_REQUEST_BYTES:
            self._chunks.append(chunk)

    async def prepare(self) -> None:  # type: ignore[override]
        self._chunks = []
        await super().prepare()
        if self.request.method not in ("GET", "HEAD", "OPTIONS") and not self._origin_allowed():
            # jupyter_server skips the Origin check for token-authenticated requests; a promotion
            # or rollback is worth the stricter rule: a foreign Origin never changes state.
            raise tornado.web.HTTPError(403, "cross-origin request refused")

    def _origin_allowed(self) -> bool:
        origin = self.request.headers.get("Origin")
        host = self.request.headers.get("Host")
        if origin is None or host is None or self.allow_origin == "*":
            return True
        origin = origin.lower()
        if urlparse(origin).netloc == host.lower():
            return True
        if self.allow_origin:
            return bool(self.allow_origin == origin)
        if self.allow_origin_pat:
            return bool(re.match(self.allow_origin_pat, origin))
        return False

    @property
    def state(self) -> ServerState:
        state: ServerState = self.settings[STATE_KEY]
        return state

    def body(self) -> dict[str, Any]:
        if self._body_size > MAX_REQUEST_BYTES:
            raise PayloadTooLarge(
                f"the request body is {_megabytes(self._body_size)}; the limit is "
                f"{_megabytes(MAX_REQUEST_BYTES)}: pass large data as a data snapshot "
                "(nb_mlops.snapshot) or a file the notebook reads, not as a parameter value"
            )
        try:
            data = json.loads(b"".join(self._chunks) or b"{}")
        except ValueError:
            raise BadRequest("the request body must be a JSON object") from None
        if not isinstance(data, dict):
            raise BadRequest("the request body must be a JSON object")
        return data

    def user_name(self) -> str:
        user = self.current_user
        name = getattr(user, "name", None) or getattr(user, "username", None) or str(user)
        # The name goes into an environment variable and the journal: keep it printable.
        return re.sub(r"[^\w.@+\-]", "_", str(name))[:100] or "unknown"

    async def authorize(self, resource: str, action: str = "write") -> None:
        """Ask the server's Authorizer about a finer resource than the handler's (403 if no)."""
        allowed = await ensure_async(
            self.authorizer.is_authorized(self, self.current_user, action, resource)
        )
        if not allowed:
            raise tornado.web.HTTPError(403, f"not authorised for {resource}")

    def reply(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json.dumps(data, default=str))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        status, message = status_and_message(exc, self.state.scrub) if exc else (status_code, "")
        if not message:
            message = self._reason or "error"
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json.dumps({"message": message, "status": status}))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        status, message = status_and_message(value, self.state.scrub)
        if status >= 500 and not isinstance(value, tornado.web.HTTPError):
            # Unexpected: the traceback goes to the server log only (scrubbed of the token).
            self.log.error(
                "nb_mlops: %s %s failed",
                self.request.method,
                self.request.path,
                exc_info=(typ, value, tb),
            )
        else:
            self.log.warning(
                "nb_mlops: %s %s -> %s: %s", self.request.method, self.request.path, status, message
            )


def _check_sizes(parameters: dict[str, Any]) -> None:
    """Each value within `MAX_VALUE_BYTES` (as JSON) before anything parses or stores it."""
    for name, value in parameters.items():
        size = len(json.dumps(value, default=str).encode())
        if size > MAX_VALUE_BYTES:
            raise PayloadTooLarge(
                f"parameter {str(name)[:60]!r} is {_megabytes(size)} as JSON; the limit is "
                f"{_megabytes(MAX_VALUE_BYTES)} per value: pass large data as a data snapshot "
                "(nb_mlops.snapshot) or a file the notebook reads"
            )


def _page_argument(handler: BaseHandler, name: str, default: int, most: int) -> int:
    text = handler.get_query_argument(name, str(default))
    if not re.fullmatch(r"[0-9]{1,9}", text) or int(text) > most:
        raise BadRequest(f"{name} must be a whole number from 0 to {most}, got {text[:20]!r}")
    return int(text)


def _model_name(name: Any) -> str:
    if not isinstance(name, str) or not MODEL_NAME.match(name):
        raise BadRequest(
            f"invalid model name {str(name)[:60]!r}: use letters, digits, '_', '.', '-' (max 100)"
        )
    return name


class NotebookHandler(BaseHandler):
    """GET notebook?path=P: steps, parameter schema, tracked runs, model, champion, gates."""

    @tornado.web.authenticated
    @authorized
    async def get(self) -> None:
        path = self.get_query_argument("path", "")
        notebook = resolve_notebook(self.state.root_dir, path)
        info = await asyncio.to_thread(nbinfo.describe, notebook, self.state.root_dir)
        info["path"] = relative_to_root(self.state.root_dir, notebook)
        self.reply(info)


class JobsHandler(BaseHandler):
    """GET jobs?offset=0&limit=50: a page of job summaries, newest first (no parameter values,
    no results: GET jobs/{id} has the full record). POST jobs: start a run or promote job
    (→ QUEUED)."""

    @tornado.web.authenticated
    @authorized
    async def get(self) -> None:
        offset = _page_argument(self, "offset", 0, 10**9)
        limit = _page_argument(self, "limit", PAGE_SIZE, MAX_PAGE_SIZE)
        jobs, total = await asyncio.to_thread(self.state.jobs.list, offset, limit)
        self.reply({"jobs": jobs, "total": total, "offset": offset, "limit": limit})

    @tornado.web.authenticated
    @authorized
    async def post(self) -> None:
        body = self.body()
        action = body.get("action", "promote")
        if action not in ACTIONS:
            raise BadRequest(
                f"action must be one of {', '.join(ACTIONS)}, got {str(action)[:40]!r}"
            )
        if action == "promote":
            await self.authorize(PROMOTE_RESOURCE)  # before any work: a site may allow runs only
        parameters = body.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise BadRequest("parameters must be a JSON object of name → value")
        _check_sizes(parameters)
        path = body.get("path", "")
        if isinstance(path, str) and len(path) > MAX_PATH_CHARS:
            raise BadRequest(f"the notebook path is longer than {MAX_PATH_CHARS} characters")
        notebook = resolve_notebook(self.state.root_dir, path)
        spec = await asyncio.to_thread(nbinfo.spec_of, notebook)
        values = nbinfo.validate(spec, parameters)
        model = body.get("model") or (spec.default_model if action == "promote" else None)
        if action == "promote" or model:
            model = _model_name(model)
        job = await asyncio.to_thread(
            self.state.jobs.create,
            notebook=notebook,
            rel_path=relative_to_root(self.state.root_dir, notebook),
            project_root=spec.project_root,
            pipeline=spec.pipeline,
            parameters=values,
            model=model,
            action=action,
            user=self.user_name(),
        )
        self.reply(job, status=201)


class JobHandler(BaseHandler):
    """GET jobs/{id}: status, per-step progress, log tail, gates, links."""

    @tornado.web.authenticated
    @authorized
    async def get(self, job_id: str) -> None:
        job = await asyncio.to_thread(self.state.jobs.get, job_id)
        self.reply(job)


class CancelHandler(BaseHandler):
    """POST jobs/{id}/cancel: kill the job's process tree; the job ends CANCELLED."""

    @tornado.web.authenticated
    @authorized
    async def post(self, job_id: str) -> None:
        job = await asyncio.to_thread(self.state.jobs.cancel, job_id)
        self.reply(job)


class HistoryHandler(BaseHandler):
    """GET models/{name}/history: the model's promotion journal and current champion."""

    @tornado.web.authenticated
    @authorized
    async def get(self, name: str) -> None:
        name = _model_name(name)
        entries = await asyncio.to_thread(_history, self.state.project_root, name)
        champion = await asyncio.to_thread(nbinfo.champion_of, self.state.project_root, name)
        self.reply({"model": name, "champion": champion, "entries": entries})


class RollbackHandler(BaseHandler):
    """POST models/{name}/rollback {"reason", "version"?}: move champion back; journaled."""

    auth_resource = PROMOTE_RESOURCE

    @tornado.web.authenticated
    @authorized
    async def post(self, name: str) -> None:
        name = _model_name(name)
        body = self.body()
        reason = body.get("reason")
        if not isinstance(reason, str) or not reason.strip():
            raise BadRequest("a rollback needs a reason (a non-empty string)")
        if len(reason) > 1000:
            raise BadRequest("the reason is longer than 1000 characters")
        version = body.get("version")
        to = None
        if version not in (None, ""):
            if isinstance(version, bool) or not re.fullmatch(r"[0-9]{1,9}", str(version)):
                raise BadRequest(
                    f"version must be a model version number, got {str(version)[:20]!r}"
                )
            to = str(version)
        decision = await asyncio.to_thread(
            _rollback, self.state.project_root, name, to, reason.strip(), self.user_name()
        )
        self.reply(decision)


class MonitorHandler(BaseHandler):
    """GET models/{name}/monitor: the champion, its latest check and the drift history (every
    check of the monitoring journal, oldest first: at, verdict, drifted share, decay, actions)."""

    @tornado.web.authenticated
    @authorized
    async def get(self, name: str) -> None:
        name = _model_name(name)
        limit = _page_argument(self, "limit", MAX_PAGE_SIZE, MAX_PAGE_SIZE)
        found = await asyncio.to_thread(_monitor_view, self.state.project_root, name, limit)
        self.reply(found)


class RetrainHandler(BaseHandler):
    """POST models/{name}/retrain {"data": "NAME@vN", "promote"?: bool}: a job that retrains the
    champion's stored pipeline on that snapshot (→ QUEUED; GET jobs/{id} follows it)."""

    @tornado.web.authenticated
    @authorized
    async def post(self, name: str) -> None:
        name = _model_name(name)
        body = self.body()
        data = body.get("data")
        if not isinstance(data, str) or not SNAPSHOT_REF.match(data):
            raise BadRequest(
                f"data must name a snapshot version as NAME@vN, got {str(data)[:60]!r}"
            )
        promote = body.get("promote", False)
        if not isinstance(promote, bool):
            raise BadRequest("promote must be true or false")
        if promote:
            await self.authorize(PROMOTE_RESOURCE)  # as a promote job: before any work
        root = self.state.project_root
        await asyncio.to_thread(_check_retrain, root, name, data)
        job = await asyncio.to_thread(
            self.state.jobs.create_retrain,
            model=name,
            data=data,
            promote=promote,
            project_root=root,
            user=self.user_name(),
        )
        self.reply(job, status=201)


def _monitor_view(project_root: Path, name: str, limit: int) -> dict[str, Any]:
    """The champion, its latest check and the last `limit` checks as JSON-ready points."""
    from nb_mlops.core.config import load_config
    from nb_mlops.core.monitoring.history import checks

    champion = nbinfo.champion_of(project_root, name)
    points = [_check_point(c) for c in checks(name, cfg=load_config(project_root))]
    points = points[-limit:] if limit else []
    version = champion["version"] if champion else None
    latest = next((p for p in reversed(points) if p["version"] == version), None)
    return {"model": name, "champion": champion, "latest": latest, "checks": points}


def _check_point(check: dict[str, Any]) -> dict[str, Any]:
    """One check of the journal as the panel charts it."""
    decay = check.get("decay") if isinstance(check.get("decay"), dict) else None
    return {
        "id": check.get("id"),
        "at": check.get("at"),
        "version": None if check.get("version") is None else str(check.get("version")),
        "verdict": check.get("verdict"),
        "data": check.get("data"),
        "reference": check.get("reference"),
        "share": check.get("share"),
        "drifted": list(check.get("drifted") or []),
        "decay": None
        if decay is None
        else {"worst": decay.get("worst"), "decayed": decay.get("decayed")},
        "actions": [
            {k: a.get(k) for k in ("name", "status", "detail", "run_id", "version", "event")}
            for a in check.get("actions") or []
            if isinstance(a, dict)
        ],
    }


def _check_retrain(project_root: Path, name: str, data: str) -> None:
    """Refuse before starting a job: no champion (404), no such snapshot (404)."""
    from nb_mlops.core.config import load_config
    from nb_mlops.core.data.refs import open_store
    from nb_mlops.core.errors import DataError
    from nb_mlops.core.monitoring.drift import resolve_manifest

    if nbinfo.champion_of(project_root, name) is None:
        raise NotFound(f"model {name!r} has no champion to retrain; promote a pipeline run first")
    try:
        resolve_manifest(open_store(load_config(project_root)), data)
    except DataError as exc:
        if type(exc) is not DataError:  # not found (404), damaged (500): as the table says
            raise
        raise BadRequest(str(exc)) from None  # a snapshot that is not a table


class ApprovalsHandler(BaseHandler):
    """GET approvals?model=M: the promotion requests waiting for an approver, oldest first."""

    @tornado.web.authenticated
    @authorized
    async def get(self) -> None:
        model = self.get_query_argument("model", "") or None
        if model is not None:
            model = _model_name(model)
        found = await asyncio.to_thread(_approvals, self.state.project_root, model)
        self.reply({"requests": found})


class DecideHandler(BaseHandler):
    """POST approvals/{id}/approve|reject {"reason"?}: decide a request as the request's user."""

    auth_resource = APPROVE_RESOURCE

    @tornado.web.authenticated
    @authorized
    async def post(self, request_id: str, verb: str) -> None:
        if not re.fullmatch(r"[0-9a-f]{6,32}", request_id):
            raise BadRequest(f"invalid request id {request_id[:40]!r}: give its hex id")
        reason = self.body().get("reason")
        if reason is not None and (not isinstance(reason, str) or len(reason) > 1000):
            raise BadRequest("the reason must be a string of at most 1000 characters")
        decision = await asyncio.to_thread(
            _decide, self.state.project_root, verb, request_id, reason, self.user_name()
        )
        self.reply(decision)


def _approvals(project_root: Path, model: str | None) -> list[dict[str, Any]]:
    from nb_mlops.core.config import load_config
    from nb_mlops.core.promotion import approvals

    return [r.as_dict() for r in approvals(model, cfg=load_config(project_root))]


def _decide(project_root: Path, verb: str, request_id: str, reason: str | None, who: str) -> Any:
    """Approve or reject a promotion request as `who`; the decision as a JSON-ready mapping."""
    from nb_mlops.core.config import load_config
    from nb_mlops.core.promotion import approve, reject

    act = approve if verb == "approve" else reject
    return act(request_id, reason=reason, who=who, cfg=load_config(project_root)).as_dict()


def _history(project_root: Path, name: str) -> list[dict[str, Any]]:
    """The promotion journal of `name`, oldest first, as JSON-ready entries."""
    from nb_mlops.core.config import load_config
    from nb_mlops.core.promotion import history

    return [entry.as_dict() for entry in history(name, cfg=load_config(project_root))]


def _rollback(project_root: Path, name: str, to: str | None, reason: str, who: str) -> Any:
    """Move `name`'s champion back (to version `to`, default the previous one), journaled as
    `who`; the decision as a JSON-ready mapping."""
    from nb_mlops.core.config import load_config
    from nb_mlops.core.promotion import rollback

    decision = rollback(name, to=to, reason=reason, who=who, cfg=load_config(project_root))
    return decision.as_dict()


ROUTES: list[tuple[str, type[BaseHandler]]] = [
    (r"notebook", NotebookHandler),
    (r"jobs", JobsHandler),
    (r"jobs/(?P<job_id>[^/]+)", JobHandler),
    (r"jobs/(?P<job_id>[^/]+)/cancel", CancelHandler),
    (r"models/(?P<name>[^/]+)/history", HistoryHandler),
    (r"models/(?P<name>[^/]+)/rollback", RollbackHandler),
    (r"models/(?P<name>[^/]+)/monitor", MonitorHandler),
    (r"models/(?P<name>[^/]+)/retrain", RetrainHandler),
    (r"approvals", ApprovalsHandler),
    (r"approvals/(?P<request_id>[^/]+)/(?P<verb>approve|reject)", DecideHandler),
]
