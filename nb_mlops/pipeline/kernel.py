"""What a generated step notebook runs inside its kernel: apply the runner's context (parameters,
environment, limits), load upstream values (and global random generator states), save this step's
values together (`marshal.py`), the files it read (`reads.py`) and its completion marker.

Imported by every step kernel, so it stays cheap: the standard library until values move.
"""

from __future__ import annotations

import base64
import json
import math
import numbers
import os
import sys
import uuid
from pathlib import Path
from typing import Any

from nb_mlops.core import durable, session
from nb_mlops.core.files import write_atomic
from nb_mlops.pipeline import marshal
from nb_mlops.pipeline.reads import Recorder, file_digest

__all__ = ["DONE_FILE", "Step", "decode_context", "encode_context", "setup"]

DONE_FILE = "_done.json"


def encode_context(ctx: dict[str, Any]) -> str:
    """The runner's context as base64 JSON: papermill's translator cannot mangle [A-Za-z0-9+/=].

    Keys keep their order (a dict parameter arrives as it was given); NaN and infinities
    travel as Python's json writes them.
    """
    return base64.b64encode(json.dumps(ctx).encode()).decode("ascii")


def decode_context(text: str) -> dict[str, Any]:
    """The context `encode_context` made (empty text: a plain papermill run, no context)."""
    if not text:
        return {}
    value = json.loads(base64.b64decode(text.encode("ascii"), validate=True))
    if not isinstance(value, dict):
        raise ValueError("nb_mlops_context must encode a JSON object")
    return value


# files above this size get a per-run identity instead of a content digest: hashing a gigabyte on
# every save costs more than re-running what depends on it (their content is checked by stat)
DIGEST_LIMIT = 1 << 26
RNG = "rng:"
_RECORDER = Recorder()


def _get_rng(generator: str) -> Any:
    if generator == "random":
        import random

        return random.getstate()
    module = sys.modules.get("numpy" if generator == "numpy.random" else generator)
    if module is None:
        return None  # never imported here: the generator was never used
    if generator == "numpy.random":
        return module.random.get_state()
    return module.get_rng_state()


def _set_rng(generator: str, state: Any) -> None:
    if state is None:
        return
    if generator == "random":
        import random

        random.setstate(state)
    elif generator == "numpy.random":
        import numpy

        numpy.random.set_state(state)
    elif generator == "torch":
        import torch

        torch.set_rng_state(state)


def _restored_by_name() -> dict[str, int]:
    """Snapshots this step restored by name → the (latest) version each read; {} when the step
    restored none (the data package is then not even imported)."""
    if "nb_mlops.core.data.pins" not in sys.modules:
        return {}
    from nb_mlops.core.data.pins import latest_reads

    return latest_reads()


def _files_digest(folder: Path, files: list[str]) -> tuple[str, dict[str, Any]]:
    """One digest for a step's saved values, and each file's digest (None above DIGEST_LIMIT,
    then checked by stat) with its stat."""
    from blake3 import blake3

    combined = blake3()
    entries: dict[str, Any] = {}
    for name in files:
        path = folder / name
        st = path.stat()
        if path.is_dir():
            digest = None
        elif st.st_size <= DIGEST_LIMIT:
            digest = file_digest(path)
        else:
            digest = None
        combined.update(f"{name}\0{digest or uuid.uuid4().hex}\0{st.st_size}\n".encode())
        entries[name] = {
            "digest": digest,
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "ino": st.st_ino,
        }
    return str(combined.hexdigest()), entries


def _metric_values(ns: dict[str, Any], metrics: list[str]) -> dict[str, float]:
    """The finite real numbers among the step's metric variables."""
    found: dict[str, float] = {}
    for name in metrics:
        value = ns.get(name)
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            number = float(value)
            if math.isfinite(number):
                found[name] = number
    return found


