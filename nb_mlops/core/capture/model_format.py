"""How a fitted model is stored, and which of its types a loader may trust.

scikit-learn models (and lightgbm's sklearn API) are stored in the skops format, never as pickles:
loading one refuses any type not on the list stored with it. That list is derived from the model
itself and must pass a trust policy: by default scikit-learn, numpy, scipy, xgboost, lightgbm and
the project's own modules; `trusted_model_modules` in `[tool.nb_mlops]` replaces it. xgboost models
and lightgbm Boosters use their library's own format (no code runs when they load).
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FunctionType
from typing import Any

from nb_mlops.core.config import Config
from nb_mlops.core.errors import TrackingError

__all__ = [
    "ANY",
    "DEFAULT_TRUSTED",
    "DIGEST_TAG",
    "FORMAT_TAG",
    "NATIVE_REASON",
    "PREDICTS_TAG",
    "PROJECT_TAG",
    "REASON_TAG",
    "SKOPS_REASON",
    "TYPES_TAG",
    "StoredModel",
    "TrustPolicy",
    "log_model",
    "policy",
    "refusal",
]

# module prefixes (or exact type names) whose types the default policy trusts
DEFAULT_TRUSTED = (
    "sklearn",
    "numpy",
    "scipy",
    "xgboost",
    "lightgbm",
    "collections.OrderedDict",
    "collections.defaultdict",
)
ANY = "*"
FORMAT_TAG = "nb_mlops.model.format"
TYPES_TAG = "nb_mlops.model.trusted_types"
REASON_TAG = "nb_mlops.model.format_reason"
PROJECT_TAG = "nb_mlops.model.project_modules"
PREDICTS_TAG = "nb_mlops.model.predicts"
DIGEST_TAG = "nb_mlops.model_sha256"

SKOPS_REASON = (
    "skops: loading refuses every type not in the trusted list stored with the model "
    "(no pickle, no arbitrary code)"
)
NATIVE_REASON = {
    "xgboost": "xgboost's own UBJSON format: loading runs no pickle and needs no trusted types",
    "lightgbm": "lightgbm's own text format: loading runs no pickle and needs no trusted types",
}


# --- the trust policy ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TrustPolicy:
    """Which types a stored model may ask its loader to trust.

    Attributes:
        entries: module prefixes (`sklearn`) or exact type names (`collections.OrderedDict`);
            `*` trusts everything.
        configured: True when `trusted_model_modules` set the entries (then the project's own
            modules are trusted only when listed).
        root: the project root (its own modules live below it).
    """

    entries: tuple[str, ...]
    configured: bool
    root: Path

    @property
    def described(self) -> str:
        names = ", ".join(self.entries)
        return f"trusted_model_modules = [{names}]" if self.configured else f"the default ({names})"

    def trusts(self, type_name: str, project: Mapping[str, str] | None = None) -> bool:
        """True when the policy admits `type_name` (`project`: module → file of the project's
        own modules, as recorded when the model was logged)."""
        if ANY in self.entries:
            return True
        if any(type_name == e or type_name.startswith(e + ".") for e in self.entries):
            return True
        if self.configured or not project:
            return False
        module = type_name.rpartition(".")[0]
        relpath = project.get(module)
        return relpath is not None and (self.root / relpath).is_file()


def policy(cfg: Config) -> TrustPolicy:
    """The trust policy of the project (`trusted_model_modules`, else the default)."""
    configured = cfg.trusted_model_modules
    if configured is None:
        return TrustPolicy(DEFAULT_TRUSTED, False, cfg.root)
    return TrustPolicy(tuple(configured), True, cfg.root)


def _project_file(module: str, root: Path) -> str | None:
    """The file of an imported module of the project (below the root, not an installed package),
    relative to the root; None for anything else."""
    found = sys.modules.get(module)
    file = getattr(found, "__file__", None)
    if not file:
        return None
    path = Path(file).resolve()
    try:
        relative = path.relative_to(root.resolve())
    except ValueError:
        return None
    if any(part in ("site-packages", "dist-packages") for part in relative.parts):
        return None
    return relative.as_posix()


# --- checks that need no serialisation (run when the cell ends) ------------------------------------


@dataclass
class _Parts:
    """What a model is made of, read from its estimators' attributes (constructor parameters
    are attributes too). Each estimator class is read once: the hundred trees of a forest are
    clones of one template, with the same parameters."""

    classes: list[type] = field(default_factory=list)
    # (attribute, function) for the plain functions held (a FunctionTransformer's `func`)
    functions: list[tuple[str, Any]] = field(default_factory=list)
    # qualified names of the types of everything the estimators hold
    held: set[str] = field(default_factory=set)


def _parts(model: Any) -> _Parts:
    from nb_mlops.core.capture.models import model_kind

    parts = _Parts()
    seen: set[type] = set()
    stack: list[tuple[Any, int]] = [(model, 0)]
    while stack:
        value, depth = stack.pop()
        if depth > 6:
            continue
        cls = type(value)
        parts.held.add(f"{cls.__module__}.{cls.__qualname__}")
        if isinstance(value, list | tuple):
            stack.extend((item, depth + 1) for item in value[:256])
        elif isinstance(value, dict):
            stack.extend((item, depth + 1) for item in list(value.values())[:256])
        elif cls not in seen and model_kind(value) is not None:
            seen.add(cls)
            parts.classes.append(cls)
            for key, item in list(getattr(value, "__dict__", {}).items()):
                if isinstance(item, FunctionType | functools.partial):
                    parts.functions.append((key, getattr(item, "func", item)))
                else:
                    stack.append((item, depth + 1))
    return parts


def _classes(model: Any) -> list[type]:
    return _parts(model).classes


def refusal(model: Any, cfg: Config) -> str | None:
    """Why `model` cannot be stored safely, found without serialising it (a class or function
    defined in the notebook, a class outside the trust policy); None when nothing is found."""
    trust = policy(cfg)
    parts = _parts(model)
    for cls in parts.classes:
        module = cls.__module__
        name = f"{module}.{cls.__qualname__}"
        if module == "__main__":
            return (
                f"class {cls.__qualname__} is defined in the notebook; a stored model can only "
                "name classes importable from a module: move it to a .py file of the project "
                "and import it from there"
            )
        if not trust.trusts(name) and not (
            not trust.configured and _project_file(module, cfg.root)
        ):
            return (
                f"class {name} is not trusted by {trust.described}; add "
                f'"{module.split(".")[0]}" to trusted_model_modules in [tool.nb_mlops] '
                "if loading it is safe"
            )
    for key, func in parts.functions:
        module = getattr(func, "__module__", None) or ""
        qualname = getattr(func, "__qualname__", type(func).__name__)
        if module == "__main__" or "<lambda>" in qualname or "<locals>" in qualname:
            return (
                f"parameter {key}={qualname} is a function defined in the notebook (or a lambda); "
                "skops can only store functions importable from a module: define it in a .py "
                "file of the project"
            )
    return None


# --- storing --------------------------------------------------------------------------------------


@dataclass
class StoredModel:
    """A model as logged: its MLflow logged-model id, flavor, format and trusted types."""

    model_id: str
    flavor: str
    format: str
    reason: str
    trusted_types: list[str] = field(default_factory=list)
    project_modules: dict[str, str] = field(default_factory=dict)


def _plan(model: Any) -> tuple[str, str]:
    """(MLflow flavor, format) for a model."""
    from nb_mlops.core.capture.models import model_kind

    kind = model_kind(model)
    if kind == "xgboost":
        return "xgboost", "ubj"
    if kind == "lightgbm" and type(model).__name__ == "Booster":
        return "lightgbm", "text"
    return ("lightgbm" if kind == "lightgbm" else "sklearn"), "skops"


# untrusted types by the types a model's estimators hold: a refit, or a new model of the same
# shape, skips the extra serialisation (a guess missing a type is caught by MLflow's own check
# when it saves the model, and the types are then derived from that model)
_TYPES_CACHE: dict[frozenset[str], list[str]] = {}


def _signature(model: Any) -> frozenset[str]:
    return frozenset(_parts(model).held)


def _derive_types(model: Any) -> list[str]:
    import skops.io

    return sorted(skops.io.get_untrusted_types(data=skops.io.dumps(model)))


def trusted_types(
    model: Any, cfg: Config, *, fresh: bool = False
) -> tuple[list[str], dict[str, str]]:
    """The types a loader of `model` must trust, checked against the policy, and the project
    modules among them (module → file relative to the root).

    Raises:
        TrackingError: a type is outside the policy (named, with the setting to change).
    """
    key = _signature(model)
    types = None if fresh else _TYPES_CACHE.get(key)
    if types is None:
        types = _derive_types(model)
        _TYPES_CACHE[key] = types
    trust = policy(cfg)
    project: dict[str, str] = {}
    for name in types:
        module = name.rpartition(".")[0]
        if trust.trusts(name):
            continue
        relpath = None if trust.configured else _project_file(module, cfg.root)
        if relpath is None:
            raise TrackingError(
                f"the model needs type {name} to load, which {trust.described} does not trust; "
                f'add "{module.split(".")[0]}" to trusted_model_modules in [tool.nb_mlops] if '
                "loading it is safe"
            )
        project[module] = relpath
    return list(types), project


# the distributions that may provide a model's modules (those not installed are skipped);
# anything else is looked up in the installed distributions' file lists (seconds: done once)
_KNOWN_DISTRIBUTIONS = {
    "sklearn": ["scikit-learn"],
    "numpy": ["numpy"],
    "scipy": ["scipy"],
    "skops": ["skops"],
    "xgboost": ["xgboost", "xgboost-cpu"],
    "lightgbm": ["lightgbm"],
    "collections": [],
}


@functools.cache
def _distributions() -> dict[str, list[str]]:
    from importlib.metadata import packages_distributions

    return {k: list(v) for k, v in packages_distributions().items()}


def _requirements(modules: Iterable[str], project: Iterable[str] = ()) -> list[str]:
    """Pinned requirements for the distributions providing these top-level modules (the
    project's own modules need none)."""
    from nb_mlops.core.capture.environment import environment, pip_requirements

    own = {m.split(".")[0] for m in project}
    names = ["mlflow"]
    for module in sorted(set(modules) - own):
        found = _KNOWN_DISTRIBUTIONS.get(module)
        names += found if found is not None else _distributions().get(module, [])
    return pip_requirements(environment(), *dict.fromkeys(names))


def log_model(cfg: Config, name: str, model: Any) -> StoredModel:
    """Log `model` to MLflow's active run (the caller makes the tracked run active) under `name`.

    Returns:
        What was stored, also recorded as tags of the logged model: format, reason, trusted types,
        project modules and the sha256 of its files.

    Raises:
        TrackingError: the model needs a type the trust policy does not admit.
    """
    flavor, fmt = _plan(model)
    types: list[str] = []
    project: dict[str, str] = {}
    if fmt == "skops":
        types, project = trusted_types(model, cfg)
    top = {c.__module__.split(".")[0] for c in _classes(model)} | {t.split(".")[0] for t in types}
    top |= {"numpy", "scipy", "skops"} if fmt == "skops" else {"numpy"}
    if flavor == "sklearn":
        top.add("sklearn")
    reason = SKOPS_REASON if fmt == "skops" else NATIVE_REASON[flavor]
    tags = {
        FORMAT_TAG: fmt,
        REASON_TAG: reason,
        TYPES_TAG: json.dumps(types),
        PREDICTS_TAG: "true" if hasattr(model, "predict") else "false",
    }
    if project:
        tags[PROJECT_TAG] = json.dumps(project, sort_keys=True)
    info = _log(flavor, fmt, name, model, types, _requirements(top, project), tags)
    if info is None:  # the cached list missed a type this model has: derive it for this model
        types, project = trusted_types(model, cfg, fresh=True)
        tags[TYPES_TAG] = json.dumps(types)
        if project:
            tags[PROJECT_TAG] = json.dumps(project, sort_keys=True)
        info = _log(flavor, fmt, name, model, types, _requirements(top, project), tags)
        if info is None:
            raise TrackingError(f"model {name}: skops refused its own type list {types}")
    stored = StoredModel(str(info.model_id), flavor, fmt, reason, types, project)
    _record_digest(cfg, stored.model_id)
    return stored


def _log(
    flavor: str,
    fmt: str,
    name: str,
    model: Any,
    types: list[str],
    requirements: list[str],
    tags: dict[str, str],
) -> Any:
    """MLflow's log_model for the flavor; None when skops found a type outside `types`."""
    import importlib

    from mlflow.exceptions import MlflowException

    module: Any = importlib.import_module(f"mlflow.{flavor}")
    kwargs: dict[str, Any] = {"name": name, "pip_requirements": requirements, "tags": tags}
    if fmt == "skops":
        kwargs |= {"serialization_format": "skops", "skops_trusted_types": types}
    elif flavor == "xgboost":
        kwargs["model_format"] = fmt
    try:
        return module.log_model(model, **kwargs)
    except MlflowException as exc:
        if "untrusted types" in str(exc):
            return None
        raise


def _record_digest(cfg: Config, model_id: str) -> None:
    """The sha256 of the model's files as logged: promotion refuses files changed since."""
    from nb_mlops.core.promotion.registry import files_digest, source_path
    from nb_mlops.core.store import client

    mlflow_client = client(cfg)
    logged = mlflow_client.get_logged_model(model_id)
    local = source_path(str(logged.artifact_location))
    if local is not None and local.is_dir():
        mlflow_client.set_logged_model_tags(model_id, {DIGEST_TAG: files_digest(local)})
