"""What a promotion reads from and writes to MLflow: the candidate pipeline run and its model,
the model's source check, digest and safety (its format and the types its loader must trust),
versions linked to their logged model, and the `champion` / `previous-champion` aliases.
Models are never loaded here: artifacts are hashed as bytes and MLmodel files read as text.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from nb_mlops.core.capture import model_format
from nb_mlops.core.config import Config
from nb_mlops.core.errors import PromotionError
from nb_mlops.core.promotion.gates import RunFacts

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.tracking import MlflowClient

__all__ = [
    "CHAMPION",
    "PREVIOUS",
    "Candidate",
    "ModelRef",
    "check_model_name",
    "choice_note",
    "files_digest",
    "get_alias",
    "latest_pipeline_run",
    "load_candidate",
    "model_safety",
    "register_version",
    "run_facts",
    "source_path",
    "version_location",
]

CHAMPION = "champion"
PREVIOUS = "previous-champion"
DIGEST_TAG = model_format.DIGEST_TAG
PREDICTS_TAG = model_format.PREDICTS_TAG
MODEL_ID_TAG = "nb_mlops.model_id"
# the logged model's tag listing the registered versions made from it (MLflow's UI reads it)
MODEL_VERSIONS_TAG = "mlflow.modelVersions"
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,199}\Z")
_ID = re.compile(r"^[A-Za-z0-9_\-]{1,64}\Z")
_PROMOTABLE_MODES = ("pipeline", "production")
HOW_TO_PIPELINE = (
    "build and run the pipeline first: `nb-mlops pipeline build NOTEBOOK`, "
    "`nb-mlops pipeline run NAME`, then `nb-mlops promote --latest NAME --model MODEL`"
)


def check_model_name(name: str) -> str:
    """Refuse names that cannot be a journal file, a filter value and a `NAME/VERSION` reference."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise PromotionError(
            f"model name {name!r} is not allowed: use letters, digits, '_', '.', '-' (e.g. churn-model)"
        )
    return name


def check_run_id(run_id: str) -> str:
    if not isinstance(run_id, str) or not _ID.match(run_id):
        raise PromotionError(
            f"{run_id!r} is not a run id; pass the id of a pipeline run (`nb-mlops runs`)"
        )
    return run_id


@dataclass
class ModelRef:
    """The model a candidate run logged.

    Attributes:
        source: artifact URI of the model folder (the one registered).
        run_id: the run (step or nested) that logged it.
        model_id: the MLflow 3 logged-model id, or None for a model logged as run artifacts.
        recorded_sha256: the digest recorded at logging time, when the logging side recorded one.
        tags: the logged model's tags (format, trusted types, project modules as logged).
        name: the logged model's name (`model`, or a cell's variable or path: `models-rf`).
    """

    source: str
    run_id: str
    model_id: str | None = None
    recorded_sha256: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    name: str | None = None

    @property
    def predicts(self) -> bool:
        return self.tags.get(PREDICTS_TAG) != "false"


@dataclass
class Candidate:
    """A pipeline run offered for promotion, with every run below it and its models."""

    run: Run
    facts: RunFacts
    tree: dict[str, Run] = field(default_factory=dict)
    models: list[ModelRef] = field(default_factory=list)

    @property
    def run_id(self) -> str:
        return str(self.run.info.run_id)

    @property
    def tags(self) -> dict[str, str]:
        return self.facts.tags

    def tree_tag(self, *keys: str) -> str | None:
        """The first of `keys` set on the run, else on the runs below it (steps record the notebook,
        git and environment; the runner copies only metrics and data tags onto the parent)."""
        for run in self.tree.values():  # the parent comes first
            for key in keys:
                value = run.data.tags.get(key)
                if value:
                    return str(value)
        return None

    def allowed_roots(self) -> list[str]:
        """Artifact roots a registered source may lie in: the tree's runs and its logged models."""
        roots = [str(run.info.artifact_uri) for run in self.tree.values()]
        roots += [model.source for model in self.models if model.model_id]
        return roots


