"""The jupyter_server extension: routes, auth, hostile paths, errors, jobs.

Given a real Jupyter server (pytest-jupyter) with the extension enabled on a temporary project,
when the REST API is called, then it answers as the cases below require.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import tornado.web
from jupyter_server.auth import Authorizer
from tornado.httpclient import HTTPClientError

from nb_mlops.server import handlers
from nb_mlops.server.jobs import JobService
from tests.nbutil import new_notebook

pytest_plugins = ["pytest_jupyter.jupyter_server"]

# pytest-jupyter points HOME at a temp folder: keep using the machine's MLflow schema template.
_CACHE = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
API = ("nb-mlops", "api")
PYPROJECT = """[project]
name = "demo"

[tool.nb_mlops]
model = "demo-model"

[tool.nb_mlops.gates]
metrics = { accuracy = ">= 0.5" }
"""


class DenyAll(Authorizer):
    """An authorizer that says no to everything."""

    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        return False


@pytest.fixture(autouse=True)
def _machine_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", _CACHE)


@pytest.fixture
def jp_root_dir(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    (root / "pyproject.toml").write_text(PYPROJECT)
    new_notebook(
        root / "nb" / "train.ipynb",
        [
            (
                'alpha: float = 0.5\nn_iter: int = 3\nname = "x"\ntags: list[str] = []',
                ["parameters"],
            ),
            "total = alpha * n_iter",
        ],
    )
    (root / ".hidden").mkdir()
    new_notebook(root / ".hidden" / "secret.ipynb", ["1"])
    return root


@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    return {"ServerApp": {"jpserver_extensions": {"nb_mlops.server": True}}}


def _files(root: Path) -> dict[str, float]:
    store = root / ".nb_mlops"
    if not store.exists():
        return {}
    return {str(p.relative_to(root)): p.stat().st_mtime for p in store.rglob("*")}


async def _code(call: Any) -> int:
    try:
        response = await call
    except HTTPClientError as exc:
        return int(exc.code)
    return int(response.code)


async def _json_error(call: Any) -> tuple[int, dict[str, Any]]:
    with pytest.raises(HTTPClientError) as info:
        await call
    assert info.value.response is not None
    return int(info.value.code), json.loads(info.value.response.body)


# --- every route is authenticated and authorized ----------------------------------------------


def _decorator_files(method: Any) -> set[str]:
    """Source files of every wrapper layer around a handler method."""
    files = set()
    while method is not None:
        code = getattr(method, "__code__", None)
        if code is not None:
            files.add(Path(code.co_filename).as_posix())
        method = getattr(method, "__wrapped__", None)
    return files


def _all_rules(router: Any) -> list[tuple[str, Any]]:
    """(URL pattern, handler class) of every rule, walking nested routers."""
    found = []
    for rule in getattr(router, "rules", []):
        if hasattr(rule.target, "rules"):
            found += _all_rules(rule.target)
        else:
            regex = getattr(rule.matcher, "regex", None)
            found.append((regex.pattern if regex else "", rule.target))
    return found


def test_every_route_has_authenticated_and_authorized(jp_serverapp: Any) -> None:
    """List the routes the live server registered for nb_mlops; each verb is decorated."""
    registered = {
        target
        for pattern, target in _all_rules(jp_serverapp.web_app.default_router)
        if "nb-mlops" in pattern
    }
    assert registered == {handler for _, handler in handlers.ROUTES}
    checked = 0
    for handler in registered:
        assert issubclass(handler, handlers.BaseHandler)
        # the handler's resource, or a finer one a deployment's Authorizer can tell apart
        assert handler.auth_resource in ("nb_mlops", "nb_mlops:promote", "nb_mlops:approve")
        for verb in ("get", "post", "put", "patch", "delete"):
            method = handler.__dict__.get(verb)
            if method is None:
                continue
            files = _decorator_files(method)
            assert any(f.endswith("tornado/web.py") for f in files), f"{handler.__name__}.{verb}"
            assert any(f.endswith("jupyter_server/auth/decorator.py") for f in files), (
                f"{handler.__name__}.{verb} lacks @authorized"
            )
            checked += 1
    assert checked == 11
    assert all(issubclass(h, tornado.web.RequestHandler) for h in registered)


ROUTE_CALLS = [
    ("GET", "notebook?path=nb/train.ipynb", None),
    ("GET", "jobs", None),
    ("POST", "jobs", {"path": "nb/train.ipynb", "action": "run"}),
    ("GET", "jobs/20250101T000000-deadbeef", None),
    ("POST", "jobs/20250101T000000-deadbeef/cancel", {}),
    ("GET", "models/demo-model/history", None),
    ("POST", "models/demo-model/rollback", {"reason": "bad"}),
    ("GET", "models/demo-model/monitor", None),
    ("POST", "models/demo-model/retrain", {"data": "train@v1"}),
    ("GET", "approvals", None),
    ("POST", "approvals/0123456789abcdef/approve", {}),
    ("POST", "approvals/0123456789abcdef/reject", {}),
]


@pytest.mark.parametrize("allow_unauthenticated", [False, True])
async def test_no_token_is_403_everywhere(
    jp_server_config: Any,
    allow_unauthenticated: bool,
    http_server_client: Any,
    jp_serverapp: Any,
    jp_base_url: str,
    jp_root_dir: Path,
) -> None:
    """Without a token every route answers 403, whatever allow_unauthenticated_access says."""
    jp_serverapp.allow_unauthenticated_access = allow_unauthenticated
    jp_serverapp.web_app.settings["allow_unauthenticated_access"] = allow_unauthenticated
    for method, path, body in ROUTE_CALLS:
        code = await _code(
            http_server_client.fetch(
                f"{jp_base_url}nb-mlops/api/{path}",
                method=method,
                body=None if body is None else json.dumps(body),
                raise_error=True,
            )
        )
        assert code == 403, (method, path, code)
    assert _files(jp_root_dir) == {}


class TestDenyAll:
    @pytest.fixture
    def jp_server_config(self) -> dict[str, Any]:
        return {
            "ServerApp": {
                "jpserver_extensions": {"nb_mlops.server": True},
                "authorizer_class": DenyAll,
            }
        }

    async def test_deny_all_authorizer_blocks_everything_and_writes_nothing(
        self, jp_fetch: Any, jp_root_dir: Path
    ) -> None:
        """With a deny-all Authorizer, promote and rollback are 403 and nothing is written."""
        before = _files(jp_root_dir)
        for method, path, body in ROUTE_CALLS:
            route, _, query = path.partition("?")
            params = dict([query.split("=", 1)]) if query else {}
            code = await _code(
                jp_fetch(
                    *API,
                    route,
                    method=method,
                    params=params,
                    body=None if body is None else json.dumps(body),
                )
            )
            assert code == 403, (method, path)
        promote = {"path": "nb/train.ipynb", "action": "promote", "model": "m"}
        assert await _code(jp_fetch(*API, "jobs", method="POST", body=json.dumps(promote))) == 403
        assert _files(jp_root_dir) == before == {}


class OneJobService(JobService):
    """A site's own job service, as the configuration names it: it lists one job of its own."""

    def list(self, offset: int = 0, limit: int = 50) -> tuple[list[dict[str, Any]], int]:
        return [{"id": "20250101T000000-0000c0de", "status": "QUEUED"}], 1