class Step:
    """The step running in this kernel (made by `setup`)."""

    def __init__(self, name: str, ctx: dict[str, Any], inputs: str, outputs: str) -> None:
        self.name = name
        self.ctx = ctx
        self.inputs_dir = inputs
        self.outputs_dir = Path(
            ctx.get("outputs_dir") or outputs or Path.cwd() / "nb_mlops_values" / name
        )
        self.exited: str | None = None  # how a cell exited, e.g. "sys.exit(1)"
        self.stopped = False  # the step ended early, successfully (its marker is written)
        # the functions and classes of the imports/functions cells, taken before any value loads
        self.prelude: dict[str, Any] | None = None
        self.unchanged: dict[str, str | None] = {}  # input → its fingerprint when loaded

    def _on_cell(self, result: Any) -> None:
        # A cell raising SystemExit ends the notebook: no later cell runs, the saver included.
        # papermill calls `sys.exit()`, `sys.exit(0)` and `raise SystemExit` (the exception's
        # text is "" or "0") a success: the step ends here, successfully, and nothing after it
        # in the pipeline runs. Any other status is the failure papermill reports.
        error = getattr(result, "error_in_exec", None)
        if not isinstance(error, SystemExit) or self.exited is not None:
            return
        self.exited = "sys.exit()" if error.code is None else f"sys.exit({error.code!r})"
        if str(error) in ("", "0"):
            durable.flush()  # what nb_mlops.log() recorded (or snapshotted) so far is kept
            self.stopped = True
            marker = {
                "step": self.name,
                "outputs": {},
                "files": {},
                "metrics": {},
                "stopped": self.exited,
            }
            self.outputs_dir.mkdir(parents=True, exist_ok=True)
            write_atomic(
                self.outputs_dir / DONE_FILE,
                json.dumps(marker, sort_keys=True).encode(),
                durable=True,
            )

    def load(
        self, ns: dict[str, Any], inputs: dict[str, str], unchanged: list[str] | None = None
    ) -> None:
        """Put each upstream value (name → producing step) into the namespace `ns`: the values
        of one producer come from its one file, so objects shared between them stay shared.

        `unchanged`: inputs the build assumed this step leaves alone (it gives them to a model's
        `fit`/`predict`, so later steps take them from upstream); `save` checks that."""
        if self.prelude is None:
            self.prelude = marshal.callables_of(ns)
        paths = self.ctx.get("inputs") or {}
        by_path: dict[str, list[tuple[str, str]]] = {}
        for name, producer in inputs.items():
            path = paths.get(name) or os.path.join(
                self.inputs_dir or "nb_mlops_values", producer, marshal.VALUES_FILE
            )
            by_path.setdefault(path, []).append((name, producer))
        for path, names in by_path.items():
            try:
                values = marshal.load_values(path, ns, self.prelude)
            except FileNotFoundError:
                name, producer = names[0]
                raise RuntimeError(
                    f"step {self.name!r}: the value `{name}` from step {producer!r} is missing "
                    f"({path}); run the pipeline with `nb-mlops pipeline run`, or pass "
                    "nb_mlops_inputs=<a run's values folder>"
                ) from None
            for name, _producer in names:
                if name.startswith(RNG):
                    _set_rng(name[len(RNG) :], values.get(name))
                elif name in values:
                    ns[name] = values[name]
                else:
                    ns.pop(name, None)  # unbound there too (deleted), as in the notebook
        self.unchanged = {name: fingerprint(ns[name]) for name in unchanged or () if name in ns}

    def save(
        self,
        ns: dict[str, Any],
        outputs: list[str],
        metrics: list[str],
        paths: list[str] | None = None,
    ) -> None:
        """Save the outputs together, write `metrics` values, the files the step read (and the
        existing files among `paths`, the literal paths of its code) and, last, the completion
        marker."""
        if self.stopped:
            return  # ended early by sys.exit(0): its marker says so, later steps do not run
        self._check_unchanged(ns)
        self.outputs_dir.mkdir(parents=True, exist_ok=True)
        values: dict[str, Any] = {}
        for name in outputs:
            if name.startswith(RNG):
                values[name] = _get_rng(name[len(RNG) :])
            elif name in ns:
                values[name] = ns[name]
        prelude = self.prelude or {}
        try:
            files = marshal.save_values(self.outputs_dir, values, ns, prelude)
        except Exception as exc:
            raise TypeError(self._unsaveable(values, ns, prelude, exc)) from None
        digest, entries = _files_digest(self.outputs_dir, files)
        size = sum(e["size"] for e in entries.values())
        saved: dict[str, Any] = {}
        for name in outputs:
            saved[name] = {"file": marshal.VALUES_FILE, "digest": digest, "bytes": size}
            if not name.startswith(RNG) and name not in ns:
                saved[name]["absent"] = True
        found = _metric_values(ns, metrics)
        # every background writer (tracking, data snapshots) registers with `durable`: all that
        # was logged or snapshotted is stored before the runner ends the run
        durable.flush()
        if self.exited:
            raise RuntimeError(
                f"step {self.name!r} called {self.exited} midway: the step did not run to its end"
            )
        for path in paths or ():
            full = os.path.realpath(path)
            if os.path.isfile(full) and full not in _RECORDER.written:
                _RECORDER.reads.setdefault(full, _stat(full))
        marker = {
            "step": self.name,
            "outputs": saved,
            "files": entries,
            "metrics": found,
            "reads": _RECORDER.collect(),
            "restores": _restored_by_name(),
        }
        write_atomic(
            self.outputs_dir / DONE_FILE, json.dumps(marker, sort_keys=True).encode(), durable=True
        )

    def _check_unchanged(self, ns: dict[str, Any]) -> None:
        """Fail when an input the build assumed unchanged was changed in place: the later steps
        that take it from upstream would compute with the old value, unlike the notebook."""
        for name, before in self.unchanged.items():
            if before is None or name not in ns or fingerprint(ns[name]) == before:
                continue
            raise RuntimeError(
                f"step {self.name!r} changed `{name}` in place, but the pipeline was built on "
                f"the rule that a model's methods (fit, predict, ...) leave the data they are "
                f"given alone, so later steps take `{name}` from the step that made it: work on "
                f"a copy (`{name} = {name}.copy()` before the call), or put the cells that use "
                f"`{name}` after this one into this step"
            )

    def _unsaveable(
        self, values: dict[str, Any], ns: dict[str, Any], prelude: dict[str, Any], exc: Exception
    ) -> str:
        """Name the first value that cannot be saved on its own (they are saved together)."""
        import tempfile

        for name, value in values.items():
            with tempfile.TemporaryDirectory() as scratch:
                try:
                    marshal.save_values(Path(scratch), {name: value}, ns, prelude)
                except Exception as inner:
                    return (
                        f"step {self.name!r}: `{name}` ({type(value).__name__}) cannot be passed "
                        f"to later steps ({inner}); values crossing steps are pickled: create it "
                        "in the step that uses it, or put both cells in one step"
                    )
        return f"step {self.name!r}: its values cannot be saved ({exc})"