def run_facts(run: Run, tree: dict[str, Run] | None = None) -> RunFacts:
    """What the gates may read about `run` (and the dataset contexts of the runs below it)."""
    tags = dict(run.data.tags)
    data = {
        key[len("nb_mlops.data.") :]: value
        for key, value in tags.items()
        if key.startswith("nb_mlops.data.")
    }
    eval_data: set[str] = set()
    for member in (tree or {run.info.run_id: run}).values():
        for dataset_input in getattr(member.inputs, "dataset_inputs", None) or []:
            context = {t.key: t.value for t in dataset_input.tags}.get("mlflow.data.context")
            if context in ("eval", "test"):
                eval_data.add(_dataset_name(dataset_input.dataset))
    return RunFacts(
        run_id=str(run.info.run_id),
        metrics={k: float(v) for k, v in run.data.metrics.items()},
        tags=tags,
        data=data,
        eval_data=eval_data,
    )


def _dataset_name(dataset: Any) -> str:
    source = str(getattr(dataset, "source", "") or "")
    match = re.search(r"nbmlops://([^@\"?]+)@", source)
    return match.group(1) if match else str(dataset.name)


def latest_pipeline_run(client: MlflowClient, pipeline: str) -> str:
    """The id of the newest pipeline (or production) run of `pipeline`, any status."""
    if not re.match(r"^[A-Za-z0-9_.\-]+\Z", pipeline):
        raise PromotionError(f"{pipeline!r} is not a pipeline name (see `nb-mlops pipeline list`)")
    experiments = [e.experiment_id for e in client.search_experiments()]
    found = client.search_runs(
        experiments,
        filter_string=f"tags.`nb_mlops.pipeline` = '{pipeline}' and tags.`nb_mlops.step` IS NULL "
        "and tags.`mlflow.parentRunId` IS NULL",
        order_by=["attributes.start_time DESC"],
        max_results=10,
    )
    runs = [r for r in found if r.data.tags.get("nb_mlops.mode") in _PROMOTABLE_MODES]
    if not runs:
        raise PromotionError(
            f"pipeline {pipeline!r} has no run yet; run it: `nb-mlops pipeline run {pipeline}`"
        )
    return str(runs[0].info.run_id)


def load_candidate(client: MlflowClient, run_id: str) -> Candidate:
    """Read a run and check that it can be promoted.

    Raises:
        PromotionError: unknown run, an interactive or step run, a failed pipeline run, no model.
    """
    from mlflow.exceptions import MlflowException

    check_run_id(run_id)
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        raise PromotionError(
            f"no run {run_id} in the store ({client.tracking_uri}); check the id with `nb-mlops runs`"
        ) from exc
    tags = run.data.tags
    mode = tags.get("nb_mlops.mode", "interactive")
    if tags.get("nb_mlops.step") and tags.get("mlflow.parentRunId"):
        raise PromotionError(
            f"run {run_id} is step {tags['nb_mlops.step']!r} of a pipeline run; "
            f"promote the pipeline run {tags['mlflow.parentRunId']} instead"
        )
    if mode not in _PROMOTABLE_MODES:
        raise PromotionError(
            f"run {run_id} is an {mode} run (nb_mlops.mode={mode}): only pipeline runs can be promoted; {HOW_TO_PIPELINE}"
        )
    status = tags.get("nb_mlops.status")
    if status != "SUCCEEDED" or run.info.status != "FINISHED":
        shown = status or run.info.status
        raise PromotionError(
            f"pipeline run {run_id} did not succeed (status {shown}); fix it and run the pipeline again: "
            f"`nb-mlops pipeline run {tags.get('nb_mlops.pipeline', 'NAME')}`"
        )
    tree = _descendants(client, run)
    models = _models(client, tree)
    if not models:
        cached = [r for r in tree.values() if r.data.tags.get("nb_mlops.cached") == "true"]
        if cached:
            # a cached step reused an earlier run's outputs; its model belongs to that run
            raise PromotionError(
                f"pipeline run {run_id} logged no model: {len(cached)} of its steps came from the "
                "cache; promote the run that computed them, or re-run with "
                f"`nb-mlops pipeline run {tags.get('nb_mlops.pipeline', 'NAME')} --no-cache`"
            )
        raise PromotionError(
            f"pipeline run {run_id} logged no model in any of its {len(tree)} runs; "
            "log one in a step (e.g. `mlflow.sklearn.log_model(model, name='model')`)"
        )
    return Candidate(run=run, facts=run_facts(run, tree), tree=tree, models=models)


