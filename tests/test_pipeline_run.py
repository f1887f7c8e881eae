"""Running pipelines for real (papermill, fresh kernels, the SQLite MLflow store): records in
MLflow, values, the cache, hostile parameters, failures, the watchdog and resume, eight runs
at once, the `%pipeline` magics."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import nbformat
import psutil
import pytest

from nb_mlops.cli import main
from nb_mlops.core.config import load_config
from nb_mlops.core.store import client, experiment_id
from nb_mlops.pipeline import build_pipeline, run_pipeline
from nb_mlops.pipeline.spec import pipeline_hash
from tests.nbutil import new_notebook
from tests.test_pipeline_params import HOSTILE

VENV_BIN = Path(sys.executable).parent


def _kernels() -> list[psutil.Process]:
    """Kernel processes started from this test process (directly or not)."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if "ipykernel" in " ".join(proc.cmdline()):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def _child_runs(mlflow, exp: str, parent: str) -> dict:
    runs = mlflow.search_runs([exp], filter_string=f"tags.`mlflow.parentRunId` = '{parent}'")
    return {r.data.tags["nb_mlops.step"]: r for r in runs}


E2E_CELLS = [
    ("import json\nimport os\nimport nb_mlops", ["imports"]),
    ("C: float = 1.0\nn: int = 3\nlabel = 'x'\ntexts: list[str] = []", ["parameters"]),
    ("data = list(range(n))", ["step:load"]),
    ("total = sum(data) * C", ["step:left", "prev:load"]),
    ("sq = sum(d * d for d in data)", ["step:right"]),
    (
        "acc = total / (1 + sq)\n"
        "nb_mlops.log(logged=acc * 2)\n"
        "keys = ['NB_MLOPS_ROOT', 'NB_MLOPS_RUN_ID', 'NB_MLOPS_PARENT_RUN_ID', 'NB_MLOPS_MODE',"
        " 'NB_MLOPS_NOTEBOOK', 'NB_MLOPS_PIPELINE', 'NB_MLOPS_STEP', 'NB_MLOPS_EXPERIMENT']\n"
        "seen = {'texts': texts, 'label': label, 'env': {k: os.environ.get(k) for k in keys}}\n"
        "with open(os.path.join(os.environ['NB_MLOPS_ROOT'], 'seen.json'), 'w') as fh:\n"
        "    json.dump(seen, fh)",
        ["step:train"],
    ),
    ("print(acc)", ["pipeline-metrics"]),
]


