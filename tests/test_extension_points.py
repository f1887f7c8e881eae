"""The extension points — promotion gates, executors, step-value marshallers — each loaded from a
real plugin distribution: a `NAME-0.dist-info` (METADATA, entry_points.txt) and its module in a
folder on `sys.path` (and on the step kernels' PYTHONPATH), found by `importlib.metadata`.

Given a plugin installed that way, when a promotion or a pipeline runs, then the plugin decides
(a gate blocks or passes, an executor runs the steps, a marshaller carries a value); a plugin that
cannot be imported is one line naming it.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from nbutil import new_notebook
from promotion_helpers import make_pipeline_run, set_gates

import nb_mlops
from nb_mlops.core import plugins
from nb_mlops.core.config import load_config
from nb_mlops.core.errors import ConfigError, PipelineError, PluginError
from nb_mlops.core.promotion import PromotionBlocked
from nb_mlops.core.promotion import gates as gate_registry
from nb_mlops.core.promotion.gates import (
    FAIL,
    PASS,
    GateResult,
    RunFacts,
    Verdict,
    evaluate_gates,
    parse_gates,
)
from nb_mlops.pipeline import build_pipeline, executors, marshal, run_pipeline

Install = Callable[[str, str, dict[str, str], dict[str, str]], Path]

SIZE_GATE = """
from nb_mlops.core.promotion.gates import FAIL, PASS, Verdict


class MaxSize:
    '''model_mb (a metric of the candidate) must be at most the configured megabytes.'''

    def validate(self, where, settings):
        if isinstance(settings, (int, float)) and not isinstance(settings, bool) and settings > 0:
            return []
        return [f"{where} must be a positive number of megabytes, got {settings!r}"]

    def check(self, facts, settings):
        size = facts.candidate.metrics.get("model_mb")
        if size is None:
            return Verdict(FAIL, f"run {facts.candidate.run_id} logged no model_mb")
        ok = size <= settings
        word = "within" if ok else "over"
        return Verdict(PASS if ok else FAIL, f"model_mb = {size:g} is {word} the limit",
                       size, f"<= {settings:g}")
"""

THREAD_EXECUTOR = """
import threading

from nb_mlops.pipeline.execute import run_step

RAN = []  # (spec, step) of every step this executor ran


class ThreadExecutor:
    def __init__(self, spec, *, max_parallel, env, cwd, log=None):
        self.spec = spec
        self.threads = []

    def warm(self, count):
        return None

    def submit(self, task, on_cell, done):
        def work():
            result = run_step(task)
            RAN.append((self.spec, task.step))
            done(result)

        thread = threading.Thread(target=work, daemon=True)
        self.threads.append(thread)
        thread.start()

    def close(self):
        for thread in self.threads:
            thread.join()
"""

BOXES = """
class Box:
    def __init__(self, payload):
        self.payload = payload
        self.via = "pickle"
"""

BOX_MARSHALLER = """
import json
from pathlib import Path

from boxes import Box


class BoxMarshaller:
    name = "box"

    def claims(self, obj):
        return isinstance(obj, Box)

    def save(self, obj, path):
        Path(path).write_text(json.dumps({"payload": obj.payload}))

    def load(self, path):
        box = Box(json.loads(Path(path).read_text())["payload"])
        box.via = "plugin"
        return box