def _descendants(client: MlflowClient, run: Run) -> dict[str, Run]:
    """The run and every run nested below it (steps, then `%%track` runs inside steps)."""
    tree = {str(run.info.run_id): run}
    frontier = [str(run.info.run_id)]
    experiments = [run.info.experiment_id]
    while frontier:
        parent = frontier.pop()
        for child in client.search_runs(
            experiments, filter_string=f"tags.`mlflow.parentRunId` = '{parent}'", max_results=1000
        ):
            child_id = str(child.info.run_id)
            if child_id not in tree:  # a cycle of parent tags cannot loop us
                tree[child_id] = child
                frontier.append(child_id)
    return tree


def _models(client: MlflowClient, tree: dict[str, Run]) -> list[ModelRef]:
    """Logged models (MLflow 3) whose source run is in the tree, newest first; else run
    artifacts holding an MLmodel file (models logged the MLflow 2 way)."""
    experiments = sorted({str(r.info.experiment_id) for r in tree.values()})
    ids = ", ".join(f"'{rid}'" for rid in tree)
    found: list[Any] = client.search_logged_models(
        experiment_ids=experiments, filter_string=f"source_run_id IN ({ids})", max_results=100
    )
    if not found:
        # MLflow logs models into the *active* experiment, which may differ from the run's
        found = client.search_logged_models(
            experiment_ids=[e.experiment_id for e in client.search_experiments()],
            filter_string=f"source_run_id IN ({ids})",
            max_results=100,
        )
    # a model that predicts before a lone transformer, then the newest
    found = sorted(
        found,
        key=lambda m: ((m.tags or {}).get(PREDICTS_TAG) != "false", m.creation_timestamp or 0),
        reverse=True,
    )
    models = [
        ModelRef(
            source=str(m.artifact_location),
            run_id=str(m.source_run_id),
            model_id=str(m.model_id),
            recorded_sha256=(m.tags or {}).get(DIGEST_TAG)
            or tree[str(m.source_run_id)].data.tags.get(f"{DIGEST_TAG}.{m.model_id}"),
            tags=dict(m.tags or {}),
            name=str(m.name) if getattr(m, "name", None) else None,
        )
        for m in found
        if str(getattr(m, "status", "READY")).endswith("READY")
    ]
    if models:
        return models
    for rid, run in tree.items():
        for item in client.list_artifacts(rid):
            if item.is_dir and any(
                f.path.endswith("MLmodel") for f in client.list_artifacts(rid, item.path)
            ):
                uri = f"{str(run.info.artifact_uri).rstrip('/')}/{item.path}"
                models.append(
                    ModelRef(
                        source=uri,
                        run_id=rid,
                        recorded_sha256=run.data.tags.get(f"{DIGEST_TAG}.{item.path}"),
                    )
                )
    return models


# --- sources and digests ----------------------------------------------------------------