def test_run_records_everything_then_reuses_the_cache(
    project: Path, capsys: pytest.CaptureFixture
) -> None:
    # Given a four-step notebook (a diamond), an interactive run of it, and hostile parameter values
    nb = new_notebook(project / "e2e.ipynb", E2E_CELLS)
    spec = build_pipeline(nb)
    cfg = load_config()
    mlflow = client(cfg)
    exp = experiment_id(cfg, "e2e")
    acc = (6 * 0.5) / (1 + 14)  # n=4, C=0.5
    interactive = mlflow.create_run(
        exp, tags={"nb_mlops.mode": "interactive", "mlflow.source.name": str(nb.resolve())}
    )
    mlflow.log_metric(interactive.info.run_id, "acc", acc)
    mlflow.set_terminated(interactive.info.run_id)
    (project / "params.json").write_text(json.dumps({"texts": HOSTILE}))
    status_file = project / "status.json"

    # When it runs from the CLI with -p strings and a params file
    code = main(
        [
            "pipeline",
            "run",
            "e2e",
            "-p",
            "n=4",
            "-p",
            "C=0.5",
            "-p",
            f"label={HOSTILE[6]}",
            "-f",
            str(project / "params.json"),
            "--json",
            "--status-file",
            str(status_file),
            "--max-parallel",
            "2",
        ]
    )
    out = json.loads(capsys.readouterr().out)

    # Then it succeeded, and every parameter arrived in the kernel byte for byte
    assert code == 0 and out["status"] == "SUCCEEDED"
    assert set(out["steps"]) == {"load", "left", "right", "train"}
    assert all(s["status"] == "SUCCEEDED" and not s["cached"] for s in out["steps"].values())
    seen = json.loads((project / "seen.json").read_text())
    assert seen["texts"] == HOSTILE and seen["label"] == HOSTILE[6]
    run_id = out["run_id"]
    train_run = out["steps"]["train"]["run_id"]
    assert seen["env"] == {
        "NB_MLOPS_ROOT": str(project),
        "NB_MLOPS_RUN_ID": train_run,
        "NB_MLOPS_PARENT_RUN_ID": run_id,
        "NB_MLOPS_MODE": "pipeline",
        "NB_MLOPS_NOTEBOOK": str(nb.resolve()),
        "NB_MLOPS_PIPELINE": "e2e",
        "NB_MLOPS_STEP": "train",
        "NB_MLOPS_EXPERIMENT": "e2e",
    }
    # the parent run: tags, params, copied metrics, the pipeline version, the reproduction check
    parent = mlflow.get_run(run_id)
    tags = parent.data.tags
    assert parent.info.status == "FINISHED" and parent.info.experiment_id == exp
    assert tags["nb_mlops.mode"] == "pipeline" and tags["nb_mlops.pipeline"] == "e2e"
    assert tags["mlflow.source.type"] == "NOTEBOOK" and tags["mlflow.source.name"] == str(
        nb.resolve()
    )
    assert tags["nb_mlops.status"] == "SUCCEEDED" and tags["nb_mlops.reproduced"] == "true"
    assert tags["nb_mlops.notebook_sha256"] == spec.notebook_sha256
    assert tags["nb_mlops.pipeline_hash"] == pipeline_hash(spec.files(), spec.dir)
    assert parent.data.params["n"] == "4" and parent.data.params["C"] == "0.5"
    assert json.loads(parent.data.params["texts"]) == HOSTILE
    assert parent.data.metrics["acc"] == pytest.approx(acc)
    assert parent.data.metrics["logged"] == pytest.approx(acc * 2)  # nb_mlops.log in a step
    artifacts = {a.path for a in mlflow.list_artifacts(run_id)}
    assert {"pipeline", "reproduction.json"} <= artifacts
    versioned = {a.path for a in mlflow.list_artifacts(run_id, "pipeline")}
    assert {"pipeline/pipeline.yaml", "pipeline/steps"} <= versioned
    # one child run per step with its output notebook, parameters, duration and status
    children = _child_runs(mlflow, exp, run_id)
    assert set(children) == {"load", "left", "right", "train"}
    for name, child in children.items():
        assert child.info.status == "FINISHED" and child.data.tags["nb_mlops.status"] == "SUCCEEDED"
        assert child.data.params["n"] == "4" and "duration_s" in child.data.metrics
        assert [a.path for a in mlflow.list_artifacts(child.info.run_id)] == [f"{name}.ipynb"]
        assert (cfg.runs_dir / "e2e" / run_id / f"{name}.ipynb").is_file()
    assert children["train"].data.metrics["logged"] == pytest.approx(acc * 2)
    status = json.loads(status_file.read_text())
    assert status["status"] == "SUCCEEDED" and status["steps"]["train"]["status"] == "SUCCEEDED"

    # When it runs again unchanged: every step comes from the cache, no kernel starts
    again = run_pipeline("e2e", {"n": 4, "C": 0.5, "label": HOSTILE[6], "texts": HOSTILE})
    assert again.status == "SUCCEEDED" and all(s.cached for s in again.steps.values())
    assert again.metrics["acc"] == pytest.approx(acc) and not _kernels()
    assert mlflow.get_run(again.run_id).data.tags["nb_mlops.reproduced"] == "true"

    # When a cached output no longer verifies, that step runs again; its unchanged value lets
    # the steps after it come from the cache
    data_file = cfg.runs_dir / "e2e" / run_id / "values" / "load" / "values.pkl"
    data_file.write_bytes(b"corrupted")  # in place: the cached copies share this inode
    third = run_pipeline("e2e", {"n": 4, "C": 0.5, "label": HOSTILE[6], "texts": HOSTILE})
    assert third.status == "SUCCEEDED"
    assert {k: s.cached for k, s in third.steps.items()} == {
        "load": False,
        "left": True,
        "right": True,
        "train": True,
    }

    # --no-cache runs everything
    fourth = run_pipeline(
        "e2e", {"n": 4, "C": 0.5, "label": HOSTILE[6], "texts": HOSTILE}, cache=False
    )
    assert not any(s.cached for s in fourth.steps.values()) and not _kernels()


