"""What a generated step notebook runs inside its kernel: apply the runner's context (parameters,
environment, limits), load upstream values, save this step's values and its completion marker.

Imported by every step kernel, so it stays cheap: standard library and blake3 only.
"""

from __future__ import annotations

import base64
import json
import math
import numbers
import os
import pickle
import sys
from pathlib import Path
from typing import Any

from nb_mlops.core import session

__all__ = ["DONE_FILE", "Step", "decode_context", "encode_context", "setup"]

DONE_FILE = "_done.json"


def encode_context(ctx: dict[str, Any]) -> str:
    """The runner's context as base64 JSON: papermill's translator cannot mangle [A-Za-z0-9+/=]."""
    return base64.b64encode(json.dumps(ctx, sort_keys=True).encode()).decode("ascii")


def decode_context(text: str) -> dict[str, Any]:
    if not text:
        return {}
    value = json.loads(base64.b64decode(text.encode("ascii"), validate=True))
    if not isinstance(value, dict):
        raise ValueError("nb_mlops_context must encode a JSON object")
    return value


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _dumps(value: Any) -> bytes:
    try:
        import cloudpickle  # functions and classes defined in the notebook travel by value
    except ImportError:  # pragma: no cover - cloudpickle comes with dask; plain pickle otherwise
        return pickle.dumps(value, protocol=5)
    return bytes(cloudpickle.dumps(value, protocol=5))


def _digest(data: bytes) -> str:
    from blake3 import blake3

    return str(blake3(data).hexdigest())


class Step:
    """The step running in this kernel (made by `setup`)."""

    def __init__(self, name: str, ctx: dict[str, Any], inputs: str, outputs: str) -> None:
        self.name = name
        self.ctx = ctx
        self.inputs_dir = inputs
        self.outputs_dir = Path(
            ctx.get("outputs_dir") or outputs or Path.cwd() / "nb_mlops_values" / name
        )
        self.exited: str | None = None

    def _on_cell(self, result: Any) -> None:
        # sys.exit() in a cell is swallowed by IPython and papermill calls it success: remember it.
        error = getattr(result, "error_in_exec", None)
        if isinstance(error, SystemExit) and self.exited is None:
            self.exited = f"sys.exit({error.code!r})"

    def load(self, ns: dict[str, Any], inputs: dict[str, str]) -> None:
        """Put each upstream value (name → producing step) into the namespace `ns`."""
        paths = self.ctx.get("inputs") or {}
        for name, producer in inputs.items():
            path = paths.get(name) or os.path.join(
                self.inputs_dir or "nb_mlops_values", producer, f"{name}.pkl"
            )
            try:
                with open(path, "rb") as fh:
                    ns[name] = pickle.load(fh)
            except FileNotFoundError:
                raise RuntimeError(
                    f"step {self.name!r}: the value `{name}` from step {producer!r} is missing "
                    f"({path}); run the pipeline with `nb-mlops pipeline run`, or pass "
                    "nb_mlops_inputs=<a run's values folder>"
                ) from None

    def save(self, ns: dict[str, Any], outputs: list[str], metrics: list[str]) -> None:
        """Pickle each output, write `metrics.json` values and, last, the completion marker."""
        self.outputs_dir.mkdir(parents=True, exist_ok=True)
        saved: dict[str, Any] = {}
        for name in outputs:
            if name not in ns:
                raise NameError(
                    f"step {self.name!r}: `{name}` is not defined at the end of the step, "
                    "but a later step reads it"
                )
            value = ns[name]
            try:
                data = _dumps(value)
            except Exception as exc:
                raise TypeError(
                    f"step {self.name!r}: `{name}` ({type(value).__name__}) cannot be passed to later "
                    f"steps ({exc}); values crossing steps are pickled: create it in the step that "
                    "uses it, or put both cells in one step"
                ) from None
            _atomic_write(self.outputs_dir / f"{name}.pkl", data)
            saved[name] = {"file": f"{name}.pkl", "digest": _digest(data), "bytes": len(data)}
        found: dict[str, float] = {}
        for name in metrics:
            value = ns.get(name)
            if isinstance(value, numbers.Real) and not isinstance(value, bool):
                number = float(value)
                if math.isfinite(number):
                    found[name] = number
        pending = sys.modules.get("nb_mlops.core.durable")  # loaded by any background writer
        flush = getattr(pending, "flush", None)
        if flush is not None:
            flush()  # everything logged or snapshotted is stored before the runner ends the run
        if self.exited:
            raise RuntimeError(
                f"step {self.name!r} called {self.exited} midway: the step did not run to its end"
            )
        marker = {"step": self.name, "outputs": saved, "metrics": found}
        _atomic_write(self.outputs_dir / DONE_FILE, json.dumps(marker, sort_keys=True).encode())


def _note_step_input(use: session.DataUse) -> None:
    # imported on first data use only: steps without snapshots never load tracking
    from nb_mlops.core.tracking import note_step_input

    note_step_input(use)


def setup(
    ns: dict[str, Any], step: str, context: str = "", inputs: str = "", outputs: str = ""
) -> Step:
    """Apply the runner's context to this kernel; returns the `Step` the loader and saver use."""
    ctx = decode_context(context)
    for name, value in (ctx.get("params") or {}).items():
        if isinstance(name, str) and name.isidentifier():
            ns[name] = value
    for key, value in (ctx.get("env") or {}).items():
        os.environ[str(key)] = str(value)
    limit = ctx.get("memory_limit_mb")
    if limit:
        import resource

        size = int(limit) * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (size, size))
    current = Step(step, ctx, inputs, outputs)
    session.add_listener(_note_step_input)
    get_ipython = ns.get("get_ipython")
    shell = get_ipython() if callable(get_ipython) else None
    if shell is not None:
        shell.events.register("post_run_cell", current._on_cell)
    return current
