"""The jupyter_server extension application of nb_mlops: settings, routes and the job service.

`NbMlopsApp` is a jupyter_server `ExtensionApp` named `nb_mlops`, so its traits are set like any
server setting (`c.NbMlopsApp.job_service_class = "my_site.jobs.QueueJobService"` in a
`jupyter_server_config.py`, or `--NbMlopsApp.job_service_class=...` on the command line).
The routes live under `<base_url>nb-mlops/api/` (`handlers.ROUTES`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jupyter_server.extension.application import ExtensionApp
from jupyter_server.utils import url_path_join
from traitlets import Type

from nb_mlops.server.handlers import API, ROUTES, STATE_KEY, ServerState

__all__ = ["NbMlopsApp"]


class NbMlopsApp(ExtensionApp):
    """Registers the REST handlers and builds the shared `ServerState` once per server."""

    name = "nb_mlops"
    description = "One-click promotion of notebooks to production pipelines (REST API)."
    load_other_extensions = True

    job_service_class = Type(
        default_value="nb_mlops.server.jobs.JobService",
        klass="nb_mlops.server.jobs.JobService",
        config=True,
        help=(
            "The class that starts, lists and cancels run and promote jobs: `JobService` or a "
            "subclass (e.g. one that hands jobs to a queue or a cluster). It is built as "
            "`cls(jobs_dir, scrub=scrub)`."
        ),
    )

    state: ServerState | None = None

    def initialize_settings(self) -> None:
        """Build the job service (settling jobs whose process died while the server was down)
        and the state every handler shares."""
        from nb_mlops.core.config import load_config
        from nb_mlops.server.errors import Scrubber

        serverapp: Any = self.serverapp
        root_dir = Path(serverapp.root_dir).resolve()
        cfg = load_config(root_dir)
        token = getattr(getattr(serverapp, "identity_provider", None), "token", "") or ""
        scrub = Scrubber(root_dir, secrets=[token])
        jobs = self.job_service_class(cfg.store_dir / "jobs", scrub=scrub)
        failed = jobs.reconcile_all()
        self.state = ServerState(root_dir=root_dir, project_root=cfg.root, jobs=jobs, scrub=scrub)
        self.settings[STATE_KEY] = self.state
        self.log.info(
            "nb_mlops: REST API at %s%s/ (%d stale job(s) marked FAILED)",
            self.settings.get("base_url", "/"),
            API,
            failed,
        )

    def initialize_handlers(self) -> None:
        self.handlers.extend((url_path_join(API, pattern), handler) for pattern, handler in ROUTES)

    async def stop_extension(self) -> None:
        """Reap finished job processes; running jobs keep going (their state is on disk)."""
        if self.state is not None:
            self.state.jobs.shutdown()