def fingerprint(value: Any) -> str | None:
    """A digest of what `value` holds (its pickle, large buffers hashed in place), or None when
    it cannot be pickled (then it is not checked)."""
    import pickle

    from blake3 import blake3

    hasher = blake3(max_threads=blake3.AUTO)

    def buffer(view: pickle.PickleBuffer) -> bool:
        try:
            hasher.update(view.raw())
        except BufferError:  # not contiguous: pickled in the stream instead
            return True
        return False

    try:
        stream = pickle.dumps(value, protocol=5, buffer_callback=buffer)
    except Exception:
        return None
    hasher.update(stream)
    return hasher.hexdigest()


def _stat(path: str) -> list[int]:
    from nb_mlops.pipeline.reads import stat_key

    return stat_key(os.stat(path))


def _note_step_input(use: session.DataUse) -> None:
    # imported on first data use only: steps without snapshots never load tracking
    from nb_mlops.core.tracking import note_step_input

    note_step_input(use)


def _own_folders(ctx: dict[str, Any], inputs: str, outputs: Path) -> list[str]:
    """Folders whose files are the pipeline's own, not data a step reads: the store, values."""
    folders = [str(outputs), inputs]
    folders += [os.path.dirname(os.path.dirname(p)) for p in (ctx.get("inputs") or {}).values()]
    root = os.environ.get("NB_MLOPS_ROOT")
    if root:
        folders.append(os.path.join(root, ".nb_mlops"))
    return [f for f in folders if f]


def _after_prelude(shell: Any, current: Step, cells: int) -> None:
    """Take the prelude's functions and classes as the cell after the `cells` prelude cells
    starts (the loader, or the step's first cell)."""
    started = [0]

    def before(*_: Any) -> None:
        started[0] += 1
        if started[0] > cells:
            current.prelude = marshal.callables_of(shell.user_ns)
            shell.events.unregister("pre_run_cell", before)

    shell.events.register("pre_run_cell", before)


def setup(
    ns: dict[str, Any],
    step: str,
    context: str = "",
    inputs: str = "",
    outputs: str = "",
    prelude: int = 0,
) -> Step:
    """Apply the runner's context to this kernel; returns the `Step` the loader and saver use
    (`prelude`: how many imports/functions cells follow, when they define functions or classes
    that values crossing steps may refer to)."""
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
    if ctx.get("data_pins"):  # a re-pointed run: `restore(NAME)` reads the pinned version
        from nb_mlops.core.data.pins import install

        install(ctx["data_pins"])
    current = Step(step, ctx, inputs, outputs)
    _RECORDER.start(_own_folders(ctx, inputs, current.outputs_dir))
    session.add_listener(_note_step_input)
    get_ipython = ns.get("get_ipython")
    shell = get_ipython() if callable(get_ipython) else None
    if shell is not None:
        shell.events.register("post_run_cell", current._on_cell)
        if prelude:
            _after_prelude(shell, current, prelude)
    return current