def source_path(uri: str) -> Path | None:
    """The local folder of an artifact URI (`file://` or a plain path), or None when remote."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "" and uri.startswith("/"):
        return Path(uri)
    return None


def resolve_source(candidate: Candidate, source: str | None) -> ModelRef:
    """The model to register: the newest one the run tree logged, or `source` when given, which
    must lie inside the artifacts of the candidate run, its descendants or their logged models.

    Raises:
        PromotionError: the source is outside the candidate's artifacts, or holds no MLmodel.
    """
    ref = candidate.models[0] if source is None else _explicit_source(candidate, source)
    local = source_path(ref.source)
    roots = candidate.allowed_roots()
    inside = False
    if local is not None:
        real = os.path.realpath(local)
        for root in roots:
            root_path = source_path(root)
            if root_path is None:
                continue
            root_real = os.path.realpath(root_path)
            if os.path.commonpath([real, root_real]) == root_real:
                inside = True
                break
    else:
        inside = any(
            ref.source.rstrip("/") == r.rstrip("/") or ref.source.startswith(r.rstrip("/") + "/")
            for r in roots
        )
        if inside and "/../" in ref.source + "/":
            inside = False
    if not inside:
        raise PromotionError(
            f"model source {ref.source} lies outside the artifacts of run {candidate.run_id} and its steps; "
            "register a model logged by this pipeline run"
        )
    if local is not None and not (local / "MLmodel").is_file():
        raise PromotionError(
            f"model source {ref.source} holds no MLmodel file; pass the folder of a logged model"
        )
    return ref


def choice_note(candidate: Candidate, ref: ModelRef) -> str | None:
    """When the run logged several models that predict, which one is registered and how to pick
    another (None when there was no choice)."""
    others = sorted({m.name or m.model_id or m.source for m in candidate.models if m.predicts})
    if len(others) < 2:
        return None
    chosen = ref.name or ref.model_id or ref.source
    return (
        f"registered `{chosen}`, the newest of the {len(others)} models the run logged "
        f"({', '.join(others[:6])}{', ...' if len(others) > 6 else ''}): --source NAME picks another"
    )


def _by_name(candidate: Candidate, name: str) -> ModelRef:
    """The newest model the run tree logged under `name` (as `%%track` names them)."""
    for ref in candidate.models:
        if ref.name == name:
            return ref
    logged = ", ".join(sorted({m.name for m in candidate.models if m.name})) or "none"
    raise PromotionError(
        f"run {candidate.run_id} logged no model named {name!r} (logged: {logged}); "
        "pass one of those names, models:/ID or a runs:/ URI"
    )


def _explicit_source(candidate: Candidate, source: str) -> ModelRef:
    if ":" not in source and "/" not in source:
        return _by_name(candidate, source)
    if source.startswith("models:/"):
        model_id = source[len("models:/") :].strip("/")
        for ref in candidate.models:
            if ref.model_id == model_id:
                return ref
        raise PromotionError(
            f"model {source} was not logged by run {candidate.run_id} or its steps; "
            "register a model logged by this pipeline run"
        )
    if source.startswith("runs:/"):
        run_id, _, path = source[len("runs:/") :].partition("/")
        run = candidate.tree.get(run_id)
        if run is None:
            raise PromotionError(
                f"model source {source} belongs to run {run_id}, not to run {candidate.run_id} or its steps; "
                "register a model logged by this pipeline run"
            )
        source = f"{str(run.info.artifact_uri).rstrip('/')}/{path}"
    for ref in candidate.models:
        if ref.source.rstrip("/") == source.rstrip("/"):
            return ref
    owner = next(
        (
            rid
            for rid, r in candidate.tree.items()
            if source.startswith(str(r.info.artifact_uri).rstrip("/") + "/")
        ),
        candidate.run_id,
    )
    return ModelRef(source=source, run_id=owner)


def files_digest(folder: Path) -> str:
    """sha256 over a model folder: every file's relative path and bytes, in sorted order."""
    digest = hashlib.sha256()
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    for path in files:
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def source_digest(uri: str, tracking_uri: str | None = None) -> str:
    """The digest of the model folder at `uri` (downloaded to a temp folder when remote; an
    `mlflow-artifacts:` URI is resolved against `tracking_uri`, the store's server)."""
    local = source_path(uri)
    if local is not None:
        if not local.is_dir():
            raise PromotionError(
                f"model folder {local} is missing; the artifacts were deleted or moved"
            )
        return files_digest(local)
    import mlflow.artifacts

    with tempfile.TemporaryDirectory(prefix="nb_mlops-model-") as tmp:
        path = mlflow.artifacts.download_artifacts(
            artifact_uri=uri, dst_path=tmp, tracking_uri=tracking_uri
        )
        return files_digest(Path(path))


def verify_digest(ref: ModelRef, tracking_uri: str | None = None) -> str:
    """Hash the model's files; refuse them when a digest was recorded at logging time and differs."""
    actual = source_digest(ref.source, tracking_uri)
    if ref.recorded_sha256 and ref.recorded_sha256 != actual:
        raise PromotionError(
            f"model files at {ref.source} do not match the digest recorded when they were logged "
            f"({ref.recorded_sha256[:12]}… recorded, {actual[:12]}… now); they were changed after logging, refusing them"
        )
    return actual


# --- registry -------------------------------------------------------------------------------------


