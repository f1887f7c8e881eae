"""The links nb_mlops prints land where they say, in the MLflow UI this project installs: checked
against the routes of MLflow's own UI bundle (a run's page, an experiment's runs list rather
than its overview tab, a registered model and one of its versions)."""

from __future__ import annotations

import re
from pathlib import Path

import mlflow
import pytest

from nb_mlops.core.runs import experiment_url, model_url, run_url

BASE = "http://127.0.0.1:5000"


@pytest.fixture(scope="module")
def routes() -> list[str]:
    bundle = Path(mlflow.__file__).parent / "server" / "js" / "build" / "static" / "js"
    found: set[str] = set()
    for script in bundle.glob("*.js"):
        found.update(re.findall(r'"(/(?:experiments|models|runs)[^"\s]*)"', script.read_text()))
    assert found, f"no routes found in {bundle}"
    return sorted(found)


def _route(url: str, routes: list[str]) -> str | None:
    """The UI route a link's fragment matches (`:param` matches one path segment; literal
    segments win, as in the UI's router)."""
    fragment = url.split("#", 1)[1]
    for route in sorted(routes, key=lambda r: r.count(":")):
        pattern = re.sub(r":[A-Za-z]+", "[^/]+", re.escape(route).replace(r"\:", ":"))
        if "*" not in route and re.fullmatch(pattern, fragment):
            return route
    return None


def test_each_link_matches_a_route_of_the_installed_ui(routes: list[str]) -> None:
    assert (
        _route(run_url(BASE, "3", "a" * 32), routes) == "/experiments/:experimentId/runs/:runUuid"
    )
    assert _route(experiment_url(BASE, "3"), routes) == "/experiments/:experimentId/runs"
    assert _route(model_url(BASE, "churn-model"), routes) == "/models/:modelName"
    assert _route(model_url(BASE, "churn model", "2"), routes) == (
        "/models/:modelName/versions/:version"
    )