class TestConfiguredJobService:
    @pytest.fixture
    def jp_server_config(self) -> dict[str, Any]:
        return {
            "ServerApp": {"jpserver_extensions": {"nb_mlops.server": True}},
            "NbMlopsApp": {"job_service_class": OneJobService},
        }

    async def test_the_job_service_class_is_a_server_setting(
        self, jp_fetch: Any, jp_serverapp: Any
    ) -> None:
        """`NbMlopsApp.job_service_class` picks the class behind the jobs routes."""
        page = json.loads((await jp_fetch(*API, "jobs")).body)
        assert (page["total"], [j["id"] for j in page["jobs"]]) == (1, ["20250101T000000-0000c0de"])
        assert type(jp_serverapp.web_app.settings[handlers.STATE_KEY].jobs) is OneJobService


# --- XSRF, Origin, GET is read-only -------------------------------------------------------------


async def test_cookie_post_without_xsrf_and_foreign_origin_are_rejected(
    jp_fetch: Any, http_server_client: Any, jp_base_url: str, jp_serverapp: Any, jp_root_dir: Path
) -> None:
    """A cookie-authenticated POST lacking the XSRF token, or from a foreign Origin, is refused."""
    token = jp_serverapp.identity_provider.token
    form = await http_server_client.fetch(f"{jp_base_url}login")
    xsrf = [
        c.split(";", 1)[0] for c in form.headers.get_list("Set-Cookie") if c.startswith("_xsrf")
    ]
    xsrf_value = xsrf[0].split("=", 1)[1]
    login = await http_server_client.fetch(
        f"{jp_base_url}login",
        method="POST",
        body=f"password={token}&_xsrf={xsrf_value}",
        headers={"Cookie": xsrf[0]},
        follow_redirects=False,
        raise_error=False,
    )
    cookies = [c.split(";", 1)[0] for c in login.headers.get_list("Set-Cookie")]
    cookie = "; ".join(c for c in cookies if not c.startswith("_xsrf"))
    assert "username-" in cookie, cookies
    # the cookie alone authenticates a GET ...
    listed = await http_server_client.fetch(
        f"{jp_base_url}nb-mlops/api/jobs", headers={"Cookie": cookie}
    )
    assert listed.code == 200
    # ... but a POST with it and no _xsrf is refused
    body = json.dumps({"path": "nb/train.ipynb", "action": "run"})
    code = await _code(
        http_server_client.fetch(
            f"{jp_base_url}nb-mlops/api/jobs", method="POST", body=body, headers={"Cookie": cookie}
        )
    )
    assert code == 403
    # with the XSRF token it is accepted only from our own origin
    headers = {"Cookie": f"{cookie}; {xsrf[0]}", "X-XSRFToken": xsrf_value}
    code = await _code(
        http_server_client.fetch(
            f"{jp_base_url}nb-mlops/api/jobs",
            method="POST",
            body=body,
            headers={**headers, "Origin": "http://evil.example"},
        )
    )
    assert code in (403, 404)
    # control: the same cookie with the XSRF token from our own origin gets past auth (400: body)
    bad_body = json.dumps({"path": "nb/train.ipynb", "action": "nope"})
    code = await _code(
        http_server_client.fetch(
            f"{jp_base_url}nb-mlops/api/jobs", method="POST", body=bad_body, headers=headers
        )
    )
    assert code == 400
    # a foreign Origin is refused even with a valid token
    code = await _code(
        jp_fetch(*API, "jobs", method="POST", body=body, headers={"Origin": "http://evil.example"})
    )
    assert code in (403, 404)
    assert not (jp_root_dir / ".nb_mlops" / "jobs").exists() or not list(
        (jp_root_dir / ".nb_mlops" / "jobs").glob("*.json")
    )


