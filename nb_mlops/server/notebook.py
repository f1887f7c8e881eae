"""What the Promote dialog needs to know about a saved notebook, read through `nb_mlops.pipeline`.

`spec_of` parses the notebook's steps and typed parameter schema (the pipeline package's grammar and
parameter contract: one implementation); `validate` checks request values against it; `describe`
adds the tracked runs, the target model, its current champion and the configured gates — or the
configuration's problems, which make every promotion refuse (`config_errors`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nb_mlops.core.config import load_config
from nb_mlops.core.errors import BuildError, ConfigError, NbMlopsError

__all__ = ["NotebookSpec", "champion_of", "describe", "spec_of", "validate"]

DEFAULT_UI_URL = "http://127.0.0.1:5000"
MAX_RUNS = 10


@dataclass
class NotebookSpec:
    """A notebook's pipeline shape: name, steps, typed parameters, project and target model."""

    path: Path
    project_root: Path
    pipeline: str
    default_model: str
    steps: list[dict[str, Any]] = field(default_factory=list)
    schema: dict[str, dict[str, Any]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # lines a run would stop at


def spec_of(notebook: Path) -> NotebookSpec:
    """Parse `notebook` (a saved `.ipynb`) into its steps and parameter schema.

    Raises:
        BuildError: the notebook is unreadable or its tags/parameters cell are invalid.
    """
    import nbformat

    from nb_mlops.pipeline.convert import pipeline_name
    from nb_mlops.pipeline.grammar import parse_cells
    from nb_mlops.pipeline.params import read_parameters

    try:
        nb = nbformat.reads(notebook.read_text(encoding="utf-8"), as_version=4)  # type: ignore[no-untyped-call]
    except Exception as exc:  # nbformat raises many kinds; all mean "not a notebook"
        raise BuildError(
            f"{notebook.name} is not a readable notebook ({type(exc).__name__})"
        ) from exc
    grammar = parse_cells(nb)
    schema: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    for cell in grammar.role("parameters"):
        read = read_parameters(cell.source, cell.ref)
        schema.update(read.schema)
        problems += read.problems
    cfg = load_config(notebook.parent)
    pipeline = pipeline_name(notebook)
    return NotebookSpec(
        path=notebook,
        project_root=cfg.root,
        pipeline=pipeline,
        default_model=_default_model(cfg.settings, pipeline),
        steps=[{"name": s.name, "after": list(s.after)} for s in grammar.steps.values()],
        schema=schema,
        settings=dict(cfg.settings),
        problems=problems,
    )


def _default_model(settings: dict[str, Any], pipeline: str) -> str:
    model = settings.get("model")
    if isinstance(model, str) and model:
        return model
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", pipeline) or "model"


def validate(spec: NotebookSpec, values: dict[str, Any]) -> dict[str, Any]:
    """Check request values against the notebook's schema (the pipeline's validator).

    Returns:
        Only the values the caller gave, validated (defaults stay in the notebook).

    Raises:
        ParameterError: unknown name, wrong type, non-JSON-like value (mapped to 400).
    """
    from nb_mlops.pipeline.params import validate as validate_params

    checked = validate_params(spec.schema, values)
    return {name: checked[name] for name in values}


def describe(notebook: Path, root_dir: Path) -> dict[str, Any]:
    """Everything the Promote dialog shows for `notebook`.

    Returns:
        `{pipeline, model, steps, parameters, champion, gates, runs, ui_url, warnings,
        config_errors}`; `config_errors` lists the configuration's problems (one line each):
        while there is any, promotion refuses and `gates` is empty.
    """
    spec = spec_of(notebook)
    warnings = [f"{p}: a run stops there with this error" for p in spec.problems]
    parameters = [
        {
            "name": name,
            "type": _ui_type(str(entry["type"])),
            "declared_type": str(entry["type"]),
            "default": entry.get("default"),
            "nullable": "None" in str(entry["type"]),
            "help": entry.get("help") or None,
            # no default of its own: the parameters cell computes it (or leaves it unset),
            # and the dialog sends a value only when one is typed
            "has_default": "default" in entry,
            "computed": entry.get("computed"),
        }
        for name, entry in spec.schema.items()
    ]
    cfg = load_config(notebook.parent)
    gates_preview: list[dict[str, Any]] = []
    champion: dict[str, Any] | None = None
    runs: list[dict[str, Any]] = []
    try:
        champion, gates_preview, runs = _store_facts(cfg, spec, notebook)
    except ConfigError as exc:
        warnings.append(f"gates: {exc}")
    except NbMlopsError as exc:
        warnings.append(str(exc))
    ui = spec.settings.get("ui_url")
    return {
        "pipeline": spec.pipeline,
        "model": spec.default_model,
        "steps": spec.steps,
        "parameters": parameters,
        "champion": champion,
        "gates": gates_preview,
        "runs": runs,
        "ui_url": ui
        if isinstance(ui, str) and ui.startswith(("http://", "https://"))
        else DEFAULT_UI_URL,
        "warnings": warnings,
        "config_errors": list(cfg.problems),
    }


def _ui_type(declared: str) -> str:
    """The form widget for a declared type: int, float, bool, str, list, dict or any (JSON)."""
    members = [m.strip() for m in declared.split("|") if m.strip() != "None"]
    if len(members) != 1:
        return "any"
    base = members[0].split("[", 1)[0]
    return base if base in ("int", "float", "bool", "str", "list", "dict") else "any"


def _store_facts(
    cfg: Any, spec: NotebookSpec, notebook: Path
) -> tuple[dict[str, Any] | None, list[dict[str, Any]], list[dict[str, Any]]]:
    """Champion, gate preview and tracked runs from the MLflow store (read-only)."""
    from nb_mlops.core import store
    from nb_mlops.core.promotion.gates import GateSpec, parse_gates
    from nb_mlops.core.promotion.registry import CHAMPION, get_alias

    # with configuration problems there are no trustworthy gates to preview (`config_errors`)
    gates = GateSpec() if cfg.problems else parse_gates(cfg.gates)
    if not cfg.db_path.exists() and cfg.is_embedded:
        # No store yet: nothing tracked, no champion. Do not create one from a GET.
        return None, _gate_rows(gates, {}), []
    client = store.client(cfg)
    model = spec.default_model
    champion = None
    metrics: dict[str, float] = {}
    version = get_alias(client, model, CHAMPION)
    if version is not None:
        mv = client.get_model_version(model, version)
        if mv.run_id:
            metrics = dict(client.get_run(mv.run_id).data.metrics)
        champion = {"version": version, "run_id": mv.run_id, "metrics": metrics}
    return champion, _gate_rows(gates, metrics), _tracked_runs(client, notebook)


def _gate_rows(gates: Any, champion: dict[str, float]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = [
        {"gate": f"metric:{g.metric}", "expected": g.expected, "champion": champion.get(g.metric)}
        for g in gates.metrics
    ]
    beat = gates.beat_champion
    if beat is not None:
        better = ">" if beat.direction == "max" else "<"
        rows.append(
            {
                "gate": "beat_champion",
                "expected": f"{beat.metric} {better} champion {'+' if better == '>' else '-'} {beat.min_delta:g}",
                "champion": champion.get(beat.metric),
            }
        )
    if gates.require_reproduced:
        rows.append({"gate": "require_reproduced", "expected": "reproduces the interactive run"})
    if gates.require_data_verified:
        rows.append({"gate": "require_data_verified", "expected": "data snapshots verify"})
    from nb_mlops.core.promotion.gates import format_value

    for name, settings in gates.entries:  # a plugin's gate: its settings, as configured
        if name not in _BUILTIN_GATES and settings is not False:
            rows.append({"gate": name, "expected": format_value(settings)})
    return rows


_BUILTIN_GATES = ("metrics", "beat_champion", "require_reproduced", "require_data_verified")


def _tracked_runs(client: Any, notebook: Path) -> list[dict[str, Any]]:
    """The newest runs recorded from this notebook (by `mlflow.source.name`)."""
    name = notebook.name.replace("'", "")
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return []
    found = client.search_runs(
        experiments,
        filter_string=f"tags.`mlflow.source.name` LIKE '%{name}'",
        max_results=MAX_RUNS,
        order_by=["attributes.start_time DESC"],
    )
    return [
        {
            "run_id": run.info.run_id,
            "run_name": run.info.run_name,
            "status": run.info.status,
            "start_time": run.info.start_time,
            "mode": run.data.tags.get("nb_mlops.mode"),
            "metrics": dict(list(run.data.metrics.items())[:8]),
        }
        for run in found
    ]


def champion_of(project_root: Path, model: str) -> dict[str, Any] | None:
    """The current `champion` of `model` (version, run id), or None; never creates a store."""
    from nb_mlops.core import store
    from nb_mlops.core.promotion.registry import CHAMPION, get_alias

    cfg = load_config(project_root)
    if cfg.is_embedded and not cfg.db_path.exists():
        return None
    client = store.client(cfg)
    version = get_alias(client, model, CHAMPION)
    if version is None:
        return None
    return {"version": version, "run_id": client.get_model_version(model, version).run_id}