FAILING_CELLS = [
    ("def make_handle(path):\n    return open(path, 'w')", ["functions"]),
    ("x = 1", ["step:ok"]),
    ("y = 1\nraise ValueError('boom in step')", ["step:raises"]),
    ("z = y + 1", ["step:after_raise"]),
    ("import sys\nsys.exit(0)", ["step:sysexit"]),
    "w = 1",
    ("import os\nos._exit(0)", ["step:osexit"]),
    ("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)", ["step:sigkill"]),
    ("import time\ntime.sleep(60)", ["step:slow_cell"]),
    ("big = bytearray(16 * 1024 ** 3)", ["step:memory"]),
    ("fh = make_handle('handle.txt')", ["step:p7"]),
    ("fh.write('x')", ["step:p7_use"]),
]


def test_failures_are_failed_named_and_stop_descendants(
    project: Path, capsys: pytest.CaptureFixture
) -> None:
    # Given steps that raise, exit, die, time out, run out of memory, or pass an open file
    with open(project / "pyproject.toml", "a") as fh:
        fh.write("step_memory_limit_mb = 3000\ncell_timeout = 4\n")
    new_notebook(project / "bad.ipynb", FAILING_CELLS)
    build_pipeline(project / "bad.ipynb")
    # When it runs from the CLI
    code = main(["pipeline", "run", "bad", "--json", "--max-parallel", "2"])
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    steps = out["steps"]
    # Then the run failed with a non-zero exit, and each failure names its step and cell
    assert code == 1 and out["status"] == "FAILED"
    assert {k: v["status"] for k, v in steps.items()} == {
        "ok": "SUCCEEDED",
        "raises": "FAILED",
        "after_raise": "CANCELLED",
        "sysexit": "SUCCEEDED",  # papermill's successful early end (its own test covers it)
        "osexit": "FAILED",
        "sigkill": "FAILED",
        "slow_cell": "FAILED",
        "memory": "FAILED",
        "p7": "FAILED",
        "p7_use": "CANCELLED",
    }
    errors = {k: v["error"] for k, v in steps.items()}
    assert errors["raises"].startswith(
        "step 'raises' failed in cell #3 of the notebook: ValueError: boom in step"
    )
    assert errors["sysexit"] is None and steps["sysexit"]["cell"] == "stopped early: sys.exit(0)"
    assert errors["osexit"].startswith("step 'osexit' failed in cell #7 of the notebook")
    assert errors["sigkill"].startswith("step 'sigkill' failed in cell #8 of the notebook")
    assert errors["slow_cell"].startswith("step 'slow_cell' failed in cell #9 of the notebook")
    assert "MemoryError" in errors["memory"] and "cell #10" in errors["memory"]
    assert "step 'p7': `fh` (TextIOWrapper) cannot be passed to later steps" in errors["p7"]
    assert errors["after_raise"] == "not run: an upstream step failed"
    assert "error: step" in captured.err and "failed in cell #" in captured.err
    # partial output notebooks are kept; the dead kernel's later cells never ran
    run_dir = Path(out["run_dir"])
    for step in ("raises", "osexit", "sigkill", "slow_cell", "memory", "p7"):
        assert (run_dir / f"{step}.ipynb").is_file()
    assert not (run_dir / "values" / "osexit" / "_done.json").exists()
    # MLflow: failed child runs, no child run for steps that never ran, a FAILED parent
    cfg = load_config()
    mlflow = client(cfg)
    exp = experiment_id(cfg, "bad")
    children = _child_runs(mlflow, exp, out["run_id"])
    assert set(children) == set(steps) - {"after_raise", "p7_use"}
    assert children["sigkill"].info.status == "FAILED" and children["ok"].info.status == "FINISHED"
    parent = mlflow.get_run(out["run_id"])
    assert parent.info.status == "FAILED" and parent.data.tags["nb_mlops.status"] == "FAILED"
    assert not _kernels()