async def test_get_routes_change_nothing(jp_fetch: Any, jp_root_dir: Path) -> None:
    """GET never changes state (no store created, no job written)."""
    for path in ("notebook", "jobs", "models/demo-model/history", "models/demo-model/monitor"):
        params = {"path": "nb/train.ipynb"} if path == "notebook" else {}
        response = await jp_fetch(*API, *path.split("/"), params=params)
        assert response.code == 200
    assert await _code(jp_fetch(*API, "models", "demo-model", "rollback")) == 405
    assert await _code(jp_fetch(*API, "models", "demo-model", "retrain")) == 405
    assert _files(jp_root_dir) == {}


# --- hostile paths -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "../outside.ipynb",
        "nb/../../outside.ipynb",
        "/etc/passwd",
        "{sibling}/x.ipynb",
        ".hidden/secret.ipynb",
        "nb/%2e%2e/%2e%2e/outside.ipynb",
        "%2e%2e/outside.ipynb",
        "nb/link_out.ipynb",
        "nb/missing.ipynb",
        "nb/train.py",
        "",
    ],
)
async def test_hostile_notebook_paths_are_refused(
    jp_fetch: Any, jp_root_dir: Path, path: str
) -> None:
    """`..`, absolute, prefix-sibling, hidden, encoded dots, escaping symlinks → 403/404."""
    outside = jp_root_dir.parent / "outside.ipynb"
    new_notebook(outside, ["1"])
    sibling = Path(str(jp_root_dir) + "x")
    new_notebook(sibling / "x.ipynb", ["1"])
    (jp_root_dir / "nb" / "link_out.ipynb").symlink_to(outside)
    path = path.replace("{sibling}", str(sibling))
    code, body = await _json_error(jp_fetch(*API, "notebook", params={"path": path}))
    assert code in (403, 404), (path, code)
    assert str(jp_root_dir.parent) not in body["message"]
    body_post = json.dumps({"path": path, "action": "run"})
    code, _ = await _json_error(jp_fetch(*API, "jobs", method="POST", body=body_post))
    assert code in (403, 404)
    assert _files(jp_root_dir) == {}


# --- validation: one error mapping -------------------------------------------------------


async def test_validation_errors_are_400_with_a_reason(jp_fetch: Any, jp_root_dir: Path) -> None:
    """Parameters are validated against the notebook's schema; the reason comes back (400)."""
    cases = [
        ({"parameters": {"alpha": "high"}}, "alpha"),
        ({"parameters": {"unknown": 1}}, "declared parameters"),
        ({"parameters": {"n_iter": 1.5}}, "n_iter"),
        ({"parameters": {"__import__('os')": 1}}, "identifier"),
        ({"parameters": [1, 2]}, "parameters"),
        ({"action": "destroy"}, "action"),
        ({"model": "bad name/<x>", "action": "promote"}, "model name"),
        ({"model": "nl\n", "action": "promote"}, "model name"),  # `$` would let it through
    ]
    for extra, needle in cases:
        body = {"path": "nb/train.ipynb", "action": "run", **extra}
        code, data = await _json_error(jp_fetch(*API, "jobs", method="POST", body=json.dumps(body)))
        assert code == 400, (extra, data)
        assert needle in data["message"], (extra, data)
        assert "Traceback" not in data["message"]
    code, data = await _json_error(jp_fetch(*API, "jobs", method="POST", body="{not json"))
    assert code == 400
    code, data = await _json_error(jp_fetch(*API, "jobs", "nope"))
    assert code == 404 and "nope" in data["message"]
    code, data = await _json_error(
        jp_fetch(*API, "models", "demo-model", "rollback", method="POST", body=json.dumps({}))
    )
    assert code == 400 and "reason" in data["message"]
    assert _files(jp_root_dir) == {}


