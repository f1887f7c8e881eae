"""Make pipeline runs in the real SQLite store shaped like the runner's (see the pipeline contract):
a parent run with the pipeline tags, params, metrics and a `pipeline/` artifact folder, a step run,
and a nested `%%track` run that logs a real (tiny) scikit-learn model.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from nb_mlops.core import store
from nb_mlops.core.config import Config, load_config


def make_pipeline_run(
    cfg: Config | None = None,
    *,
    pipeline: str = "train",
    metrics: dict[str, float] | None = None,
    mode: str = "pipeline",
    status: str = "SUCCEEDED",
    reproduced: str | None = "true",
    data: dict[str, tuple[str, str]] | None = None,
    params: dict[str, Any] | None = None,
    log_model: bool = True,
    experiment: str = "promo",
) -> str:
    """Create a finished pipeline run; return the parent run id.

    Args:
        data: snapshot name → (tag value `vN:<digest>`, dataset context).
    """
    import mlflow
    import numpy as np
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from sklearn.linear_model import LogisticRegression

    cfg = cfg or load_config()
    client = store.client(cfg)
    eid = store.experiment_id(cfg, experiment)
    metrics = {"accuracy": 0.95, "log_loss": 0.2} if metrics is None else metrics
    data = {"eval": ("v1:" + "e" * 64, "eval")} if data is None else data
    tags = {
        "nb_mlops.mode": mode,
        "nb_mlops.pipeline": pipeline,
        "nb_mlops.status": status,
        "nb_mlops.notebook_sha256": "a" * 64,
        "nb_mlops.git_commit": "c0ffee",
        "mlflow.source.type": "NOTEBOOK",
        "mlflow.source.name": "notebooks/train.ipynb",
    }
    if reproduced is not None:
        tags["nb_mlops.reproduced"] = reproduced
    tags.update({f"nb_mlops.data.{name}": value for name, (value, _ctx) in data.items()})
    parent = client.create_run(eid, tags=tags, run_name=f"{pipeline}-pipeline").info.run_id
    step = client.create_run(
        eid,
        tags={"mlflow.parentRunId": parent, "nb_mlops.step": "fit", "nb_mlops.pipeline": pipeline},
    ).info.run_id
    nested = client.create_run(
        eid, tags={"mlflow.parentRunId": step, "nb_mlops.mode": mode}
    ).info.run_id
    for name, (value, context) in data.items():
        client.log_inputs(
            nested,
            datasets=[
                DatasetInput(
                    Dataset(
                        name=name,
                        digest=value.split(":", 1)[1][:36],
                        source_type="nbmlops",
                        source=json.dumps({"uri": f"nbmlops://{name}@{value.split(':')[0]}"}),
                    ),
                    tags=[InputTag("mlflow.data.context", context)],
                )
            ],
        )
    for key, value in (params or {"C": 1.0}).items():
        client.log_param(parent, key, value)
    for key, value in metrics.items():
        client.log_metric(parent, key, value)
        client.log_metric(nested, key, value)
    if log_model:
        mlflow.set_tracking_uri(cfg.tracking_uri)
        model = LogisticRegression().fit(np.array([[0.0], [1.0], [2.0], [3.0]]), [0, 0, 1, 1])
        with mlflow.start_run(run_id=nested):
            mlflow.sklearn.log_model(model, name="model", pip_requirements=["scikit-learn"])
    version_dir = cfg.root / ".promo-tmp" / parent
    (version_dir / "steps").mkdir(parents=True)
    (version_dir / "pipeline.yaml").write_text(f"name: {pipeline}\nsteps: [fit]\n")
    (version_dir / "steps" / "fit.ipynb").write_text("{}")
    client.log_artifacts(parent, str(version_dir), "pipeline")
    digest = hashlib.sha256()
    for path in sorted(p for p in version_dir.rglob("*") if p.is_file()):
        digest.update(path.read_bytes())
    client.set_tag(parent, "nb_mlops.pipeline_hash", digest.hexdigest())
    for run_id in (nested, step):
        client.set_terminated(run_id, "FINISHED")
    client.set_terminated(parent, "FINISHED" if status == "SUCCEEDED" else "FAILED")
    return str(parent)


def set_gates(root: Path, gates_toml: str) -> None:
    """Write `[tool.nb_mlops.gates]` into the project's pyproject.toml."""
    (root / "pyproject.toml").write_text(
        f'[project]\nname = "demo"\n\n[tool.nb_mlops]\n\n[tool.nb_mlops.gates]\n{gates_toml}\n'
    )


def journal_lines(root: Path, model: str) -> list[dict[str, Any]]:
    path = root / ".nb_mlops" / "journal" / f"{model}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