def test_watchdog_kills_a_hung_step_then_resume_reruns_only_it(project: Path) -> None:
    # Given a step that hangs (while a flag file exists) after starting a grandchild process
    new_notebook(
        project / "hang.ipynb",
        [
            ("base = 10", ["step:ok"]),
            (
                "import subprocess, time, pathlib\n"
                "child = subprocess.Popen(['sleep', '600'])\n"
                "pathlib.Path('grandchild.pid').write_text(str(child.pid))\n"
                "while pathlib.Path('hang.flag').exists():\n"
                "    time.sleep(0.2)\n"
                "child.kill()\n"
                "value = 5",
                ["step:hang"],
            ),
            ("total = base + value", ["step:after"]),
            ("print(total)", ["pipeline-metrics"]),
        ],
    )
    build_pipeline(project / "hang.ipynb")
    (project / "hang.flag").write_text("")
    # When it runs with a wall-clock timeout
    first = run_pipeline("hang", timeout=8, max_parallel=2)
    # Then the watchdog killed the kernel's whole process group, nothing outlives the run
    assert first.status == "FAILED"
    assert first.steps["hang"].status == "FAILED" and "watchdog" in (
        first.steps["hang"].error or ""
    )
    assert first.steps["after"].status == "CANCELLED" and first.steps["ok"].status == "SUCCEEDED"
    grandchild = int((project / "grandchild.pid").read_text())
    deadline = time.monotonic() + 10
    while (
        psutil.pid_exists(grandchild)
        and psutil.Process(grandchild).status() != psutil.STATUS_ZOMBIE
    ):
        assert time.monotonic() < deadline, "the hung step's grandchild survived"
        time.sleep(0.1)
    assert not _kernels()
    # When the cause is gone and the run is resumed: only the failed step and its descendant run
    (project / "hang.flag").unlink()
    second = run_pipeline("hang", resume=first.run_id)
    assert second.status == "SUCCEEDED" and second.metrics["total"] == 15
    assert {k: s.cached for k, s in second.steps.items()} == {
        "ok": True,
        "hang": False,
        "after": False,
    }
    assert second.steps["ok"].cell == "resumed"
    tags = client(load_config()).get_run(second.run_id).data.tags
    assert tags["nb_mlops.resumed_from"] == first.run_id