async def test_oversized_values_and_bodies_are_refused_with_413(
    jp_fetch: Any, jp_root_dir: Path
) -> None:
    """A parameter value over its limit, or a body over the request limit, is a 413 that says
    what was too large and what to do; nothing is stored."""
    # Given a list parameter given 1.5 MB of text (a data set, not a setting)
    big = ["x" * 1000] * 1500
    body = {"path": "nb/train.ipynb", "action": "run", "parameters": {"tags": big}}
    code, data = await _json_error(jp_fetch(*API, "jobs", method="POST", body=json.dumps(body)))
    # Then it is refused with 413, naming the parameter, its size and the way out
    assert code == 413, data
    assert "'tags'" in data["message"] and "limit" in data["message"]
    assert "snapshot" in data["message"]
    # Given a 6 MB body: refused as a whole, without being kept
    body = {"path": "nb/train.ipynb", "action": "run", "model": "m" * (6 * 1024 * 1024)}
    code, data = await _json_error(jp_fetch(*API, "jobs", method="POST", body=json.dumps(body)))
    assert code == 413 and "request body" in data["message"], data
    huge_path = {"path": "a/" * 5000 + "x.ipynb", "action": "run"}
    code, data = await _json_error(
        jp_fetch(*API, "jobs", method="POST", body=json.dumps(huge_path))
    )
    assert code == 400 and "longer than" in data["message"]
    assert _files(jp_root_dir) == {}


def _stored_job(jobs: Path, index: int, parameters: dict[str, Any]) -> str:
    """A finished job record as the job service stores it (no process involved)."""
    job_id = f"2025010{1 + index // 10}T0000{index % 10:02d}-{index:08x}"
    record = {
        "id": job_id,
        "action": "run",
        "status": "SUCCEEDED",
        "path": "nb/train.ipynb",
        "pipeline": "train",
        "model": None,
        "parameters": parameters,
        "user": "u",
        "created": "2025-01-01T00:00:00Z",
        "started": None,
        "finished": None,
        "run_id": "r" * 32,
        "steps": {"train": {"status": "SUCCEEDED", "duration": 1.0, "error": "e" * 10_000}},
        "gates": [],
        "model_version": None,
        "result": {"echo": parameters},
        "error": None,
    }
    jobs.mkdir(parents=True, exist_ok=True)
    (jobs / f"{job_id}.json").write_text(json.dumps(record))
    return job_id


async def test_the_jobs_list_is_paged_and_never_echoes_values(
    jp_fetch: Any, jp_root_dir: Path
) -> None:
    """GET jobs answers a page of bounded summaries, newest first; GET jobs/{id} the record."""
    # Given seven finished jobs, one of them given 3 MB of parameter values (before any limit)
    jobs = jp_root_dir / ".nb_mlops" / "jobs"
    ids = [_stored_job(jobs, i, {"alpha": 0.5}) for i in range(6)]
    ids.append(_stored_job(jobs, 6, {"tags": ["y" * 1000] * 3000}))
    newest_first = sorted(ids, reverse=True)
    # When the list is read, Then it is small, holds no parameter values, and pages
    response = await jp_fetch(*API, "jobs", params={"limit": "3"})
    assert len(response.body) < 20_000
    page = json.loads(response.body)
    assert page["total"] == 7 and page["limit"] == 3 and page["offset"] == 0
    assert [j["id"] for j in page["jobs"]] == newest_first[:3]
    for job in page["jobs"]:
        assert "parameters" not in job and "result" not in job
        assert len(job["steps"]["train"]["error"]) <= 500
    rest = json.loads((await jp_fetch(*API, "jobs", params={"offset": "3"})).body)
    assert [j["id"] for j in rest["jobs"]] == newest_first[3:]
    everything = json.loads((await jp_fetch(*API, "jobs")).body)
    assert len(everything["jobs"]) == 7 and len(json.dumps(everything)) < 40_000
    # the full record, values included, is one GET away
    full = json.loads((await jp_fetch(*API, "jobs", ids[-1])).body)
    assert len(full["parameters"]["tags"]) == 3000
    # a bad page is a 400 naming the argument
    code, data = await _json_error(jp_fetch(*API, "jobs", params={"limit": "100000"}))
    assert code == 400 and "limit" in data["message"]


def test_scrubber_hides_paths_tokens_and_uris(tmp_path: Path) -> None:
    """Messages never carry paths outside the root, tokens or database URIs."""
    from nb_mlops.server.errors import INTERNAL, Scrubber, status_and_message

    scrub = Scrubber(tmp_path / "root", secrets=["s3cr3t-token-value"])
    text = (
        f"cannot open {tmp_path}/root/nb/x.ipynb or /etc/shadow with sqlite:////var/db/mlflow.db "
        "token=abcdef1234567890 and s3cr3t-token-value"
    )
    out = scrub(text)
    assert "nb/x.ipynb" in out and "/etc/shadow" not in out and str(tmp_path) not in out
    assert "sqlite" not in out and "abcdef1234567890" not in out and "s3cr3t" not in out
    assert status_and_message(RuntimeError(f"boom at {tmp_path}"), scrub) == (500, INTERNAL)


