"""End to end in a real browser: JupyterLab + the nb_mlops labextension + Debian's Chromium.

Given a project holding the quickstart notebook with a champion already promoted (v1), when a user
opens the notebook, edits it, clicks Promote (which saves it on their word), changes a parameter
and submits, then the MLOps panel shows the job PROMOTED and MLflow's `champion` moves to v2; when
they click Rollback and give a reason, it moves back to v1. Screenshots go to `test-artifacts/`. Missing Chromium fails the test (never a skip).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests import jupyter_proc
from tests.jupyter_proc import CHROMIUM, CHROMIUM_ARGS
from tests.nbutil import new_notebook

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts"
TOKEN = "nbmlops-browser-test-token"
MODEL = "quickstart"
PYPROJECT = f"""[project]
name = "browser-demo"

[tool.nb_mlops]
model = "{MODEL}"

[tool.nb_mlops.gates]
metrics = {{ accuracy = ">= 0.5" }}
"""


def _notebook(project: Path) -> Path:
    """The real quickstart when it exists, else a small sklearn notebook with the same shape."""
    target = project / "notebooks" / "quickstart.ipynb"
    source = REPO / "notebooks" / "quickstart.ipynb"
    if source.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        return target
    return new_notebook(
        target,
        [
            (
                "import nb_mlops\nfrom sklearn.datasets import load_iris\n"
                "from sklearn.linear_model import LogisticRegression",
                ["imports"],
            ),
            ("max_depth: int = 8\nmax_iter: int = 300", ["parameters"]),
            (
                "%%track\nX, y = load_iris(return_X_y=True)\n"
                "model = LogisticRegression(C=1 / max_depth, max_iter=max_iter).fit(X, y)\n"
                "nb_mlops.log(accuracy=model.score(X, y))",
                ["step:train"],
            ),
        ],
    )


def _cli(project: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "nb_mlops.cli", *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, f"nb-mlops {' '.join(args)} failed:\n{done.stderr[-3000:]}"
    return done.stdout


def _champion(project: Path) -> str | None:
    from nb_mlops.core.config import load_config
    from nb_mlops.core.promotion.registry import CHAMPION, get_alias
    from nb_mlops.core.store import client

    return get_alias(client(load_config(project)), MODEL, CHAMPION)


@pytest.fixture
def lab(tmp_path: Path) -> Any:
    """A project with a first champion (v1, from the CLI) served by `jupyter lab`."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: run scripts/ensure_chromium.sh (make test does)")
    chosen = os.environ.get("NB_MLOPS_TEST_LABEXTENSION")
    bundle = (
        Path(chosen)
        if chosen
        else Path(sys.prefix, "share", "jupyter", "labextensions", "nb_mlops")
    )
    assert (bundle / "package.json").exists(), (
        f"no nb_mlops labextension at {bundle}: pip install -e . (or build labextension/)"
    )
    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text(PYPROJECT)
    notebook = _notebook(project)
    # Given: champion v1 from a first pipeline run (the default parameters), via the CLI.
    pipeline_dir = project / "pipelines" / "quickstart"
    _cli(project, "pipeline", "build", str(notebook), "-n", "quickstart", "-o", str(pipeline_dir))
    run = json.loads(_cli(project, "pipeline", "run", str(pipeline_dir), "--json"))
    _cli(project, "promote", run["run_id"], "--model", MODEL, "--json")
    assert _champion(project) == "1"

    env = {k: v for k, v in os.environ.items() if not k.startswith(("NB_MLOPS_", "JUPYTER_"))}
    env["JUPYTER_CONFIG_DIR"] = str(tmp_path / "jupyter-config")
    env["JUPYTERLAB_SETTINGS_DIR"] = str(jupyter_proc.quiet_settings(tmp_path / "lab-settings"))
    env["JUPYTERLAB_WORKSPACES_DIR"] = str(tmp_path / "lab-workspaces")
    if chosen:
        # a data folder searched before the installed ones: its nb_mlops wins
        data = tmp_path / "jupyter-data"
        (data / "labextensions").mkdir(parents=True)
        (data / "labextensions" / "nb_mlops").symlink_to(bundle.resolve())
        env["JUPYTER_PATH"] = str(data)
    proc, port = jupyter_proc.start(project, token=TOKEN, env=env, log=tmp_path / "jupyter.log")
    try:
        yield {
            "project": project,
            "port": port,
            "notebook": "notebooks/quickstart.ipynb",
            "log": tmp_path / "jupyter.log",
            "bundle_entry": json.loads((bundle / "package.json").read_text())["jupyterlab"][
                "_build"
            ]["load"],
        }
    finally:
        jupyter_proc.stop(proc)
        # kernels started for the open notebook live in sessions of their own: none may remain
        leftovers = subprocess.run(
            ["pgrep", "-f", str(tmp_path / "jupyter-config")], capture_output=True, text=True
        ).stdout.split()
        for pid in leftovers:
            os.kill(int(pid), signal.SIGKILL)