def get_alias(client: MlflowClient, model: str, alias: str) -> str | None:
    """The version an alias points at, or None (no such alias or model)."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(model, alias).version)
    except MlflowException:
        return None


def model_aliases(client: MlflowClient, model: str) -> dict[str, str] | None:
    """Every alias of `model` → version (one read), or None when the model is not registered."""
    from mlflow.exceptions import MlflowException

    try:
        registered = client.get_registered_model(model)
    except MlflowException:
        return None
    return {str(k): str(v) for k, v in (registered.aliases or {}).items()}


def model_exists(client: MlflowClient, model: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(model)
    except MlflowException:
        return False
    return True


def get_version(client: MlflowClient, model: str, version: str) -> ModelVersion | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(model, version)
    except MlflowException:
        return None


def find_version(
    client: MlflowClient, model: str, run_id: str, ref: ModelRef
) -> ModelVersion | None:
    """A version of `model` already registered from this run and model (a re-promotion)."""
    wanted = {ref.source.rstrip("/")} | ({f"models:/{ref.model_id}"} if ref.model_id else set())
    for mv in client.search_model_versions(f"name = '{model}' and run_id = '{run_id}'"):
        if str(mv.source).rstrip("/") in wanted:
            return mv
    return None


def version_location(client: MlflowClient, mv: ModelVersion) -> str:
    """Where a version's files are: its source, or for a version registered from a logged model
    (`models:/<model_id>`) the location MLflow resolved for it."""
    source = str(mv.source)
    if source.startswith("models:/"):
        return str(client.get_model_version_download_uri(mv.name, mv.version))
    return source


def version_model_id(mv: ModelVersion) -> str | None:
    """The logged model a version was registered from (MLflow's SQL registry keeps it only in
    the source URI `models:/<model_id>`; we also tag it)."""
    found = getattr(mv, "model_id", None) or (mv.tags or {}).get(MODEL_ID_TAG)
    if found:
        return str(found)
    source = str(mv.source)
    if source.startswith("models:/") and "/" not in source[len("models:/") :].strip("/"):
        return source[len("models:/") :].strip("/")
    return None


def register_version(
    client: MlflowClient,
    model: str,
    candidate: Candidate,
    ref: ModelRef,
    tags: dict[str, str],
    *,
    exists: bool,
) -> str:
    """A new version of `model` from the candidate's model. A model logged as an MLflow 3
    LoggedModel is registered as `models:/<model_id>`, as `mlflow.register_model` does: the
    version's page in the MLflow UI then links its logged model (metrics, params, run), and the
    logged model lists the version."""
    if not exists:
        client.create_registered_model(model, tags={"nb_mlops.managed": "true"})
    version_tags = {k: v for k, v in tags.items() if v}
    if ref.model_id:
        version_tags[MODEL_ID_TAG] = ref.model_id
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    from nb_mlops.core.store import environment_kept

    # MLflow's SQL registry resolves `models:/<model_id>` with a default client, i.e. with the
    # process-wide tracking URI: point it at this store for the call
    with environment_kept(), _use_tracking_uri(client.tracking_uri):
        mv = client.create_model_version(
            model,
            source=f"models:/{ref.model_id}" if ref.model_id else ref.source,
            run_id=candidate.run_id,
            tags=version_tags,
            model_id=ref.model_id,
            await_creation_for=0,
        )
    if ref.model_id:
        _link_logged_model(client, ref.model_id, model, mv.version)
    return str(mv.version)


def _link_logged_model(client: MlflowClient, model_id: str, model: str, version: Any) -> None:
    from mlflow.exceptions import MlflowException

    try:
        logged = client.get_logged_model(model_id)
        listed = json.loads((logged.tags or {}).get(MODEL_VERSIONS_TAG) or "[]")
    except (MlflowException, ValueError):
        return  # the version exists and says its model id; the back link is a convenience
    if not isinstance(listed, list):
        listed = []
    listed.append({"name": model, "version": version})
    client.set_logged_model_tags(model_id, {MODEL_VERSIONS_TAG: json.dumps(listed)})


# --- model safety ---------------------------------------------------------------------------------


def read_mlmodel(source: str, tracking_uri: str | None = None) -> dict[str, Any]:
    """The MLmodel file of a model folder, as data (read as YAML text, never loading the model)."""
    import yaml

    local = source_path(source)
    try:
        if local is not None:
            text = (local / "MLmodel").read_text()
        else:
            import mlflow.artifacts

            with tempfile.TemporaryDirectory(prefix="nb_mlops-mlmodel-") as tmp:
                path = mlflow.artifacts.download_artifacts(
                    artifact_uri=source.rstrip("/") + "/MLmodel",
                    dst_path=tmp,
                    tracking_uri=tracking_uri,
                )
                text = Path(path).read_text()
        data = yaml.safe_load(text)
    except (OSError, yaml.YAMLError) as exc:
        raise PromotionError(
            f"cannot read the MLmodel file of {source} ({exc}); promote a model logged with MLflow"
        ) from exc
    return data if isinstance(data, dict) else {}


def model_safety(cfg: Config, ref: ModelRef) -> dict[str, Any]:
    """How the model is stored and what loading it trusts, checked against the project's trust
    policy (`trusted_model_modules`) before anything is registered.

    Returns:
        {"flavor", "format", "trusted_types", "reason"}: recorded on the version and journaled.

    Raises:
        PromotionError: the model is a pickle, or asks its loader to trust a type the policy does
            not admit, or has no flavor whose loading can be checked.
    """
    flavors = read_mlmodel(ref.source, cfg.tracking_uri).get("flavors") or {}
    trust = model_format.policy(cfg)
    trust_all = model_format.ANY in trust.entries
    project = _json_dict(ref.tags.get(model_format.PROJECT_TAG))
    xgb = flavors.get("xgboost")
    lgb = flavors.get("lightgbm")
    if isinstance(xgb, dict):
        return _safety("xgboost", str(xgb.get("model_format", "xgb")), [], "xgboost", ref)
    if isinstance(lgb, dict) and lgb.get("model_class", "lightgbm.basic.Booster").endswith(
        "Booster"
    ):
        return _safety("lightgbm", "text", [], "lightgbm", ref)
    conf = flavors.get("sklearn") if isinstance(flavors.get("sklearn"), dict) else lgb
    if not isinstance(conf, dict):
        if trust_all:
            return _safety(",".join(sorted(flavors)), "unchecked", [], None, ref)
        raise PromotionError(
            f"model {ref.source} has flavor(s) {', '.join(sorted(flavors)) or 'none'}, whose "
            "loading nb_mlops cannot check; log scikit-learn, xgboost or lightgbm models, or "
            'accept any model with trusted_model_modules = ["*"] in [tool.nb_mlops]'
        )
    flavor = "sklearn" if conf is flavors.get("sklearn") else "lightgbm"
    fmt = str(conf.get("serialization_format", "pickle"))
    types = [str(t) for t in conf.get("skops_trusted_types") or []]
    if fmt != "skops" and not trust_all:
        raise PromotionError(
            f"model {ref.source} is stored as a {fmt} file: loading it can run arbitrary code; "
            "log it in the skops format (as %%track does, and mlflow.sklearn.log_model by "
            'default), or accept it with trusted_model_modules = ["*"] in [tool.nb_mlops]'
        )
    refused = [t for t in types if not trust.trusts(t, project)]
    if refused:
        raise PromotionError(
            f"model {ref.source} asks its loader to trust {', '.join(refused)}, which "
            f"{trust.described} does not trust; if loading it is safe, add its module to "
            "trusted_model_modules in [tool.nb_mlops]"
        )
    return _safety(flavor, fmt, types, None, ref)


def _safety(
    flavor: str, fmt: str, types: list[str], native: str | None, ref: ModelRef
) -> dict[str, Any]:
    reason = ref.tags.get(model_format.REASON_TAG) or (
        model_format.NATIVE_REASON[native] if native else model_format.SKOPS_REASON
    )
    if fmt == "unchecked":
        reason = 'not checked: trusted_model_modules = ["*"] accepts any model'
    return {"flavor": flavor, "format": fmt, "trusted_types": types, "reason": reason}


def safety_tags(safety: dict[str, Any]) -> dict[str, str]:
    """The safety record as model-version tags."""
    return {
        model_format.FORMAT_TAG: str(safety.get("format", "")),
        model_format.TYPES_TAG: json.dumps(safety.get("trusted_types", [])),
        model_format.REASON_TAG: str(safety.get("reason", "")),
        "nb_mlops.model.flavor": str(safety.get("flavor", "")),
    }


def _json_dict(text: str | None) -> dict[str, str]:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}