def test_the_error_table_gives_each_nb_mlops_error_its_status(tmp_path: Path) -> None:
    """Errors map to statuses by class (subclasses first), never by their text."""
    from nb_mlops.core import errors
    from nb_mlops.server.errors import Scrubber, status_and_message

    scrub = Scrubber(tmp_path)
    cases = [
        (errors.ModelNotFound("gone"), 404),
        (errors.SnapshotNotFound("gone"), 404),
        (errors.RollbackError("no model here, not found"), 400),  # the words do not matter
        (errors.PromotionError("bad name"), 400),
        (errors.ParameterError("alpha"), 400),
        (errors.ConfigError("bad key"), 400),
        (errors.GatesBlocked("accuracy failed"), 409),
        (errors.StoreUnavailable("tracking server down"), 503),
        (errors.IntegrityError("bytes changed"), 500),
    ]
    for exc, status in cases:
        assert status_and_message(exc, scrub) == (status, str(exc)), exc


async def test_notebook_description_lists_steps_schema_model_and_gates(jp_fetch: Any) -> None:
    """GET notebook returns the typed schema with defaults, steps, target model and gates."""
    response = await jp_fetch(*API, "notebook", params={"path": "nb/train.ipynb"})
    info = json.loads(response.body)
    assert info["path"] == "nb/train.ipynb"
    assert info["model"] == "demo-model"
    assert [s["name"] for s in info["steps"]] and info["pipeline"] == "train"
    params = {p["name"]: p for p in info["parameters"]}
    assert params["alpha"]["type"] == "float" and params["alpha"]["default"] == 0.5
    assert params["n_iter"]["type"] == "int" and params["name"]["type"] == "str"
    assert params["tags"]["type"] == "list"
    assert info["gates"] == [{"gate": "metric:accuracy", "expected": ">= 0.5", "champion": None}]
    assert info["champion"] is None and info["runs"] == []


# --- jobs -------------------------------------------------------------------------------------


async def test_post_job_stages_a_copy_and_is_queued(jp_fetch: Any, jp_root_dir: Path) -> None:
    """The job works on a staged copy taken at the click; it is QUEUED at once and listed."""
    body = {"path": "nb/train.ipynb", "action": "run", "parameters": {"alpha": 0.25}}
    response = await jp_fetch(*API, "jobs", method="POST", body=json.dumps(body))
    job = json.loads(response.body)
    assert response.code == 201 and job["status"] == "QUEUED"
    assert job["parameters"] == {"alpha": 0.25} and job["pipeline"] == "train"
    assert "pid" not in job and "project_root" not in job and "staged" not in job
    staged = jp_root_dir / ".nb_mlops" / "jobs" / job["id"] / "train.ipynb"
    original = (jp_root_dir / "nb" / "train.ipynb").read_bytes()
    assert staged.read_bytes() == original
    (jp_root_dir / "nb" / "train.ipynb").write_text("edited after the click")
    assert staged.read_bytes() == original
    listed = json.loads((await jp_fetch(*API, "jobs")).body)["jobs"]
    assert [j["id"] for j in listed] == [job["id"]]
    assert "parameters" not in listed[0]  # summaries only: the values are in GET jobs/{id}
    # the job ends by itself (the pipeline decides how); it never stays QUEUED/RUNNING
    final = await _wait_final(jp_fetch, job["id"])
    assert final["status"] in ("SUCCEEDED", "FAILED"), final
    assert isinstance(final["log_tail"], list)


async def _wait_final(jp_fetch: Any, job_id: str, timeout: float = 180) -> dict[str, Any]:
    import asyncio

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = json.loads((await jp_fetch(*API, "jobs", job_id)).body)
        if job["status"] not in ("QUEUED", "RUNNING"):
            return job
        await asyncio.sleep(0.3)
    raise AssertionError(f"job {job_id} still {job['status']} after {timeout} s")


class TestRestart:
    @pytest.fixture
    def stale_job(self, jp_root_dir: Path) -> str:
        """A job left RUNNING by a server that died: its process is gone."""
        import subprocess

        proc = subprocess.Popen([sys.executable, "-c", "pass"])
        proc.wait()
        jobs = jp_root_dir / ".nb_mlops" / "jobs"
        jobs.mkdir(parents=True)
        job_id = "20250101T000000-0badc0de"
        record = {"id": job_id, "status": "RUNNING", "pid": proc.pid, "action": "run", "path": "x"}
        (jobs / f"{job_id}.json").write_text(json.dumps(record))
        return job_id

    async def test_job_whose_process_died_shows_failed_after_restart(
        self, stale_job: str, jp_fetch: Any
    ) -> None:
        """After a restart, jobs are listed and a dead one is FAILED, never RUNNING for ever."""
        listed = json.loads((await jp_fetch(*API, "jobs")).body)["jobs"]
        assert [(j["id"], j["status"]) for j in listed] == [(stale_job, "FAILED")]
        job = json.loads((await jp_fetch(*API, "jobs", stale_job)).body)
        assert job["status"] == "FAILED" and "ended" in job["error"]


