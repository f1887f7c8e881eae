"""Background capture: what a run records on the writer thread (notebook, environment, git,
dataset inputs, the error's traceback), off the path of the tracked cell."""

from __future__ import annotations

import contextlib
import json
import os
import traceback
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

from nb_mlops.core import session
from nb_mlops.core.capture import notebook as nbcap
from nb_mlops.core.config import Config
from nb_mlops.core.files import write_atomic
from nb_mlops.core.store import client, import_mlflow
from nb_mlops.core.tracking.context import Run, _proc
from nb_mlops.core.tracking.stores import (
    _await_warm_up,
    _mlflow_ready,
    _pop_fluent,
    _push_fluent,
    await_warm_up_finished,
)


def _note_error(run: Run, exc: BaseException) -> None:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    first = f"{type(exc).__name__}: {exc}".splitlines()[0] if str(exc) else type(exc).__name__
    run.set_tag("nb_mlops.error", first[:500])
    data = text.encode()
    assert run._store is not None
    run._store.writer.call(
        lambda: _put_artifact(run, "error/traceback.txt", data),
        f"traceback of run {run.key}",
        result=False,
    )


def _note_input(run: Run, use: session.DataUse) -> None:
    run.set_tag(f"nb_mlops.data.{use.name}", use.tag_value)
    assert run._store is not None
    cfg = run._store.cfg
    run._store.writer.call(
        lambda: _log_input(cfg, run, use), f"input {use.name} of {run.key}", result=False
    )


def _put_artifact(run: Run, relpath: str, data: bytes) -> None:
    """Write one artifact file: straight into the run's folder on a local artifact root, else
    through MLflow's artifact repository."""
    run_id = run.run_id  # on a server: its artifact_uri is known once it is created
    parsed = urllib.parse.urlparse(run.artifact_uri)
    if parsed.scheme in ("file", ""):
        write_atomic(Path(urllib.parse.unquote(parsed.path)) / relpath, data)
        return
    import tempfile

    _await_warm_up()
    with tempfile.TemporaryDirectory() as folder:
        local = Path(folder) / Path(relpath).name
        local.write_bytes(data)
        assert run._store is not None
        parent = str(Path(relpath).parent)
        client(run._store.cfg).log_artifact(run_id, str(local), None if parent == "." else parent)


def _write_tags(run: Run, tags: dict[str, str]) -> None:
    assert run._store is not None
    run._store.writer.backend.write([], [], [(run.key, k, v) for k, v in tags.items()])


def _capture(
    cfg: Config,
    run: Run,
    nb: nbcap.NotebookFile | None,
    analysis: nbcap.NotebookFile | None,
    history: list[str],
    cell: str,
) -> None:
    from nb_mlops.core.capture.environment import environment, requirements_text
    from nb_mlops.core.capture.git import git_state

    env = environment()
    tags = {"nb_mlops.python": env["python"], "nb_mlops.env_sha256": env["sha256"]}
    git = git_state(cfg.root)
    if git:
        tags.update(
            {
                "mlflow.source.git.commit": git["commit"],
                "nb_mlops.git.commit": git["commit"],
                "nb_mlops.git.branch": git["branch"],
                "nb_mlops.git.dirty": git["dirty"],
            }
        )
    if nb is not None:
        _put_artifact(run, f"notebook/{nb.path.name}", nb.raw)
    if analysis is not None:
        table = nbcap.cell_table(analysis, history)
        _put_artifact(run, "notebook/cells.json", json.dumps(table, indent=1).encode())
        if history and not os.environ.get("NB_MLOPS_RUN_ID"):
            report = nbcap.hidden_state(analysis, history, cell)
            warnings = report["warnings"]
            tags["nb_mlops.hidden_state"] = (
                "clean" if not warnings else f"{len(warnings)} warning(s): " + " | ".join(warnings)
            )[:8000]
            _put_artifact(run, "notebook/hidden_state.json", json.dumps(report, indent=1).encode())
    _write_tags(run, tags)
    _put_artifact(run, "environment/requirements.txt", requirements_text(env).encode())
    _put_artifact(
        run,
        "environment/python.json",
        json.dumps({k: v for k, v in env.items() if k != "distributions"}, indent=1).encode(),
    )


def _log_input(cfg: Config, run: Run, use: session.DataUse) -> None:
    _await_warm_up()
    import_mlflow()
    from mlflow.entities import Dataset, DatasetInput, InputTag

    dataset = Dataset(
        name=use.name,
        digest=use.digest[:36],
        source_type="nb_mlops",
        source=json.dumps({"uri": use.source or f"nbmlops://{use.name}@v{use.version}"}),
        schema=json.dumps(
            {"mlflow_colspec": [{"name": k, "type": v} for k, v in use.schema.items()]}
        )
        if use.schema
        else None,
        profile=json.dumps({"num_rows": use.rows, **use.profile}, default=str)[:16000]
        if (use.rows is not None or use.profile)
        else None,
    )
    input_tags = [InputTag("mlflow.data.context", use.context)] if use.context else []
    client(cfg).log_inputs(run.run_id, datasets=[DatasetInput(dataset, input_tags)])


@contextlib.contextmanager
def _as_active(cfg: Config, run: Run) -> Iterator[None]:
    """Make `run` MLflow's active run on this (writer) thread: a logged model belongs to the
    active run's experiment. Models are logged by `nb_mlops.core.capture.models`.

    Waits for the whole warm-up first: its autolog set-up imports scikit-learn's modules, and so
    does storing a model; two threads meeting in scikit-learn's lazy imports fail with a
    KeyError from `sys.modules`."""
    await_warm_up_finished()
    _mlflow_ready(cfg)
    with _proc.autolog_lock:  # the warm-up may be importing the flavors right now
        import mlflow.sklearn  # noqa: F401
    active = _push_fluent(cfg, run, 0, need=True)
    try:
        yield
    finally:
        _pop_fluent(active)