"""

BROKEN = "import not_an_installed_module_xyz\n"


@pytest.fixture
def install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Install]:
    """Install a plugin distribution: `install(dist, group, {entry: "module:attr"}, {module: code})`.

    Its folder goes on `sys.path` and on the kernels' PYTHONPATH; the discovery cache is cleared
    before and after, and what the plugins registered is removed afterwards."""
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))
    )
    modules: list[str] = []

    def install(dist: str, group: str, entries: dict[str, str], sources: dict[str, str]) -> Path:
        for module, code in sources.items():
            (root / f"{module}.py").write_text(code)
            modules.append(module)
        info = root / f"{dist}-0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0\n")
        lines = "".join(f"{name} = {value}\n" for name, value in entries.items())
        (info / "entry_points.txt").write_text(f"[{group}]\n{lines}")
        plugins.forget()
        return root

    gates_before = dict(gate_registry._REGISTRY)
    executors_before = dict(executors._REGISTRY)
    marshallers_before = list(marshal._REGISTRY)
    plugins.forget()
    yield install
    plugins.forget()
    for module in modules:
        sys.modules.pop(module, None)
    gate_registry._REGISTRY.clear()
    gate_registry._REGISTRY.update(gates_before)
    executors._REGISTRY.clear()
    executors._REGISTRY.update(executors_before)
    marshal._REGISTRY[:] = marshallers_before


# --- gates -----------------------------------------------------------------------------------


def test_a_plugin_gate_blocks_a_failing_candidate_and_promotes_a_passing_one(
    project: Path, install: Install
) -> None:
    # Given a gate plugin `max_size`, configured next to a built-in gate
    install("sizegate", "nb_mlops.gates", {"max_size": "sizegate:MaxSize"}, {"sizegate": SIZE_GATE})
    set_gates(project, 'metrics = { accuracy = ">= 0.9" }\nmax_size = 10')
    big = make_pipeline_run(metrics={"accuracy": 0.95, "model_mb": 50.0})
    # When a candidate over the limit is promoted
    with pytest.raises(PromotionBlocked) as caught:
        nb_mlops.promote(big, model="sized")
    # Then the plugin's FAIL blocks it, shown in the decision's gates after the built-in one
    rows = {g.gate: g for g in caught.value.decision.gates}
    assert [g.gate for g in caught.value.decision.gates] == ["metric:accuracy", "max_size"]
    assert rows["metric:accuracy"].verdict == PASS
    assert rows["max_size"].verdict == FAIL
    assert rows["max_size"].detail == "model_mb = 50 is over the limit"
    assert (rows["max_size"].measured, rows["max_size"].expected) == (50.0, "<= 10")
    # When a candidate within the limit is promoted
    small = make_pipeline_run(metrics={"accuracy": 0.95, "model_mb": 4.0})
    decision = nb_mlops.promote(small, model="sized")
    # Then it becomes champion, the plugin's PASS recorded in the journal
    assert decision.status == "PROMOTED"
    passed = {g.gate: g.verdict for g in decision.gates}
    assert passed == {"metric:accuracy": PASS, "max_size": PASS}
    assert nb_mlops.history("sized")[-1].gates[-1]["gate"] == "max_size"


def test_a_plugin_gates_settings_are_checked_by_its_own_validator(
    project: Path, install: Install
) -> None:
    # Given the plugin gate configured with a value its validator refuses
    install("sizegate", "nb_mlops.gates", {"max_size": "sizegate:MaxSize"}, {"sizegate": SIZE_GATE})
    set_gates(project, 'max_size = "big"')
    # Then the configuration has that problem, and promotion refuses
    assert load_config().problems == (
        f"{project / 'pyproject.toml'}: tool.nb_mlops.gates.max_size must be a positive number "
        "of megabytes, got 'big'",
    )
    run = make_pipeline_run(metrics={"accuracy": 0.95, "model_mb": 1.0})
    with pytest.raises(ConfigError, match="max_size must be a positive number"):
        nb_mlops.promote(run, model="sized")


def test_an_unknown_gate_stays_an_error_listing_builtin_registered_and_installed_gates(
    install: Install,
) -> None:
    # Given an installed (not yet loaded) plugin gate and one registered in this process
    install("sizegate", "nb_mlops.gates", {"max_size": "sizegate:MaxSize"}, {"sizegate": SIZE_GATE})
    gate_registry.register("always_pass", _AlwaysPass())
    # When a table names a gate nobody provides
    with pytest.raises(ConfigError) as caught:
        parse_gates({"max_sizes_typo_xyz": 3, "no_such_gate": True})
    # Then the error names it and lists every known gate
    message = str(caught.value)
    assert message.startswith("gates.max_sizes_typo_xyz is not a known gate")
    assert "(and 1 more)" in message
    with pytest.raises(ConfigError) as caught:
        parse_gates({"no_such_gate": True})
    assert str(caught.value) == (
        "gates.no_such_gate is not a known gate (known: metrics, beat_champion, "
        "require_reproduced, require_data_verified, always_pass, max_size)"
    )


def test_a_gate_plugin_that_fails_to_import_is_one_line_naming_it(
    project: Path, install: Install
) -> None:
    # Given a gate plugin whose module cannot be imported, named by the gates table
    install("brokengate", "nb_mlops.gates", {"strict": "brokengate:Strict"}, {"brokengate": BROKEN})
    set_gates(project, "strict = true")
    # Then the configuration says so in one line naming the plugin, and promotion refuses
    (problem,) = load_config().problems
    assert problem.startswith(
        f"{project / 'pyproject.toml'}: tool.nb_mlops.gates.strict: plugin 'strict' of entry-point group nb_mlops.gates "
        "(brokengate:Strict) failed to load: ModuleNotFoundError: "
    )
    assert "\n" not in problem
    with pytest.raises(ConfigError, match="plugin 'strict'"):
        nb_mlops.promote(make_pipeline_run(), model="strict")


class _AlwaysPass:
    def validate(self, where: str, settings: Any) -> list[str]:
        return []

    def check(self, facts: Any, settings: Any) -> Verdict:
        return Verdict(PASS, "always")


class _Raises(_AlwaysPass):
    def check(self, facts: Any, settings: Any) -> Verdict:
        raise RuntimeError("store unreachable\nsecond line")


class _Unsure(_AlwaysPass):
    def check(self, facts: Any, settings: Any) -> Verdict:
        return Verdict("MAYBE", "not sure")


@pytest.mark.parametrize(
    ("gate", "detail"),
    [
        (_Raises(), "the gate raised RuntimeError: store unreachable second line"),
        (_Unsure(), "the gate returned the verdict 'MAYBE', not PASS, FAIL or SKIP"),
    ],
)
def test_a_gate_that_raises_or_answers_no_verdict_fails_closed(
    install: Install, gate: Any, detail: str
) -> None:
    # Given a registered gate that breaks
    gate_registry.register("fragile", gate)
    # When a candidate is judged
    results = evaluate_gates(parse_gates({"fragile": True}), RunFacts("r1"))
    # Then the gate FAILs, saying why in one line
    assert results == [GateResult("fragile", FAIL, None, None, detail)]


def test_a_gate_set_to_false_is_off_and_builtin_names_cannot_be_taken(install: Install) -> None:
    gate_registry.register("always_pass", _AlwaysPass())
    assert evaluate_gates(parse_gates({"always_pass": False}), RunFacts("r1")) == []
    with pytest.raises(ValueError, match="'metrics' is a built-in gate"):
        gate_registry.register("metrics", _AlwaysPass())


def test_the_promote_dialog_previews_a_plugin_gate_with_its_settings(install: Install) -> None:
    from nb_mlops.server.notebook import _gate_rows

    gate_registry.register("always_pass", _AlwaysPass())
    spec = parse_gates({"always_pass": 3, "metrics": {"accuracy": ">= 0.9"}})
    assert _gate_rows(spec, {"accuracy": 0.8}) == [
        {"gate": "metric:accuracy", "expected": ">= 0.9", "champion": 0.8},
        {"gate": "always_pass", "expected": "3"},
    ]


# --- executors -------------------------------------------------------------------------------


def test_a_plugin_executor_runs_a_real_pipeline(project: Path, install: Install) -> None:
    # Given an executor plugin for the scheme `threads`, and a two-step pipeline
    install(
        "threadexec",
        "nb_mlops.executors",
        {"threads": "threadexec:ThreadExecutor"},
        {"threadexec": THREAD_EXECUTOR},
    )
    new_notebook(
        project / "ex.ipynb",
        [
            ("a = 20", ["step:first"]),
            ("b = a + 1", ["step:second"]),
            ("print(b)", ["pipeline-metrics"]),
        ],
    )
    build_pipeline(project / "ex.ipynb")
    # When the pipeline runs with `--executor threads://here`
    run = run_pipeline("ex", executor="threads://here", cache=False)
    # Then both steps ran through the plugin, in their real kernels
    assert run.status == "SUCCEEDED", run.error
    assert run.metrics["b"] == 21.0
    import threadexec

    assert sorted(threadexec.RAN) == [("threads://here", "first"), ("threads://here", "second")]
    assert executors.resolve("threads") is threadexec.ThreadExecutor


def test_an_unknown_executor_lists_the_installed_plugins(install: Install) -> None:
    install(
        "threadexec",
        "nb_mlops.executors",
        {"threads": "threadexec:ThreadExecutor"},
        {"threadexec": THREAD_EXECUTOR},
    )
    with pytest.raises(PipelineError) as caught:
        executors.check_spec("slurm://cluster")
    assert str(caught.value) == (
        "unknown executor 'slurm://cluster'; use one of: dask, local, threads "
        "(e.g. dask://HOST:PORT)"
    )


def test_an_executor_plugin_that_fails_to_import_is_one_line_naming_it(
    project: Path, install: Install
) -> None:
    # Given an executor plugin whose module cannot be imported
    install("brokenexec", "nb_mlops.executors", {"k8s": "brokenexec:Pods"}, {"brokenexec": BROKEN})
    new_notebook(project / "k.ipynb", [("x = 1", ["step:only"])])
    build_pipeline(project / "k.ipynb")
    # When a pipeline is run with it, then it is refused before anything runs, naming the plugin
    with pytest.raises(PluginError) as caught:
        run_pipeline("k", executor="k8s://default", cache=False)
    message = str(caught.value)
    assert message.startswith(
        "plugin 'k8s' of entry-point group nb_mlops.executors (brokenexec:Pods) failed to load: "
        "ModuleNotFoundError: No module named 'not_an_installed_module_xyz'"
    )
    assert "\n" not in message


# --- marshallers -----------------------------------------------------------------------------


def test_a_plugin_marshaller_carries_a_value_between_real_steps(
    project: Path, install: Install
) -> None:
    # Given a marshaller plugin for the types of module `boxes` (entry point named by the prefix)
    install(
        "boxplug",
        "nb_mlops.marshallers",
        {"boxes": "boxplug:BoxMarshaller"},
        {"boxes": BOXES, "boxplug": BOX_MARSHALLER},
    )
    new_notebook(
        project / "bx.ipynb",
        [
            ("from boxes import Box\nbox = Box([1, 2, 3])", ["step:make"]),
            ("assert box.via == 'plugin', box.via\ntotal = sum(box.payload)", ["step:use"]),
            ("print(total)", ["pipeline-metrics"]),
        ],
    )
    build_pipeline(project / "bx.ipynb")
    # When the pipeline runs (in real step kernels, which discover the plugin themselves)
    run = run_pipeline("bx", cache=False)
    # Then the value crossed the steps through the plugin's file format
    assert run.status == "SUCCEEDED", run.error
    assert run.metrics["total"] == 6.0
    written = list(project.rglob("*.box"))
    assert len(written) == 1
    assert json.loads(written[0].read_text()) == {"payload": [1, 2, 3]}


def test_a_marshaller_plugin_that_fails_to_import_is_named(
    tmp_path: Path, install: Install
) -> None:
    # Given a marshaller plugin for module `crates` whose own module cannot be imported
    install(
        "crateplug",
        "nb_mlops.marshallers",
        {"crates": "crateplug:CrateMarshaller"},
        {"crates": BOXES, "crateplug": BROKEN},
    )
    import crates

    # When a value of that module is saved, then the error names the plugin
    with pytest.raises(PluginError) as caught:
        marshal.save_values(tmp_path / "v", {"c": crates.Box([1])}, {}, {})
    assert str(caught.value).startswith(
        "plugin 'crates' of entry-point group nb_mlops.marshallers (crateplug:CrateMarshaller) "
        "failed to load: ModuleNotFoundError: "
    )


def test_builtin_marshallers_are_registered_through_the_registry() -> None:
    assert marshal.marshallers()[-4:] == ["xgboost.DMatrix", "xgboost.Booster", "torch", "keras"]
    with pytest.raises(ValueError, match="needs a non-empty `name`"):
        marshal.register(object())  # type: ignore[arg-type]
