"""Which models a tracked cell logs, and the safety of how they are stored and promoted.

Detection is checked against an oracle over generated cells (hypothesis): whatever a cell does
to the namespace (new fits, refits, aliases, parameter changes, deletions), exactly the models
fitted during it are logged, once each. Safety is checked on a real store: the types a model may
ask its loader to trust come from the model and pass the trust policy; a pickle or a type outside
the policy is refused at logging and at promotion, with a message naming it.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from model_helpers import tracked_pipeline_run
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import nb_mlops
from nb_mlops.core import store, tracking
from nb_mlops.core.capture import models
from nb_mlops.core.config import load_config
from nb_mlops.core.errors import ConfigError, PromotionError

X = np.arange(40, dtype=float).reshape(20, 2)
Y = np.array([0, 1] * 10)

# --- detection ------------------------------------------------------------------------------------

NAMES = ("a", "b", "c")
MAKERS = {
    "dummy": lambda: DummyClassifier(),
    "scaler": lambda: StandardScaler(),
    "pipeline": lambda: make_pipeline(StandardScaler(), DummyClassifier()),
}
op = st.one_of(
    st.tuples(st.just("fit_new"), st.sampled_from(NAMES), st.sampled_from(sorted(MAKERS))),
    st.tuples(st.just("refit"), st.sampled_from(NAMES)),
    st.tuples(st.just("alias"), st.sampled_from(NAMES), st.sampled_from(NAMES)),
    st.tuples(st.just("set_params"), st.sampled_from(NAMES)),
    st.tuples(st.just("unfitted"), st.sampled_from(NAMES), st.sampled_from(sorted(MAKERS))),
    st.tuples(st.just("delete"), st.sampled_from(NAMES)),
    # kept in a container or an object rather than under a name of its own
    st.tuples(st.just("keep"), st.sampled_from(NAMES), st.sampled_from(["bag", "shelf", "box"])),
    st.tuples(st.just("fit_into"), st.sampled_from(["bag", "shelf", "box"]), st.just("dummy")),
)


class Holder:
    """An object of a class of the notebook (kernels define them in `__main__`)."""


Holder.__module__ = "__main__"


def _keep(namespace: dict[str, Any], where: str, key: str, value: Any) -> None:
    if where == "bag":
        namespace.setdefault("bag", {})[key] = value
    elif where == "shelf":
        namespace.setdefault("shelf", []).append(("run", value))  # (name, model) pairs
    else:
        setattr(namespace.setdefault("box", Holder()), key, value)


def _kept(namespace: dict[str, Any]) -> dict[int, Any]:
    """Every object the namespace keeps: names, the bag's values, the shelf's pairs, the box's
    attributes."""
    kept = {id(v): v for v in namespace.values()}
    kept |= {id(v): v for v in namespace.get("bag", {}).values()}
    kept |= {id(v): v for _, v in namespace.get("shelf", [])}
    kept |= {id(v): v for v in vars(namespace.get("box", Holder())).values()}
    return kept


def _fit(model: Any) -> Any:
    return model.fit(X, Y)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(setup=st.lists(op, max_size=4), cell=st.lists(op, max_size=5))
def test_exactly_the_models_fitted_during_a_cell_are_logged(
    setup: list[tuple[str, ...]], cell: list[tuple[str, ...]]
) -> None:
    namespace: dict[str, Any] = {}

    def apply(ops: list[tuple[str, ...]], fitted: set[int] | None) -> None:
        for kind, name, *rest in ops:
            value = namespace.get(name)
            if kind == "fit_new":
                namespace[name] = _fit(MAKERS[rest[0]]())
            elif kind == "unfitted":
                namespace[name] = MAKERS[rest[0]]()
            elif kind == "refit" and value is not None:
                _fit(value)
            elif kind == "alias" and value is not None:
                namespace[rest[0]] = value
            elif kind == "set_params" and value is not None:
                key, current = next(iter(value.get_params(deep=False).items()))
                value.set_params(**{key: current})
                continue  # a parameter change is not a fit
            elif kind == "delete":
                namespace.pop(name, None)
            elif kind == "keep" and value is not None:
                _keep(namespace, rest[0], name, value)
                continue
            elif kind == "fit_into":
                model = _fit(MAKERS[rest[0]]())
                _keep(namespace, name, "fresh", model)
                if fitted is not None:
                    fitted.add(id(model))
                continue
            else:
                continue
            if fitted is not None and kind in ("fit_new", "refit") and name in namespace:
                fitted.add(id(namespace[name]))

    # Given a namespace prepared by earlier cells
    apply(setup, None)
    before = models.snapshot(namespace)
    # When a cell changes it
    fitted_in_cell: set[int] = set()
    apply(cell, fitted_in_cell)
    found = models.fitted_since(namespace, before)
    # Then the logged models are the fitted objects the namespace still keeps (under a name,
    # in a list, tuple or dict, or as an attribute of an object of the notebook), each once
    bound = _kept(namespace)
    expected = {i for i in fitted_in_cell if i in bound and models.is_fitted(bound[i])}
    assert len(found) == len(expected)
    if len(expected) == 1:
        assert set(found) == {"model"}
    # (copies are logged: compare by class and fitted state rather than identity)
    assert sorted(type(m).__name__ for m in found.values()) == sorted(
        type(bound[i]).__name__ for i in expected
    )


def test_a_pipeline_is_logged_once_not_its_steps_and_unfitted_models_never() -> None:
    # Given a scaler fitted in the same cell as the pipeline that holds it
    namespace: dict[str, Any] = {"spare": LogisticRegression()}
    before = models.snapshot(namespace)
    scaler = StandardScaler()
    namespace["scaler"] = scaler
    namespace["pipe"] = make_pipeline(scaler, LogisticRegression()).fit(X, Y)
    # Then only the pipeline is logged (the unfitted spare is not)
    found = models.fitted_since(namespace, before)
    assert [type(m).__name__ for m in found.values()] == ["Pipeline"]
    # And refitting the same pipeline object in a later cell is seen (its steps are refitted)
    before = models.snapshot(namespace)
    namespace["pipe"].fit(X[::-1], Y)
    assert list(models.fitted_since(namespace, before)) == ["model"]
    # But a cell that only reads it logs nothing
    before = models.snapshot(namespace)
    namespace["pipe"].predict(X)
    assert models.fitted_since(namespace, before) == {}


def test_a_model_in_ipythons_output_history_is_named_by_its_variable() -> None:
    # Given a model shown as an earlier cell's result (IPython keeps it in `Out`) and bound to
    # a name, and a second model kept in a dict
    lr = LogisticRegression().fit(X, Y)
    namespace: dict[str, Any] = {"Out": {3: lr}, "In": ["", "lr"], "lr": lr, "bag": {}}
    before = models.snapshot(namespace)
    # When a cell refits it and fits another into the dict
    lr.fit(X[::-1], Y)
    namespace["bag"]["pipe"] = make_pipeline(StandardScaler(), DummyClassifier()).fit(X, Y)
    # Then they are named by the user's variable and path, never `Out-3`
    assert sorted(models.fitted_since(namespace, before)) == ["bag-pipe", "lr"]


# --- safety when logging ----------------------------------------------------------------------------


def _track(namespace: dict[str, Any], source: str) -> dict[str, str]:
    tracking.bind_kernel(namespace)
    try:
        with tracking.track(name="cell", cell=source) as run:
            exec(source, namespace)  # noqa: S102 - the test's own cell
        tracking.flush()
    finally:
        tracking.bind_kernel(None)
    return models.status(run.run_id) | {"run_id": run.run_id}


def _namespace() -> dict[str, Any]:
    namespace: dict[str, Any] = {"X": X, "Y": Y, "__name__": "__main__"}
    exec(  # noqa: S102
        "from sklearn.base import BaseEstimator, TransformerMixin\n"
        "from sklearn.pipeline import make_pipeline\n"
        "from sklearn.preprocessing import FunctionTransformer, StandardScaler\n"
        "from sklearn.linear_model import LogisticRegression\n",
        namespace,
    )
    return namespace


def test_models_the_skops_format_cannot_load_elsewhere_are_refused_with_the_reason(
    project: Path,
) -> None:
    namespace = _namespace()
    # A class defined in the notebook itself
    state = _track(
        namespace,
        "class Clip(BaseEstimator, TransformerMixin):\n"
        "    def fit(self, X, y=None):\n        self.max_ = X.max(); return self\n"
        "    def transform(self, X):\n        return X.clip(0, self.max_)\n"
        "model = make_pipeline(Clip(), LogisticRegression()).fit(X, Y)",
    )
    assert state["model"].startswith("not logged: class Clip is defined in the notebook")
    # A lambda inside a FunctionTransformer
    state = _track(
        namespace,
        "model = make_pipeline(FunctionTransformer(lambda x: x * 2), LogisticRegression())"
        ".fit(X, Y)",
    )
    assert "is a function defined in the notebook (or a lambda)" in state["model"]
    # Both said on the run, and no model was logged
    client = store.client(load_config())
    run = client.get_run(state["run_id"])
    assert run.data.tags["nb_mlops.model.model"].startswith("not logged: parameter func=")
    assert client.search_logged_models([run.info.experiment_id]) == []


def test_the_projects_own_module_is_trusted_and_a_setting_restricts_it(project: Path) -> None:
    # Given a transformer class in a module of the project
    (project / "project_features.py").write_text(
        "from sklearn.base import BaseEstimator, TransformerMixin\n"
        "class Clip(BaseEstimator, TransformerMixin):\n"
        "    def fit(self, X, y=None):\n        self.max_ = X.max(); return self\n"
        "    def transform(self, X):\n        return X.clip(0, self.max_)\n"
    )
    sys.path.insert(0, str(project))
    try:
        namespace = _namespace()
        cell = (
            "from project_features import Clip\n"
            "model = make_pipeline(Clip(), StandardScaler(), LogisticRegression()).fit(X, Y)"
        )
        # When a pipeline using it is tracked in a pipeline step and promoted
        run_id = tracked_pipeline_run(load_config(), cell, namespace)
        decision = nb_mlops.promote(run_id, model="clip")
        # Then its type is trusted as the project's own, recorded, and the champion loads
        assert decision.status == "PROMOTED"
        client = store.client(load_config())
        mv = client.get_model_version("clip", "1")
        assert json.loads(mv.tags["nb_mlops.model.trusted_types"]) == ["project_features.Clip"]
        mlflow.set_tracking_uri(load_config().tracking_uri)
        served = mlflow.pyfunc.load_model("models:/clip@champion")
        np.testing.assert_array_equal(served.predict(X), namespace["model"].predict(X))

        # When the project restricts the trusted modules to scikit-learn's and numpy's
        with (project / "pyproject.toml").open("a") as fh:
            fh.write('trusted_model_modules = ["sklearn", "numpy"]\n')
        # Then the model is refused at promotion, naming the type and the setting
        with pytest.raises(PromotionError, match=r"trust project_features\.Clip, which "):
            nb_mlops.promote(run_id, model="clip-again")
        # And a new fit using it is not logged, with the same reason on the cell's summary
        state = _track(namespace, cell)
        assert state["model"].startswith(
            "not logged: class project_features.Clip is not trusted by "
            'trusted_model_modules = [sklearn, numpy]; add "project_features"'
        )
    finally:
        sys.path.remove(str(project))
        sys.modules.pop("project_features", None)


def test_trusted_model_modules_must_be_a_list_of_names(project: Path) -> None:
    with (project / "pyproject.toml").open("a") as fh:
        fh.write('trusted_model_modules = "sklearn"\n')
    with pytest.raises(
        ConfigError, match=r"`trusted_model_modules` must be a non-empty list .* 'sklearn'"
    ):
        _ = load_config().trusted_model_modules


# --- safety when promoting and loading ----------------------------------------------------------------


def _user_logged_run(cfg: Any, **log_kwargs: Any) -> str:
    """A pipeline run whose step logged a model with MLflow directly (`%%track --no-autolog`)."""
    namespace: dict[str, Any] = {"X": X, "Y": Y, "mlflow": mlflow, "kw": log_kwargs}
    cell = (
        "from sklearn.linear_model import LogisticRegression\n"
        "fitted = LogisticRegression().fit(X, Y)\n"
        "mlflow.sklearn.log_model(fitted, name='by_hand', pip_requirements=['scikit-learn'], **kw)"
    )
    return tracked_pipeline_run(cfg, cell, namespace, autolog=False)


def test_a_pickled_model_is_refused_at_promotion_unless_trusted_explicitly(project: Path) -> None:
    cfg = load_config()
    import mlflow.sklearn  # noqa: F401 - the cell below logs with it

    run_id = _user_logged_run(cfg, serialization_format="cloudpickle")
    with pytest.raises(PromotionError, match="is stored as a cloudpickle file: loading it can run"):
        nb_mlops.promote(run_id, model="pickled")
    assert store.client(cfg).search_registered_models() == []
    with (project / "pyproject.toml").open("a") as fh:
        fh.write('trusted_model_modules = ["*"]\n')
    decision = nb_mlops.promote(run_id, model="pickled", reason="reviewed by hand")
    assert decision.status == "PROMOTED"
    assert nb_mlops.history("pickled")[-1].model_safety["format"] == "cloudpickle"


def test_a_model_whose_stored_trust_list_names_dangerous_types_is_refused(project: Path) -> None:
    cfg = load_config()
    import mlflow.sklearn  # noqa: F401

    run_id = _user_logged_run(cfg, skops_trusted_types=["builtins.eval", "posix.system"])
    with pytest.raises(PromotionError, match=r"trust builtins\.eval, posix\.system, which the "):
        nb_mlops.promote(run_id, model="crafted")


def test_loading_a_model_whose_trust_list_was_stripped_is_refused(project: Path) -> None:
    # Given a tree model logged by %%track, and its MLmodel edited to trust nothing
    namespace = _namespace()
    state = _track(
        namespace,
        "from sklearn.tree import DecisionTreeClassifier\n"
        "model = DecisionTreeClassifier().fit(X, Y)",
    )
    assert state["model"] == "logged"
    cfg = load_config()
    client = store.client(cfg)
    model_id = client.get_run(state["run_id"]).data.tags["nb_mlops.model.model"]
    folder = Path(client.get_logged_model(model_id).artifact_location.removeprefix("file://"))
    mlmodel = folder / "MLmodel"
    text = mlmodel.read_text()
    assert "sklearn.tree._tree.Tree" in text
    mlmodel.write_text(text.replace("- sklearn.tree._tree.Tree", ""))
    # Then loading it refuses the type it no longer lists (skops), nothing runs
    from skops.io.exceptions import UntrustedTypesFoundException

    mlflow.set_tracking_uri(cfg.tracking_uri)
    with pytest.raises(UntrustedTypesFoundException, match="sklearn.tree._tree.Tree"):
        mlflow.pyfunc.load_model(f"models:/{model_id}")


def test_an_estimator_that_breaks_the_fitted_check_never_fails_the_cell(project: Path) -> None:
    # Given an estimator whose own fitted check raises, next to a good model
    namespace = _namespace()
    state = _track(
        namespace,
        "class Odd(BaseEstimator):\n"
        "    def fit(self, X, y=None):\n        return self\n"
        "    def __sklearn_is_fitted__(self):\n        raise RuntimeError('odd')\n"
        "odd = Odd().fit(X)\n"
        "model = LogisticRegression().fit(X, Y)",
    )
    # Then the cell's run finishes and the good model is logged
    run = store.client(load_config()).get_run(state["run_id"])
    assert run.info.status == "FINISHED"
    assert state["model"] == "logged"


def test_tracking_and_promoting_leave_the_environment_as_it_was(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a process that tracks a fit (MLflow's fluent API) and promotes it (the registry)
    run_id = tracked_pipeline_run(
        load_config(), "model = LogisticRegression().fit(X, Y)", _namespace()
    )
    assert nb_mlops.promote(run_id, model="env").status == "PROMOTED"
    # Then MLflow's URIs were not exported into the environment ...
    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert "MLFLOW_REGISTRY_URI" not in os.environ
    # ... so a second project opened in the same process uses its own store
    other = tmp_path / "other"
    other.mkdir()
    (other / "pyproject.toml").write_text('[project]\nname = "other"\n\n[tool.nb_mlops]\n')
    monkeypatch.chdir(other)
    assert load_config().tracking_uri.startswith(f"sqlite:///{other.resolve()}")