def test_promote_and_rollback_from_jupyterlab(lab: dict[str, Any]) -> None:
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    project: Path = lab["project"]
    url = f"http://127.0.0.1:{lab['port']}/lab/tree/{lab['notebook']}?token={TOKEN}"
    timings: dict[str, float] = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1500, "height": 950})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        try:
            start = time.monotonic()
            page.goto(url)
            button = page.locator(".nbm-promote-button button, button.nbm-promote-button").first
            expect(button).to_be_visible(timeout=60_000)
            timings["page_to_promote_button_s"] = time.monotonic() - start
            # the page runs the bundle under test (its entry file name carries a content hash)
            config = json.loads(page.locator("#jupyter-config-data").text_content() or "{}")
            loaded = {e["name"]: e["load"] for e in config.get("federated_extensions", [])}
            assert loaded.get("nb_mlops") == lab["bundle_entry"], loaded.get("nb_mlops")
            expect(button).to_be_enabled(timeout=30_000)
            page.screenshot(path=str(ARTIFACTS / "browser-1-notebook.png"))

            # When: an unsaved edit, then Promote → "Save and continue" (the saved file runs)
            editor = page.locator(".jp-Notebook .jp-CodeCell .cm-content").nth(1)
            editor.click()
            page.keyboard.press("Control+Home")
            page.keyboard.type("# edited in the browser")
            page.keyboard.press("Enter")
            expect(page.locator(".jp-mod-dirty").first).to_be_attached(timeout=10_000)
            expect(button).to_be_enabled()
            button.click()
            ask = page.locator(".jp-Dialog")
            expect(ask).to_contain_text("unsaved changes", timeout=10_000)
            ask.locator(".jp-Dialog-button.jp-mod-accept").click()

            # and change max_depth (a typo first: the type is checked as you type) → submit
            dialog = page.locator(".jp-Dialog")
            expect(dialog.locator(".nbm-form")).to_be_visible(timeout=30_000)
            field = dialog.locator("#nbm-param-max_depth")
            expect(field).to_have_value("8")
            field.fill("abc")
            expect(dialog.locator('[data-param-error="max_depth"]')).to_contain_text("integer")
            field.fill("5")
            expect(dialog.locator('[data-param-error="max_depth"]')).to_have_text("")
            expect(dialog.locator(".nbm-gate-preview")).to_contain_text("metric:accuracy")
            page.screenshot(path=str(ARTIFACTS / "browser-2-promote-dialog.png"))
            clicked = time.monotonic()
            dialog.locator(".jp-Dialog-button.jp-mod-accept").click()

            # Then: the panel follows the job to PROMOTED, with steps and the gate table
            job = page.locator(".nbm-job").first
            expect(job).to_be_visible(timeout=10_000)
            timings["click_to_job_card_s"] = time.monotonic() - clicked
            expect(job.locator(".nbm-steps li").first).to_be_visible(timeout=120_000)
            page.screenshot(path=str(ARTIFACTS / "browser-3-job-running.png"))
            expect(job).to_have_attribute("data-status", "PROMOTED", timeout=420_000)
            expect(job.locator(".nbm-gates")).to_contain_text("PASS")
            page.screenshot(path=str(ARTIFACTS / "browser-4-promoted.png"))
            assert "# edited in the browser" in (project / lab["notebook"]).read_text()
            assert _champion(project) == "2"
            stored = json.loads(next((project / ".nb_mlops" / "jobs").glob("*.json")).read_text())
            assert stored["parameters"] == {
                "n_estimators": 100,
                "max_depth": 5,
                "test_size": 0.25,
                "seed": 42,
            } or (stored["parameters"].get("max_depth") == 5)

            # When: Rollback with a reason → Then: champion is back at v1
            champion = page.locator(".nbm-champion b")
            expect(champion).to_have_text("2", timeout=30_000)
            page.locator(".nbm-rollback").click()
            confirm = page.locator(".jp-Dialog")
            confirm.locator(".nbm-reason").fill(
                "browser test: roll back <img src=x onerror=alert(1)>"
            )
            page.screenshot(path=str(ARTIFACTS / "browser-5-rollback-dialog.png"))
            confirm.locator(".jp-Dialog-button.jp-mod-accept").click()
            expect(champion).to_have_text("1", timeout=120_000)
            # the hostile reason is shown as text in the history, never as markup
            expect(page.locator(".nbm-history")).to_contain_text("<img src=x onerror=alert(1)>")
            assert page.locator(".nbm-history img").count() == 0
            page.screenshot(path=str(ARTIFACTS / "browser-6-rolled-back.png"))
            assert _champion(project) == "1"
            assert not errors, errors
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "browser-failure.png"))
            print(lab["log"].read_text()[-5000:])
            raise
        finally:
            (ARTIFACTS / "browser-timings.json").write_text(json.dumps(timings, indent=1))
            browser.close()
