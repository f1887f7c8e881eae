"""The jupyter_server extension of nb_mlops: REST routes under `/nb-mlops/api/` and the job service.

Enabled by `jupyter-config/jupyter_server_config.d/nb_mlops.json` (installed by the wheel). Importing
this package is cheap: handlers (tornado, jupyter_server) load only when the server loads the extension,
so the job worker (`python -m nb_mlops.server.worker`) starts fast.
"""

from __future__ import annotations

from typing import Any

__all__ = ["_jupyter_server_extension_points", "_load_jupyter_server_extension"]


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "nb_mlops.server"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    """Register the handlers and settle jobs whose process died while the server was down."""
    from pathlib import Path

    from nb_mlops.core.config import load_config
    from nb_mlops.server.errors import Scrubber
    from nb_mlops.server.handlers import ServerState, setup_handlers
    from nb_mlops.server.jobs import JobService

    root_dir = Path(serverapp.root_dir).resolve()
    cfg = load_config(root_dir)
    token = getattr(getattr(serverapp, "identity_provider", None), "token", "") or ""
    scrub = Scrubber(root_dir, secrets=[token])
    jobs = JobService(cfg.store_dir / "jobs", scrub=scrub)
    failed = jobs.reconcile_all()
    state = ServerState(root_dir=root_dir, project_root=cfg.root, jobs=jobs, scrub=scrub)
    setup_handlers(serverapp.web_app, state)
    serverapp.log.info(
        "nb_mlops: REST API at %snb-mlops/api/ (%d stale job(s) marked FAILED)",
        serverapp.web_app.settings.get("base_url", "/"),
        failed,
    )
