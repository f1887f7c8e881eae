"""Every everyday model family is captured, stored safely, registered, promoted and served.

One table, `FAMILIES`, drives three parts, each on a real SQLite store:

1. Interactive (one warm kernel): a notebook with one `%%track` cell per family runs in a real
   kernel (papermill). Each run's logged model is loaded with `mlflow.pyfunc.load_model` and
   predicts exactly what the in-memory model predicted in the kernel; each cell ends with the
   one-line summary (run name, id, status, model state, link).
2. The step code path, whole matrix (this warm process): for each family a pipeline-shaped run
   (parent run + step run, as the runner makes them) is tracked with the same `track()` a step
   kernel's `%%track` calls, with the runner's environment (`NB_MLOPS_RUN_ID`, mode `pipeline`).
   It is promoted, and `models:/NAME@champion` predicts exactly what the in-memory model did.
3. The real runner, a representative subset (a tree ensemble, a Pipeline, xgboost's native
   format): a notebook built into a pipeline, run in fresh kernels, promoted, served from
   `models:/NAME@champion`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
from model_helpers import tracked_pipeline_run
from nbutil import execute, new_notebook

import nb_mlops
from nb_mlops.core import store
from nb_mlops.core.config import load_config
from nb_mlops.core.errors import PromotionError

IMPORTS = """import numpy as np
import xgboost as xgb
import lightgbm as lgb
from sklearn.datasets import load_wine
from sklearn.compose import ColumnTransformer
from sklearn.cluster import KMeans
from sklearn.ensemble import (GradientBoostingClassifier, HistGradientBoostingClassifier,
    RandomForestClassifier, RandomForestRegressor)
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import GridSearchCV, RandomizedSearchCV
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier
X, y = load_wine(return_X_y=True)
"""

# family → (the fit, as a notebook cell writes it; how the in-memory model predicts)
FAMILIES: dict[str, tuple[str, str]] = {
    "linear": ("LogisticRegression(max_iter=5000).fit(X, y)", "model.predict(X)"),
    "ridge_regression": ("Ridge(alpha=0.5).fit(X, y)", "model.predict(X)"),
    "tree": ("DecisionTreeClassifier(random_state=0).fit(X, y)", "model.predict(X)"),
    "forest": (
        "RandomForestClassifier(n_estimators=30, random_state=0).fit(X, y)",
        "model.predict(X)",
    ),
    "forest_regression": (
        "RandomForestRegressor(n_estimators=10, random_state=0).fit(X, y)",
        "model.predict(X)",
    ),
    "gradient_boosting": (
        "GradientBoostingClassifier(n_estimators=10, random_state=0).fit(X, y)",
        "model.predict(X)",
    ),
    "hist_gradient_boosting": (
        "HistGradientBoostingClassifier(max_iter=10, random_state=0).fit(X, y)",
        "model.predict(X)",
    ),
    "svm": ("SVC().fit(X, y)", "model.predict(X)"),
    "knn": ("KNeighborsClassifier(algorithm='kd_tree').fit(X, y)", "model.predict(X)"),
    "naive_bayes": ("GaussianNB().fit(X, y)", "model.predict(X)"),
    "clustering": ("KMeans(n_clusters=3, n_init=3, random_state=0).fit(X)", "model.predict(X)"),
    "pipeline": (
        "make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)).fit(X, y)",
        "model.predict(X)",
    ),
    "column_transformer": (
        "make_pipeline(ColumnTransformer([('scaled', StandardScaler(), [0, 1, 2, 3]), "
        "('kept', 'passthrough', list(range(4, 13)))]), LogisticRegression(max_iter=5000))"
        ".fit(X, y)",
        "model.predict(X)",
    ),
    "grid_search": (
        "GridSearchCV(DecisionTreeClassifier(random_state=0), {'max_depth': [2, 4]}, cv=3)"
        ".fit(X, y)",
        "model.predict(X)",
    ),
    "random_search": (
        "RandomizedSearchCV(RandomForestClassifier(n_estimators=5, random_state=0), "
        "{'max_depth': [2, 4, None]}, n_iter=2, cv=3, random_state=0).fit(X, y)",
        "model.predict(X)",
    ),
    "xgboost": ("xgb.XGBClassifier(n_estimators=10).fit(X, y)", "model.predict(X)"),
    "xgboost_booster": (
        "xgb.train({'objective': 'multi:softprob', 'num_class': 3}, xgb.DMatrix(X, label=y), 10)",
        "model.predict(xgb.DMatrix(X))",
    ),
    "lightgbm": (
        "lgb.LGBMClassifier(n_estimators=10, verbose=-1).fit(X, y)",
        "model.predict(X)",
    ),
    "lightgbm_booster": (
        "lgb.train({'objective': 'multiclass', 'num_class': 3, 'verbose': -1}, "
        "lgb.Dataset(X, label=y), 10)",
        "model.predict(X)",
    ),
}
# how each family must be stored: the flavor MLflow records, and the format
STORED = {
    "xgboost": ("xgboost", "ubj"),
    "xgboost_booster": ("xgboost", "ubj"),
    "lightgbm": ("lightgbm", "skops"),
    "lightgbm_booster": ("lightgbm", "text"),
}


def _wine() -> np.ndarray:
    from sklearn.datasets import load_wine

    return np.asarray(load_wine(return_X_y=True)[0])


def _tracked_cell(family: str) -> str:
    fit, predict = FAMILIES[family]
    return f"%%track -n {family}\nmodel = {fit}\npredicted['{family}'] = np.asarray({predict})"


def _client(cfg: Any) -> Any:
    mlflow.set_tracking_uri(cfg.tracking_uri)
    mlflow.set_registry_uri(cfg.registry_uri)
    return store.client(cfg)


# --- 1. interactive, one warm kernel ----------------------------------------------------------


def test_every_family_tracked_in_a_kernel_is_logged_and_predicts_the_same(project: Path) -> None:
    # Given a notebook that fits every family in its own %%track cell, in one kernel
    cells = ["%load_ext nb_mlops\n" + IMPORTS + "predicted = {}"]
    cells += [_tracked_cell(family) for family in FAMILIES]
    cells.append("np.savez('predicted.npz', **predicted)")
    nb = new_notebook(project / "matrix.ipynb", cells)
    out = project / "matrix.out.ipynb"
    # When it runs in a real kernel
    executed = execute(nb, output=out, parameters={"PAPERMILL_INPUT_PATH": str(nb)}, timeout=600)
    # Then every run is FINISHED and logged exactly one model, stored as its family requires
    cfg = load_config()
    client = _client(cfg)
    exp = client.get_experiment_by_name("matrix")
    found = client.search_runs([exp.experiment_id], "tags.`mlflow.parentRunId` IS NULL")
    runs = {r.info.run_name: r for r in found}  # (autolog nests a search's candidates below it)
    assert set(runs) == set(FAMILIES)
    predicted = np.load(project / "predicted.npz")
    X = _wine()
    for family, run in runs.items():
        assert run.info.status == "FINISHED", family
        model_id = run.data.tags.get("nb_mlops.model.model")
        assert model_id and model_id.startswith("m-"), (family, run.data.tags)
        logged = client.get_logged_model(model_id)
        assert str(logged.status).endswith("READY"), family
        flavor, fmt = STORED.get(family, ("sklearn", "skops"))
        assert logged.tags["nb_mlops.model.format"] == fmt, family
        assert len(logged.tags["nb_mlops.model_sha256"]) == 64
        loaded = mlflow.pyfunc.load_model(f"models:/{model_id}")
        assert flavor in loaded.metadata.flavors, family
        # And the stored model predicts exactly what the in-memory one did
        np.testing.assert_array_equal(np.asarray(loaded.predict(X)), predicted[family], family)
    # the trusted types are the model's own: a tree needs sklearn's Tree, a linear model nothing
    assert json.loads(_model_tag(client, runs["forest"], "trusted_types")) == [
        "sklearn.tree._tree.Tree"
    ]
    assert json.loads(_model_tag(client, runs["linear"], "trusted_types")) == []

    # And each tracked cell ended with its one-line summary: name, id, status, model, link
    by_source = {cell.source.splitlines()[0]: cell for cell in executed.cells}
    forest = runs["forest"]
    text = _plain_output(by_source["%%track -n forest"])
    assert f"run forest ({forest.info.run_id[:12]}) · FINISHED · model: " in text
    assert f"/#/experiments/{exp.experiment_id}/runs/{forest.info.run_id}" in text
    assert "model: pending" in text or "model: logged" in text
    # (a kernel shows it as a widget, with the same line as HTML for frontends without widgets)
    data = [o.get("data", {}) for o in by_source["%%track -n forest"].outputs]
    assert any("application/vnd.jupyter.widget-view+json" in d and "text/html" in d for d in data)


def _model_tag(client: Any, run: Any, key: str) -> str:
    logged = client.get_logged_model(run.data.tags["nb_mlops.model.model"])
    return str(logged.tags[f"nb_mlops.model.{key}"])


def _plain_output(cell: Any) -> str:
    return "\n".join(
        str(o.get("data", {}).get("text/plain", "")) + str(o.get("text", ""))
        for o in cell.get("outputs", [])
    )


# --- 2. the step code path, whole matrix, in this warm process -------------------------------------


@pytest.fixture
def step_namespace() -> dict[str, Any]:
    namespace: dict[str, Any] = {}
    exec(IMPORTS, namespace)  # noqa: S102 - the test's own fixture code
    return namespace


def test_every_family_tracked_in_a_step_is_promoted_and_served_from_champion(
    project: Path, step_namespace: dict[str, Any]
) -> None:
    cfg = load_config()
    client = _client(cfg)
    X = _wine()
    for family in FAMILIES:
        # Given a pipeline run whose step tracked the family's fit
        fit, predict = FAMILIES[family]
        run_id = tracked_pipeline_run(
            cfg, f"model = {fit}", step_namespace, pipeline=f"matrix-{family}", name=family
        )
        expected = np.asarray(eval(predict, step_namespace))  # noqa: S307 - the table's code
        # When it is promoted
        decision = nb_mlops.promote(run_id, model=family, reason="matrix")
        assert decision.status == "PROMOTED", family
        # Then the version is linked to the logged model and carries the safety record
        mv = client.get_model_version_by_alias(family, "champion")
        model_id = mv.tags["nb_mlops.model_id"]
        assert mv.source == f"models:/{model_id}", family
        logged = client.get_logged_model(model_id)
        assert json.loads(logged.tags["mlflow.modelVersions"]) == [
            {"name": family, "version": mv.version}
        ]
        fmt = STORED.get(family, ("sklearn", "skops"))[1]
        assert mv.tags["nb_mlops.model.format"] == fmt, family
        entry = nb_mlops.history(family)[-1]
        assert entry.model_safety["format"] == fmt
        assert entry.model_safety["trusted_types"] == json.loads(
            mv.tags["nb_mlops.model.trusted_types"]
        )
        # And models:/NAME@champion predicts exactly what the in-memory model predicted
        served = mlflow.pyfunc.load_model(f"models:/{family}@champion")
        np.testing.assert_array_equal(np.asarray(served.predict(X)), expected, family)


# --- 3. the real runner, a representative subset ----------------------------------------------------

RUNNER_SUBSET = ("forest", "pipeline", "xgboost")


def test_representative_families_through_the_real_runner(project: Path) -> None:
    from nb_mlops.pipeline import build_pipeline, run_pipeline

    # Given a notebook with one step per family, each fitting it in a %%track cell
    steps = [
        (
            f"%%track -n {family}\nmodel = {FAMILIES[family][0]}\n"
            f"np.save('{family}.npy', model.predict(X))",
            [f"step:{family}"],
        )
        for family in RUNNER_SUBSET
    ]
    notebook = new_notebook(
        project / "subset.ipynb",
        [
            ("%load_ext nb_mlops\n" + IMPORTS, ["imports"]),
            ("seed: int = 0", ["parameters"]),
            *steps,
        ],
    )
    build_pipeline(notebook)
    # When the pipeline runs in fresh kernels
    run = run_pipeline("subset", cache=False)
    assert run.status == "SUCCEEDED", run.error
    cfg = load_config()
    client = _client(cfg)
    tracked = client.search_runs(
        [run.experiment_id], "tags.`nb_mlops.mode` = 'pipeline' and tags.`nb_mlops.step` != ''"
    )
    model_ids = {
        r.info.run_name: r.data.tags["nb_mlops.model.model"]
        for r in tracked
        if "nb_mlops.model.model" in r.data.tags  # the %%track run inside each step
    }
    assert set(model_ids) == set(RUNNER_SUBSET)
    X = _wine()
    for family in RUNNER_SUBSET:
        # And each step's model is promoted from that pipeline run
        decision = nb_mlops.promote(
            run.run_id, model=f"subset-{family}", source=f"models:/{model_ids[family]}"
        )
        assert decision.status == "PROMOTED"
        # Then the champion predicts what the step's in-memory model predicted
        served = mlflow.pyfunc.load_model(f"models:/subset-{family}@champion")
        expected = np.load(project / f"{family}.npy")
        np.testing.assert_array_equal(np.asarray(served.predict(X)), expected, family)
        mv = client.get_model_version_by_alias(f"subset-{family}", "champion")
        assert mv.source == f"models:/{model_ids[family]}"


# --- 4. models kept in containers and objects, in a real kernel ---------------------------------

KEPT = {
    # run name → (the cell, {logged name: how the notebook predicts with it})
    "compare": (
        "models = {'tree': DecisionTreeClassifier(random_state=0), 'nb': GaussianNB()}\n"
        "for m in models.values():\n    m.fit(X, y)",
        {"models-tree": "models['tree']", "models-nb": "models['nb']"},
    ),
    "results": (
        "results = []\nfor d in (2, 3):\n"
        "    results.append((d, DecisionTreeClassifier(max_depth=d, random_state=0).fit(X, y)))",
        {"results-0-1": "results[0][1]", "results-1-1": "results[1][1]"},
    ),
    "holder": (
        "class Experiment:\n    pass\nexp = Experiment()\n"
        "exp.model = LogisticRegression(max_iter=5000).fit(X, y)",
        {"model": "exp.model"},
    ),
}


def test_models_kept_in_containers_and_objects_are_logged(project: Path) -> None:
    # Given cells that keep their models in a dict, in a list of (name, model) pairs, and as an
    # attribute of an object of the notebook, not under names of their own
    cells = ["%load_ext nb_mlops\n" + IMPORTS + "predicted = {}"]
    for run, (source, logged) in KEPT.items():
        saves = "".join(f"\npredicted['{run}:{n}'] = {e}.predict(X)" for n, e in logged.items())
        cells.append(f"%%track -n {run}\n{source}{saves}")
    cells.append("np.savez('predicted.npz', **predicted)")
    nb = new_notebook(project / "kept.ipynb", cells)
    # When they run in a real kernel
    execute(
        nb,
        output=project / "kept.out.ipynb",
        parameters={"PAPERMILL_INPUT_PATH": str(nb)},
        timeout=600,
    )
    # Then each kept model is logged under its path and predicts what it did in the kernel
    client = _client(load_config())
    exp = client.get_experiment_by_name("kept")
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    predicted = np.load(project / "predicted.npz")
    for run, (_source, logged) in KEPT.items():
        tags = runs[run].data.tags
        assert {k for k in tags if k.startswith("nb_mlops.model.")} == {
            f"nb_mlops.model.{name}" for name in logged
        }, run
        for name in logged:
            served = mlflow.pyfunc.load_model(f"models:/{tags[f'nb_mlops.model.{name}']}")
            np.testing.assert_array_equal(served.predict(_wine()), predicted[f"{run}:{name}"])


def test_a_run_with_several_models_says_which_is_registered_and_takes_a_name(
    project: Path, step_namespace: dict[str, Any]
) -> None:
    # Given a pipeline run whose step compared two models kept in a dict
    cfg = load_config()
    run_id = tracked_pipeline_run(
        cfg,
        "models = {'tree': DecisionTreeClassifier(random_state=0), 'nb': GaussianNB()}\n"
        "for m in models.values():\n    m.fit(X, y)",
        step_namespace,
        pipeline="compare",
    )
    # When it is promoted without naming one, Then the decision says which was registered,
    # among which, and how to choose
    first = nb_mlops.promote(run_id, model="compared", reason="default choice")
    assert first.note and "models-nb" in first.note and "models-tree" in first.note
    assert "--source NAME" in first.note and first.note in first.summary()
    chosen = first.note.split("`")[1]
    # And naming the other one registers that one
    other = "models-tree" if chosen == "models-nb" else "models-nb"
    second = nb_mlops.promote(run_id, model="compared-by-name", source=other, reason="by name")
    assert second.note is None
    client = _client(cfg)
    version = client.get_model_version_by_alias("compared-by-name", "champion")
    logged = client.get_logged_model(version.tags["nb_mlops.model_id"])
    assert logged.name == other
    served = mlflow.pyfunc.load_model("models:/compared-by-name@champion")
    expected = step_namespace["models"][other.split("-", 1)[1]].predict(_wine())
    np.testing.assert_array_equal(served.predict(_wine()), expected)
    # And a name the run did not log is refused, listing those it did
    with pytest.raises(PromotionError, match=r"no model named 'svm' \(logged: models-nb"):
        nb_mlops.promote(run_id, model="compared-svm", source="svm", reason="typo")
