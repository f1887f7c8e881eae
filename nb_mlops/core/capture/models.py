"""The models a tracked cell fitted: which objects they are, and their logging, in the background.

A model is a fitted scikit-learn estimator (any family, `Pipeline`, `ColumnTransformer`, searches,
clustering, and the sklearn APIs of xgboost and lightgbm) or a native xgboost / lightgbm `Booster`.
"Fitted" follows scikit-learn's own `check_is_fitted`; "fitted during this cell" compares each
object's identity and a cheap fingerprint of its fitted state with the one taken when the cell began.
How a model is stored (flavor, format, trusted types) is `nb_mlops.core.capture.model_format`.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import re
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nb_mlops.core.config import Config
    from nb_mlops.core.writer import Writer

__all__ = [
    "LOGGED",
    "PENDING",
    "Watch",
    "fitted_since",
    "is_fitted",
    "model_kind",
    "snapshot",
    "status",
    "summary",
    "watch_status",
]

PENDING = "pending"
LOGGED = "logged"
# how deep and how wide a fingerprint or a search for nested estimators looks
_MAX_DEPTH = 6
_MAX_ITEMS = 256
_IDENT_CHARS = re.compile(r"[^A-Za-z0-9_-]")  # a logged model's name: no `/ : . % " '`
_SCAN_ALWAYS = 16  # containers up to this long are searched for models whatever they hold
_SCALARS = (str, bytes, int, float, complex, type(None))
# IPython's own names in the namespace: its input and output history (a model shown as a cell's
# result sits in `Out` too; it is named by the user's variable, not `Out-7`)
_IPYTHON_NAMES = frozenset({"In", "Out", "exit", "quit", "get_ipython"})

Mark = tuple[int, bool, tuple[Any, ...]]  # (object id, fitted, fitted-state fingerprint)


# --- what is a model, and is it fitted -----------------------------------------------------------


def model_kind(value: Any) -> str | None:
    """ "sklearn", "xgboost" or "lightgbm" for a model object, else None.

    Only libraries already imported are looked at: detection never imports one.
    """
    if isinstance(value, type):
        return None
    modules = sys.modules
    base = modules.get("sklearn.base")
    if base is not None and isinstance(value, base.BaseEstimator):
        xgb_sklearn = modules.get("xgboost.sklearn")
        if xgb_sklearn is not None and isinstance(value, xgb_sklearn.XGBModel):
            return "xgboost"
        lgb_sklearn = modules.get("lightgbm.sklearn")
        if lgb_sklearn is not None and isinstance(value, lgb_sklearn.LGBMModel):
            return "lightgbm"
        return "sklearn"
    xgb_core = modules.get("xgboost.core")
    if xgb_core is not None and isinstance(value, xgb_core.Booster):
        return "xgboost"
    lgb_basic = modules.get("lightgbm.basic")
    if lgb_basic is not None and isinstance(value, lgb_basic.Booster):
        return "lightgbm"
    return None


def _is_booster(value: Any) -> bool:
    base = sys.modules.get("sklearn.base")
    return base is None or not isinstance(value, base.BaseEstimator)


def is_fitted(value: Any) -> bool:
    """scikit-learn's answer (`check_is_fitted`: `__sklearn_is_fitted__`, else fitted attributes);
    a native Booster is trained by construction."""
    if _is_booster(value):
        return True
    from sklearn.utils.validation import check_is_fitted

    try:
        check_is_fitted(value)
    except Exception:  # noqa: BLE001 - NotFittedError, or a custom estimator's own failure
        return False
    return True


def _param_names(value: Any) -> frozenset[str]:
    getter = getattr(type(value), "_get_param_names", None)
    if getter is None:
        return frozenset()
    try:
        return frozenset(getter())
    except Exception:  # noqa: BLE001 - an estimator with an odd signature: treat all as state
        return frozenset()


def _fingerprint(value: Any, depth: int = 0) -> tuple[Any, ...]:
    """Identity of the fitted state: ids of the attributes `fit` sets (those that are not
    constructor parameters), and recursively the estimators held in parameters (a Pipeline's
    steps, a search's estimator), which are fitted in place. Refitting replaces those attributes
    with new objects, so the fingerprint changes; reading it costs microseconds."""
    if _is_booster(value):
        rounds = getattr(value, "num_boosted_rounds", None) or getattr(
            value, "current_iteration", None
        )
        try:
            return (id(value), rounds() if callable(rounds) else None)
        except Exception:  # noqa: BLE001 - a freed booster handle: identity is all we have
            return (id(value),)
    state = getattr(value, "__dict__", None)
    if not isinstance(state, dict) or depth > _MAX_DEPTH:
        return (id(value),)
    params = _param_names(value)
    marks: list[Any] = [id(value)]
    for key, item in list(state.items())[:_MAX_ITEMS]:
        if key.startswith("_mlflow"):
            continue  # MLflow's autolog marks what it patched (`_mlflow_run_id`): not a fit
        if key in params:
            nested = tuple(
                _fingerprint(sub, depth + 1)
                for sub in _estimators_in(item, depth + 1, shallow=True)
            )
            if nested:
                marks.append((key, nested))
        else:
            marks.append((key, id(item)))
    return tuple(marks)


def _estimators_in(value: Any, depth: int, shallow: bool = False) -> Iterator[Any]:
    """Model objects inside a value: itself, or the items of lists, tuples and dicts (Pipeline
    steps are (name, estimator) tuples, ColumnTransformer's are triples). `shallow` stops at
    the first model found on each path; otherwise the models' own attributes are searched too."""
    if depth > _MAX_DEPTH:
        return
    if model_kind(value) is not None:
        yield value
        if shallow:
            return
        state = getattr(value, "__dict__", None)
        if isinstance(state, dict):
            for item in list(state.values())[:_MAX_ITEMS]:
                yield from _estimators_in(item, depth + 1)
        return
    if isinstance(value, list | tuple):
        for item in value[:_MAX_ITEMS]:
            yield from _estimators_in(item, depth + 1, shallow)
    elif isinstance(value, dict):
        for item in list(value.values())[:_MAX_ITEMS]:
            yield from _estimators_in(item, depth + 1, shallow)


# --- fitted during the cell ----------------------------------------------------------------------


def _mark(value: Any) -> Mark | None:
    """(id, fitted, fingerprint) of a model, None for anything else (or a model whose state
    cannot be read: a tracked cell never fails because of what it finds in the namespace)."""
    try:
        if model_kind(value) is None:
            return None
        return (id(value), is_fitted(value), _fingerprint(value))
    except Exception:  # noqa: BLE001 - see above
        return None


def _reachable(namespace: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """(name, model) for every model the namespace keeps: bound to a name, or an item of a
    list, tuple or dict, or an attribute of an object of a class of the notebook (`models["rf"]`
    is `models-rf`, `runs[0]` is `runs-0`, `self.model` of `h` is `h-model`), two levels deep.
    Each object once, under its first name; a path before a variable (after
    `for m in models.values(): m.fit(X, y)` the last model is `models-...`, not `m`)."""
    seen: set[int] = set()
    is_model: dict[type, bool] = {}  # by type: the namespace holds many values of few types

    def model(value: Any) -> bool:
        known = is_model.get(type(value))
        if known is None:
            known = is_model[type(value)] = model_kind(value) is not None
        return known

    direct: list[tuple[str, Any]] = []
    nested: list[tuple[str, Any, int]] = []
    for key, value in list(namespace.items()):
        if key.startswith("_") or key in _IPYTHON_NAMES or isinstance(value, type):
            continue
        if model(value):
            direct.append((key, value))
        else:
            nested.append((key, value, 0))
    while nested:
        path, value, depth = nested.pop(0)
        for key, item in _members(value):
            name = f"{path}-{_IDENT_CHARS.sub('_', str(key))[:40]}"
            if model(item):
                if id(item) not in seen:
                    seen.add(id(item))
                    yield name, item
            elif depth < 1:
                nested.append((name, item, depth + 1))
    for key, value in direct:
        if id(value) not in seen:
            seen.add(id(value))
            yield key, value


def _members(value: Any) -> list[tuple[Any, Any]]:
    """The items of a list, tuple or dict, or the attributes of an object of the notebook
    (its class defined in `__main__`): the first few only, and none of a long container that
    starts with plain numbers or strings (data, not a collection of models)."""
    if isinstance(value, list | tuple):
        if len(value) > _SCAN_ALWAYS and all(map(_is_scalar, value[:_SCAN_ALWAYS])):
            return []
        return list(enumerate(value[:_MAX_ITEMS]))
    if isinstance(value, dict):
        head = list(itertools.islice(value.values(), _SCAN_ALWAYS))
        if len(value) > _SCAN_ALWAYS and all(map(_is_scalar, head)):
            return []
        return list(itertools.islice(value.items(), _MAX_ITEMS))
    if type(value).__module__ == "__main__":
        state = getattr(value, "__dict__", None)
        if isinstance(state, dict):
            return list(itertools.islice(state.items(), _MAX_ITEMS))
    return []


def _is_scalar(value: Any) -> bool:
    return isinstance(value, _SCALARS) or type(value).__module__ == "numpy"


def snapshot(namespace: dict[str, Any]) -> dict[int, Mark]:
    """The models the namespace keeps now (see `_reachable`), by object id."""
    found: dict[int, Mark] = {}
    with contextlib.suppress(Exception):  # a namespace that changes under us: what was seen
        for _name, value in _reachable(namespace):
            mark = _mark(value)
            if mark is not None:
                found[id(value)] = mark
    return found


def fitted_since(namespace: dict[str, Any], before: dict[int, Mark]) -> dict[str, Any]:
    """Models fitted during the cell (new fitted objects, or ones whose fitted state changed),
    by name: `model` when there is one, else their variable names (or paths: `models-rf` for
    `models["rf"]`). A model that is part of another one fitted in the same cell (the scaler
    inside a pipeline) is not logged on its own. Each is deep-copied, so the background writer
    stores it as it is now."""
    fitted: dict[int, tuple[str, Any]] = {}
    for key, value in _reachable(namespace):
        mark = _mark(value)
        if mark is not None and mark[1] and before.get(id(value)) != mark:
            fitted[id(value)] = (key, value)
    if len(fitted) > 1:
        inner = {
            id(sub)
            for _, value in fitted.values()
            for sub in _estimators_in(value, 0)
            if sub is not value
        }
        fitted = {k: v for k, v in fitted.items() if k not in inner}
    # models that predict are logged last: promotion prefers them, then the newest
    ordered = sorted(fitted.values(), key=lambda item: hasattr(item[1], "predict"))
    copies = {key: _copy(value) for key, value in ordered}
    from nb_mlops.core.capture import autolog

    autolog.forget_copies()
    return {"model": next(iter(copies.values()))} if len(copies) == 1 else copies


def _copy(model: Any) -> Any:
    """A copy of the model as it is now: the one autolog made right after the fit when the
    model has not changed since (a forest costs tens of milliseconds to copy), else a new one."""
    from nb_mlops.core.capture import autolog

    shared = autolog.shared_copy(model)
    return shared if shared is not None else copy.deepcopy(model)


# --- status of a run's models ----------------------------------------------------------------------

_status: dict[str, dict[str, str]] = {}
_watchers: dict[str, list[Callable[[dict[str, str]], None]]] = {}
_status_lock = threading.Lock()


def _set_status(run_id: str, name: str, value: str) -> None:
    with _status_lock:
        _status.setdefault(run_id, {})[name] = value
        current = dict(_status[run_id])
        watchers = list(_watchers.get(run_id, ()))
        if PENDING not in current.values():
            _watchers.pop(run_id, None)  # settled: nothing more to tell
    for watcher in watchers:
        # a display callback must never break logging
        with contextlib.suppress(Exception):
            watcher(current)


def status(run_id: str) -> dict[str, str]:
    """Model name → `pending`, `logged`, or `not logged: <why>` for a run of this process."""
    with _status_lock:
        return dict(_status.get(run_id, {}))


def watch_status(run_id: str, callback: Callable[[dict[str, str]], None]) -> None:
    """Call `callback(status)` whenever a model of `run_id` changes state (from the writer thread)."""
    with _status_lock:
        if PENDING in _status.get(run_id, {}).values():  # else: settled, nothing will change
            _watchers.setdefault(run_id, []).append(callback)


def summary(states: dict[str, str]) -> str:
    """One phrase for a run's models: `none`, `logged`, `pending`, `model: not logged: …`."""
    if not states:
        return "none"
    values = list(states.values())
    if len(values) == 1:
        return values[0]
    return ", ".join(f"{name} {value}" for name, value in states.items())


@dataclass
class Watch:
    """The models of one tracked cell: a snapshot when it starts, the logging when it ends."""

    namespace: dict[str, Any]
    before: dict[int, Mark] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.before = snapshot(self.namespace)

    def finish(
        self,
        cfg: Config,
        writer: Writer,
        run_id: str,
        in_run: Callable[[], AbstractContextManager[Any]],
    ) -> dict[str, str]:
        """Queue the models fitted during the cell for logging; return their states (pending,
        or why one is refused at once)."""
        from nb_mlops.core.capture import model_format

        try:
            found = fitted_since(self.namespace, self.before)
        except Exception as exc:  # noqa: BLE001 - said on the run; the cell's own result stands
            writer.tag(run_id, "nb_mlops.model", f"not logged: {type(exc).__name__}: {exc}"[:500])
            return status(run_id)
        for name, model in found.items():
            try:
                refused = model_format.refusal(model, cfg)
            except Exception as exc:  # noqa: BLE001 - as above
                refused = f"{type(exc).__name__}: {exc}"
            if refused:
                _set_status(run_id, name, f"not logged: {refused}")
                writer.tag(run_id, f"nb_mlops.model.{name}", f"not logged: {refused}"[:500])
                continue
            _set_status(run_id, name, PENDING)
            log = _logger(cfg, writer, run_id, name, model, in_run)
            writer.call(log, f"model of run {run_id} ({name})")
        return status(run_id)


def _logger(
    cfg: Config,
    writer: Writer,
    run_id: str,
    name: str,
    model: Any,
    in_run: Callable[[], AbstractContextManager[Any]],
) -> Callable[[], None]:
    def log() -> None:
        from nb_mlops.core.capture import model_format
        from nb_mlops.core.errors import TrackingError

        try:
            with in_run():
                stored = model_format.log_model(cfg, name, model)
        except TrackingError as exc:  # refused by the trust policy: said on the run, not raised
            _set_status(run_id, name, f"not logged: {exc}")
            writer.values([], [], [(run_id, f"nb_mlops.model.{name}", f"not logged: {exc}")])
            return
        except BaseException as exc:
            _set_status(run_id, name, f"not logged: {type(exc).__name__}: {exc}"[:300])
            raise  # the writer keeps it for the next flush(): nothing fails silently
        # the run says which logged model each name became (the UI links it from the run page)
        writer.values([], [], [(run_id, f"nb_mlops.model.{name}", stored.model_id)])
        _set_status(run_id, name, LOGGED)

    return log
