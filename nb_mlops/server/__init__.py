"""The jupyter_server extension of nb_mlops: REST routes under `/nb-mlops/api/` and the job service.

Enabled by `jupyter-config/jupyter_server_config.d/nb_mlops.json` (installed by the wheel), which
names this package; its extension point is the `NbMlopsApp` extension application (`app.py`),
configured as `c.NbMlopsApp.<trait>` (e.g. `job_service_class`). Importing this package is cheap:
the application, handlers, tornado and jupyter_server load only when the server loads the
extension, so the job worker (`python -m nb_mlops.server.worker`) starts fast.
"""

from __future__ import annotations

from typing import Any

__all__ = ["_jupyter_server_extension_points"]


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from nb_mlops.server.app import NbMlopsApp

    return [{"module": "nb_mlops.server", "app": NbMlopsApp}]