def test_cancel_kills_the_whole_process_tree(tmp_path: Path) -> None:
    """Cancel kills the worker and a grandchild in a session of its own (a kernel)."""
    import psutil

    from nb_mlops.server.jobs import JobService

    pidfile = tmp_path / "grandchild.pid"
    script = (
        "import subprocess, sys, time\n"
        "p = subprocess.Popen(['sleep', '300'], start_new_session=True)\n"
        f"open({str(pidfile)!r}, 'w').write(str(p.pid))\n"
        "time.sleep(300)\n"
    )
    nb = new_notebook(tmp_path / "project" / "long.ipynb", ["1"])
    service = JobService(
        tmp_path / "project" / ".nb_mlops" / "jobs", worker=[sys.executable, "-c", script]
    )
    job = service.create(
        notebook=nb,
        rel_path="long.ipynb",
        project_root=tmp_path / "project",
        pipeline="long",
        parameters={},
        model=None,
        action="run",
        user="tester",
    )
    deadline = time.monotonic() + 60
    while not pidfile.exists() or not pidfile.read_text():
        assert time.monotonic() < deadline, service.get(job["id"])
        time.sleep(0.1)
    grandchild = int(pidfile.read_text())
    # (this stand-in worker never marks the job RUNNING; alive, it is not shown FAILED)
    assert service.get(job["id"])["status"] == "QUEUED"
    cancelled = service.cancel(job["id"])
    assert cancelled["status"] == "CANCELLED"
    assert not psutil.pid_exists(grandchild) or psutil.Process(grandchild).status() == "zombie"
    time.sleep(0.5)
    assert service.get(job["id"])["status"] == "CANCELLED"
    assert service.cancel(job["id"])["status"] == "CANCELLED"  # idempotent


def test_cancelling_a_running_pipeline_job_ends_its_mlflow_runs_killed(tmp_path: Path) -> None:
    """Cancel stops the runner the way SIGTERM does: its running step is killed at once, the
    MLflow runs it started end KILLED (not RUNNING for ever), nothing it started is left."""
    from nb_mlops.server.jobs import JobService
    from tests.crashutil import descendants, runs_by_status, wait_gone
    from tests.test_pipeline_stop import SLOW_CELLS

    # Given a run job whose second step waits in its cell
    root = tmp_path / "project"
    root.mkdir()
    (root / "pyproject.toml").write_text("[tool.nb_mlops]\n")
    nb = new_notebook(root / "slow.ipynb", SLOW_CELLS)
    service = JobService(root / ".nb_mlops" / "jobs")
    job = service.create(
        notebook=nb,
        rel_path="slow.ipynb",
        project_root=root,
        pipeline="slow",
        parameters={},
        model=None,
        action="run",
        user="tester",
    )
    deadline = time.monotonic() + 180
    while not list(root.rglob("in_cell")):  # the staged copy runs in the job's folder
        assert time.monotonic() < deadline, service.get(job["id"])
        time.sleep(0.1)
    record = json.loads((root / ".nb_mlops" / "jobs" / f"{job['id']}.json").read_text())
    tree = descendants(record["pid"])
    # When it is cancelled
    assert service.cancel(job["id"])["status"] == "CANCELLED"
    # Then nothing is left and its runs are KILLED, the finished step's FINISHED
    assert wait_gone(tree, 30) == []
    statuses = sorted(runs_by_status(root / ".nb_mlops" / "mlflow.db").values())
    assert statuses == ["FINISHED", "KILLED", "KILLED"]


async def test_history_and_rollback_call_the_promotion_service_as_the_request_user(
    jp_fetch: Any, jp_root_dir: Path
) -> None:
    """History and rollback answer the journal's and the decision's JSON; the rollback is
    journaled as the user of the request; unknown model → 404, nothing to roll back → 400."""
    from nb_mlops.core.config import load_config
    from nb_mlops.core.promotion import promote
    from tests.promotion_helpers import make_pipeline_run

    # Given a model promoted twice
    cfg = load_config(jp_root_dir)
    runs = [make_pipeline_run(cfg, metrics={"accuracy": a}) for a in (0.8, 0.9)]
    for run_id in runs:
        promote(run_id, model="demo-model", cfg=cfg)
    history = json.loads((await jp_fetch(*API, "models", "demo-model", "history")).body)
    assert history["champion"] == {"version": "2", "run_id": runs[1]}
    assert [(e["action"], e["to_version"]) for e in history["entries"]] == [
        ("promote", "1"),
        ("promote", "2"),
    ]
    # When the champion is rolled back through the API
    body = json.dumps({"reason": "accuracy dropped"})
    response = await jp_fetch(*API, "models", "demo-model", "rollback", method="POST", body=body)
    decision = json.loads(response.body)
    # Then the decision says so and the journal names the request's user
    assert (decision["status"], decision["version"], decision["previous_version"]) == (
        "ROLLED_BACK",
        "1",
        "2",
    )
    history = json.loads((await jp_fetch(*API, "models", "demo-model", "history")).body)
    last = history["entries"][-1]
    assert last["action"] == "rollback" and last["reason"] == "accuracy dropped"
    # (a token-only request is a fresh anonymous Jupyter user, not the server's OS user)
    assert last["who"].startswith("Anonymous_"), last["who"]
    assert history["champion"]["version"] == "1"
    # an unknown model is a 404, a model with no earlier champion a 400 naming why
    code, data = await _json_error(
        jp_fetch(*API, "models", "ghost", "rollback", method="POST", body=body)
    )
    assert code == 404 and "ghost" in data["message"]
    code, data = await _json_error(
        jp_fetch(*API, "models", "demo-model", "rollback", method="POST", body=body)
    )
    assert code == 400 and "no earlier champion" in data["message"]
    assert str(jp_root_dir) not in data["message"]