def test_eight_runs_at_once_are_each_correct(project: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    # Given a one-step pipeline
    new_notebook(
        project / "many.ipynb",
        [("k: int = 0", ["parameters"]), "square = k * k", ("print(square)", ["pipeline-metrics"])],
    )
    build_pipeline(project / "many.ipynb")
    # When eight runs with different parameters start at once: eight kernels start together
    with ThreadPoolExecutor(8) as pool:
        runs = list(pool.map(lambda i: run_pipeline("many", {"k": i}, cache=False), range(8)))
    # Then each succeeded with its own result, in its own parent run, and no kernel is left
    assert [r.status for r in runs] == ["SUCCEEDED"] * 8, [r.error for r in runs]
    assert [r.metrics["square"] for r in runs] == [float(i * i) for i in range(8)]
    assert len({r.run_id for r in runs}) == 8
    assert not _kernels()


def test_pipeline_magics_build_and_run(project: Path) -> None:
    from IPython.core.interactiveshell import InteractiveShell

    from nb_mlops.magics.pipeline import PipelineMagics

    new_notebook(
        project / "mg.ipynb",
        [
            ("n: int = 2", ["parameters"]),
            "%%step only\nout = n * 3",
            ("print(out)", ["pipeline-metrics"]),
        ],
    )
    ip = InteractiveShell.instance()  # the process's one shell: other tests share it
    ip.register_magics(PipelineMagics)
    # %%step runs the cell interactively
    ip.run_cell_magic("step", "only --after x", "out = 21 * 2")
    assert ip.user_ns["out"] == 42
    spec = ip.run_line_magic("pipeline", "build mg.ipynb")
    assert list(spec.steps) == ["only"]
    result = ip.run_line_magic("pipeline", "run mg -p n=5")
    assert result.status == "SUCCEEDED" and result.metrics == {"out": 15.0}
    from IPython.core.error import UsageError

    with pytest.raises(UsageError, match="unknown parameter 'bogus'"):
        ip.run_line_magic("pipeline", "run mg -p bogus=1")


def test_a_forked_kernel_is_as_fresh_as_a_launched_one(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given two steps that describe their kernel, run once with kernels launched the usual way
    # (NB_MLOPS_FORK_KERNELS=0) and once forked from the run's zygote (the default)
    probe = (
        "import json, os, sys\n"
        "facts = dict(cwd=os.getcwd(), path=sys.path[:2], own_group=os.getpgid(0) == os.getpid(),"
        " ppid=os.getppid(), step=os.environ.get('NB_MLOPS_STEP'), run=os.environ.get("
        "'NB_MLOPS_RUN_ID'), leaked=[n for n in ('y', 'facts_a') if n in globals()],"
        " count=get_ipython().execution_count)\n"
    )
    new_notebook(
        project / "fork.ipynb",
        [
            ("x = 1\ny = 2\n" + probe + "open('a.json', 'w').write(json.dumps(facts))", ["step:a"]),
            ("z = x\n" + probe + "open('b.json', 'w').write(json.dumps(facts))", ["step:b"]),
        ],
    )
    build_pipeline(project / "fork.ipynb")

    # When it runs both ways
    seen: dict[str, dict[str, Any]] = {}
    offsets = []
    for how in ("launched", "forked"):
        with monkeypatch.context() as env:
            if how == "launched":
                env.setenv("NB_MLOPS_FORK_KERNELS", "0")
            run = run_pipeline("fork", cache=False)
        assert run.status == "SUCCEEDED", run.error
        for step in "ab":
            facts = json.loads((project / f"{step}.json").read_text())
            seen[f"{how}-{step}"] = facts
            cells = nbformat.read(run.run_dir / f"{step}.ipynb", as_version=4).cells
            code = [c for c in cells if c.cell_type == "code"]
            probe_at = next(i for i, c in enumerate(code, 1) if "facts = dict" in c.source)
            assert code[probe_at - 1].execution_count == probe_at, step
            offsets.append(facts["count"] - probe_at)  # nothing ran before the notebook's cells

    # Then every kernel saw the same world, each its own step, and nothing of the other's
    me = psutil.Process().pid
    assert seen["launched-a"]["ppid"] == seen["launched-b"]["ppid"] == me
    assert seen["forked-a"]["ppid"] == seen["forked-b"]["ppid"] != me  # the zygote
    for key in ("cwd", "path", "own_group"):
        assert len({json.dumps(f[key]) for f in seen.values()}) == 1, key
    assert len(set(offsets)) == 1
    for how in ("launched", "forked"):
        a, b = seen[f"{how}-a"], seen[f"{how}-b"]
        assert a["own_group"] and a["cwd"] == str(project)
        assert (a["step"], b["step"]) == ("a", "b") and a["run"] != b["run"]
        assert a["leaked"] == ["y"] and b["leaked"] == []
    assert _kernels() == []