def test_the_job_worker_starts_without_the_server_or_mlflow() -> None:
    """A job's process imports neither the web server nor the CLI; mlflow loads when a run
    needs it."""
    import subprocess

    probe = (
        "import sys, json, nb_mlops.server.worker\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    loaded = set(json.loads(done.stdout.strip().splitlines()[-1]))
    assert not loaded & {"tornado", "jupyter_server", "traitlets", "click", "mlflow", "pandas"}


def test_a_promote_job_refuses_a_bad_configuration_before_running(tmp_path: Path) -> None:
    """The worker's entry point returns a structured outcome: a configuration problem fails a
    promote job before anything is built or run."""
    from nb_mlops.server.worker import execute

    root = tmp_path / "project"
    root.mkdir()
    (root / "pyproject.toml").write_text("[tool.nb_mlops]\nmodle = 'typo'\n")
    nb = new_notebook(root / "train.ipynb", ["x = 1"])
    folder = root / "job"
    folder.mkdir()
    job = {
        "action": "promote",
        "staged": str(nb),
        "pipeline": "train",
        "parameters": {},
        "model": "m",
        "project_root": str(root),
    }
    outcome = execute(job, folder)
    assert outcome.status == "FAILED" and "modle" in (outcome.error or "")
    assert outcome.run_id is None and not (folder / "pipeline").exists()
    changes = outcome.changes("m")
    assert changes["status"] == "FAILED" and changes["error"] == outcome.error


async def test_promoting_the_same_parameters_twice_promotes_a_fresh_model(
    jp_fetch: Any, jp_root_dir: Path
) -> None:
    """A Promote click runs every step afresh: a cached run would hold no model of its own,
    so promoting the same values again (e.g. after a rollback) must still work."""
    new_notebook(
        jp_root_dir / "nb" / "model.ipynb",
        [
            (
                "import nb_mlops\nfrom sklearn.datasets import load_iris\n"
                "from sklearn.linear_model import LogisticRegression",
                ["imports"],
            ),
            ("C: float = 1.0", ["parameters"]),
            (
                "%%track\nX, y = load_iris(return_X_y=True)\n"
                "model = LogisticRegression(C=C, max_iter=300).fit(X, y)\n"
                "nb_mlops.log(accuracy=model.score(X, y))",
                ["step:train"],
            ),
        ],
    )
    body = {"path": "nb/model.ipynb", "action": "promote", "parameters": {"C": 0.5}}
    finals = []
    for _ in range(2):
        response = await jp_fetch(*API, "jobs", method="POST", body=json.dumps(body))
        finals.append(await _wait_final(jp_fetch, json.loads(response.body)["id"], timeout=300))
    assert [f["status"] for f in finals] == ["PROMOTED", "PROMOTED"], finals[-1]["log_tail"]
    assert not finals[1]["steps"]["train"]["cached"]
    assert finals[0]["run_id"] != finals[1]["run_id"]
    history = json.loads((await jp_fetch(*API, "models", "demo-model", "history")).body)
    assert [e["to_version"] for e in history["entries"] if e["action"] == "promote"] == ["1", "2"]


# --- monitoring: the drift history and a retrain job -----------------------------------------


async def test_the_monitor_route_answers_the_drift_history(
    jp_fetch: Any, jp_root_dir: Path
) -> None:
    """GET models/{name}/monitor: every check of the monitoring journal, oldest first, as the
    panel charts it (at, verdict, drifted share, decay, actions); no champion, no latest."""
    from nb_mlops.core.config import load_config
    from nb_mlops.core.monitoring import history

    # Given two checks journaled for the model, the second with a retrain that ran
    cfg = load_config(jp_root_dir)
    retrain = {"name": "retrain", "reason": "policy on_drift = retrain", "status": "planned"}
    for index, (verdict, share) in enumerate((("ok", 0.0), ("drift", 0.75))):
        check = {"record": "check", "id": f"check{index}", "version": "1", "verdict": verdict}
        check.update(data=f"batch@v{index + 1}", reference="train@v1", drifted=["x"] * index)
        check.update(share=share, decay=None, actions=[retrain] if index else [], acted=True)
        history.append(cfg, "demo-model", check)
    done = {**retrain, "status": "done", "run_id": "r1", "detail": "retraining run r1 SUCCEEDED"}
    history.append(cfg, "demo-model", {"record": "action", "id": "check1", "action": done})

    # When the route is read
    found = json.loads((await jp_fetch(*API, "models", "demo-model", "monitor")).body)

    # Then it lists both checks, oldest first, with the retrain's outcome
    assert found["model"] == "demo-model" and found["champion"] is None
    assert found["latest"] is None  # no champion: no verdict of its
    points = found["checks"]
    assert [(p["id"], p["verdict"], p["share"]) for p in points] == [
        ("check0", "ok", 0.0),
        ("check1", "drift", 0.75),
    ]
    assert points[1]["drifted"] == ["x"] and points[1]["data"] == "batch@v2"
    assert [(a["name"], a["status"], a["run_id"]) for a in points[1]["actions"]] == [
        ("retrain", "done", "r1")
    ]
    assert all(p["at"] for p in points)
    # a limit keeps the newest
    limited = await jp_fetch(*API, "models", "demo-model", "monitor", params={"limit": "1"})
    found = json.loads(limited.body)
    assert [p["id"] for p in found["checks"]] == ["check1"]


async def test_a_retrain_is_refused_without_a_snapshot_ref_or_a_champion(
    jp_fetch: Any, jp_root_dir: Path
) -> None:
    """The data must be NAME@vN (400); a model with no champion has nothing to retrain (404);
    nothing is written either way."""
    for body, needle in (
        ({}, "NAME@vN"),
        ({"data": "train"}, "NAME@vN"),
        ({"data": "train@v1\n"}, "NAME@vN"),  # `$` would let it through
        ({"data": "train@v1", "promote": "yes"}, "promote"),
    ):
        code, data = await _json_error(
            jp_fetch(*API, "models", "demo-model", "retrain", method="POST", body=json.dumps(body))
        )
        assert code == 400 and needle in data["message"], (body, data)
    body = json.dumps({"data": "train@v1"})
    code, data = await _json_error(
        jp_fetch(*API, "models", "demo-model", "retrain", method="POST", body=body)
    )
    assert code == 404 and "champion" in data["message"]
    assert _files(jp_root_dir) == {}


async def test_retrain_runs_the_champions_pipeline_as_a_job_and_promotes_it(
    jp_fetch: Any, jp_root_dir: Path
) -> None:
    """POST models/{name}/retrain starts a job that reruns the champion's stored pipeline
    (what `nb-mlops pipeline run --production` runs), tags it with the data, and promotes it
    through the gates when asked."""

    from sklearn.datasets import load_iris

    from nb_mlops.core import store
    from nb_mlops.core.config import load_config
    from nb_mlops.core.data import snapshot

    # Given a champion trained by a job on the snapshot `train`, and a new batch snapshotted
    cfg = load_config(jp_root_dir)
    iris = load_iris(as_frame=True).frame
    snapshot(iris, "train", wait=True, cfg=cfg)
    new_notebook(
        jp_root_dir / "nb" / "model.ipynb",
        [
            (
                "import nb_mlops\nfrom sklearn.linear_model import LogisticRegression",
                ["imports"],
            ),
            ("C: float = 1.0", ["parameters"]),
            (
                "%%track\ndf = nb_mlops.restore('train')\n"
                "X, y = df.drop(columns='target'), df['target']\n"
                "model = LogisticRegression(C=C, max_iter=300).fit(X, y)\n"
                "nb_mlops.log(accuracy=model.score(X, y), rows=len(df))",
                ["step:train"],
            ),
        ],
    )
    body = {"path": "nb/model.ipynb", "action": "promote", "parameters": {"C": 0.5}}
    response = await jp_fetch(*API, "jobs", method="POST", body=json.dumps(body))
    first = await _wait_final(jp_fetch, json.loads(response.body)["id"], timeout=300)
    assert first["status"] == "PROMOTED", first["log_tail"]
    snapshot(iris.iloc[::5].reset_index(drop=True), "batch", wait=True, cfg=cfg)

    # When a retrain on it is posted, promotion asked
    body = {"data": "batch@v1", "promote": True}
    response = await jp_fetch(
        *API, "models", "demo-model", "retrain", method="POST", body=json.dumps(body)
    )
    job = json.loads(response.body)
    assert response.code == 201 and job["action"] == "retrain" and job["data"] == "batch@v1"
    final = await _wait_final(jp_fetch, job["id"], timeout=300)

    # Then the job ran a production run of the stored pipeline, tagged with the data, promoted
    assert final["status"] == "PROMOTED", final["log_tail"]
    assert final["model_version"] == "2" and final["run_id"] != first["run_id"]
    run = store.client(cfg).get_run(final["run_id"])
    assert run.data.tags["nb_mlops.mode"] == "production"
    assert run.data.tags["nb_mlops.monitor.data"] == "batch@v1"
    # And it trained on the batch: the champion's training input `train` was pointed at it
    assert json.loads(run.data.tags["nb_mlops.data_pins"]) == {"train": "batch@v1"}
    client = store.client(cfg)
    (step,) = client.search_runs(
        [run.info.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'"
    )
    tracked = client.search_runs(
        [run.info.experiment_id], f"tags.mlflow.parentRunId = '{step.info.run_id}'"
    )
    assert [r.data.metrics["rows"] for r in tracked] == [30]
    listed = json.loads((await jp_fetch(*API, "jobs")).body)["jobs"]
    assert listed[0]["id"] == job["id"] and listed[0]["data"] == "batch@v1"
