# mypy: disable-error-code="no-untyped-call,no-untyped-def,misc"
"""Step values on disk: a step's outputs are saved together in one pickle, so objects shared
between them stay shared (`b = a`, an array and a view of it), and restored into the next step's
namespace.

- Large buffers (numpy arrays, pandas frames and series, Arrow data: anything pickle protocol 5
  hands out of band) go to a side file, written once and mapped back copy-on-write: loading a
  gigabyte costs no copy, and the step may still change the array.
- Functions and classes defined in the notebook travel by value (cloudpickle) but run against the
  namespace of the step that loads them: their globals are that step's globals. Those of the
  `imports`/`functions` cells are taken from the loading step's own definitions. A class travels
  with its attributes (values load producer by producer in run order, so the latest state wins);
  a function under `functools.lru_cache` travels with an empty cache.
- Types pickle cannot carry, or carries badly, go through a marshaller chosen by type: xgboost
  DMatrix and Booster, torch tensors, keras models (each when installed; torch modules pickle,
  their notebook-defined classes by value), and any registered by a third party under the
  `nb_mlops.marshallers` entry-point group.

A marshaller (the `Marshaller` protocol) has a `name`, `claims(obj) -> bool` (cheap: called for
objects of types not handled above), `save(obj, path) -> None` writing one file or folder at
`path`, and `load(path) -> obj`. The entry point's name is a module prefix of the types it handles
(`mylib` or `mylib.models`): a plugin is imported only when a value of such a type is saved, or
one it saved is loaded; its value, a marshaller instance or a class to instantiate.
"""

from __future__ import annotations

import contextlib
import functools
import io
import mmap
import os
import pickle
import sys
import threading
import types
import warnings
from pathlib import Path
from typing import Any, Protocol

from nb_mlops.core import plugins
from nb_mlops.core.errors import PluginError

__all__ = [
    "BUFFERS_FILE",
    "ENTRY_POINT_GROUP",
    "VALUES_FILE",
    "Marshaller",
    "load_values",
    "marshallers",
    "register",
    "save_values",
]

VALUES_FILE = "values.pkl"
BUFFERS_FILE = "buffers.bin"
ENTRY_POINT_GROUP = plugins.MARSHALLERS
# buffers smaller than this stay inside the pickle (a separate mapping costs more than a copy)
OUT_OF_BAND_BYTES = 1 << 16
_ALIGN = 64
# types of these modules never go through a plugin: no entry-point scan for them
_PLAIN_MODULES = frozenset(
    {
        "builtins",
        "__main__",
        "numpy",
        "pandas",
        "pyarrow",
        "collections",
        "datetime",
        "decimal",
        "fractions",
        "uuid",
        "pathlib",
        "re",
        "enum",
        "functools",
        "types",
        "cloudpickle",
        "nb_mlops",
    }
)


class Marshaller(Protocol):
    """Saves and loads values of the types it claims (one file or folder per value).

    `name` is also the suffix of the files it writes (`3.NAME`) and how a saved value finds its
    marshaller again when loaded: keep it stable across versions of the plugin.
    """

    name: str

    def claims(self, obj: Any) -> bool:
        """Whether this marshaller handles `obj` (a cheap type check)."""

    def save(self, obj: Any, path: Path) -> None:
        """Write `obj` to `path` (a file or a folder, created by the marshaller)."""

    def load(self, path: Path) -> Any:
        """Read back what `save` wrote at `path`."""


# --- built-in marshallers -------------------------------------------------------------------


def _type_name(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


class _XGBoostDMatrix:
    """xgboost's DMatrix holds a C pointer pickle refuses; its binary format keeps the data and
    the meta information (labels, weights, feature names and types)."""

    name = "xgboost.DMatrix"

    def claims(self, obj: Any) -> bool:
        xgb = sys.modules.get("xgboost")
        return xgb is not None and isinstance(obj, xgb.DMatrix)

    def save(self, obj: Any, path: Path) -> None:
        obj.save_binary(str(path), silent=True)

    def load(self, path: Path) -> Any:
        import xgboost

        with warnings.catch_warnings():  # xgboost 3.1 warns about its own binary format
            warnings.simplefilter("ignore")
            return xgboost.DMatrix(str(path), silent=True)


class _XGBoostBooster:
    """A trained xgboost Booster as its UBJSON model (with its attributes)."""

    name = "xgboost.Booster"

    def claims(self, obj: Any) -> bool:
        xgb = sys.modules.get("xgboost")
        return xgb is not None and type(obj) is xgb.Booster

    def save(self, obj: Any, path: Path) -> None:
        path.write_bytes(bytes(obj.save_raw(raw_format="ubj")))

    def load(self, path: Path) -> Any:
        import xgboost

        return xgboost.Booster(model_file=bytearray(path.read_bytes()))


class _Torch:
    """torch tensors through `torch.save` (their dtype, device, gradients kept). Modules go
    through pickle: a module class defined in the notebook travels by value with them."""

    name = "torch"

    def claims(self, obj: Any) -> bool:
        torch = sys.modules.get("torch")
        return torch is not None and isinstance(obj, torch.Tensor)

    def save(self, obj: Any, path: Path) -> None:
        import torch

        torch.save(obj, str(path))

    def load(self, path: Path) -> Any:
        import torch

        return torch.load(str(path), weights_only=False)


class _Keras:
    """keras models in keras's own format (their graph and weights; pickle cannot carry them)."""

    name = "keras"

    def claims(self, obj: Any) -> bool:
        for module in ("keras", "tf_keras"):
            keras = sys.modules.get(module)
            model = getattr(getattr(keras, "models", None), "Model", None)
            if model is not None and isinstance(obj, model):
                return True
        return False

    def save(self, obj: Any, path: Path) -> None:
        obj.save(str(path))  # the file is named N.keras: the suffix keras requires

    def load(self, path: Path) -> Any:
        import keras

        # layers, losses and metrics defined in the notebook, as the loading step has them
        known = {**_LOAD.prelude, **(_LOAD.ns or {})}
        custom = {k: v for k, v in known.items() if isinstance(v, type | types.FunctionType)}
        return keras.models.load_model(str(path), custom_objects=custom)


_BUILTIN: list[Marshaller] = [_XGBoostDMatrix(), _XGBoostBooster(), _Torch(), _Keras()]
_REGISTRY: list[Marshaller] = list(_BUILTIN)
_LOCK = threading.Lock()


def register(marshaller: Marshaller) -> None:
    """Add a marshaller (tried before the built-in ones; a second one of the same name is ignored).

    Packages may instead declare it in the `nb_mlops.marshallers` entry-point group.

    Raises:
        ValueError: it lacks a `name` (a non-empty string) or one of claims/save/load.
    """
    name = getattr(marshaller, "name", None)
    if not (isinstance(name, str) and name and "/" not in name):
        raise ValueError(f"a marshaller needs a non-empty `name` without '/', got {name!r}")
    for method in ("claims", "save", "load"):
        if not callable(getattr(marshaller, method, None)):
            raise ValueError(f"marshaller {name!r} has no {method}() method (see Marshaller)")
    with _LOCK:
        _REGISTRY[:0] = [m for m in [marshaller] if m.name not in {x.name for x in _REGISTRY}]


def marshallers() -> list[str]:
    """The names of the marshallers registered so far (plugins appear once loaded)."""
    return [m.name for m in _REGISTRY]


def _load_plugin(prefix: str) -> Marshaller:
    """The marshaller the plugin `prefix` declares (imported, instantiated when a class, and
    registered); a `PluginError` naming the plugin when that fails."""
    loaded = plugins.load(ENTRY_POINT_GROUP, prefix)
    try:
        marshaller: Marshaller = loaded() if isinstance(loaded, type) else loaded
        register(marshaller)
    except Exception as exc:
        raise PluginError(
            f"plugin {prefix!r} of entry-point group {ENTRY_POINT_GROUP} is not a marshaller: {exc}"
        ) from exc
    return next(m for m in _REGISTRY if m.name == marshaller.name)


def _claim(obj: Any) -> Marshaller | None:
    """The marshaller of `obj`: a registered one that claims it, else a plugin declared for a
    module prefix of its type (loaded on first need), else None (pickle handles it)."""
    for marshaller in _REGISTRY:
        if marshaller.claims(obj):
            return marshaller
    module = type(obj).__module__ or ""
    if module.split(".")[0] in _PLAIN_MODULES:
        return None
    for prefix in plugins.entry_points(ENTRY_POINT_GROUP):
        if module == prefix or module.startswith(prefix + "."):
            marshaller = _load_plugin(prefix)
            if marshaller.claims(obj):
                return marshaller
    return None


def _named(name: str) -> Marshaller:
    """The marshaller that saved a value as `name` (plugins loaded until one has that name)."""
    for marshaller in _REGISTRY:
        if marshaller.name == name:
            return marshaller
    for prefix in plugins.entry_points(ENTRY_POINT_GROUP):
        marshaller = _load_plugin(prefix)
        if marshaller.name == name:
            return marshaller
    raise LookupError(f"no marshaller named {name!r} (is its package installed?)")


# --- loading context (module level: the reduce functions below are found by name) ----------


class _Loading(threading.local):
    ns: dict[str, Any] | None = None
    prelude: dict[str, Any] = {}
    folder: Path = Path(".")


_LOAD = _Loading()


def _step_function(code: types.CodeType, closure: tuple[Any, ...] | None, name: str) -> Any:
    """A notebook function, made to run against the loading step's namespace."""
    ns = _LOAD.ns if _LOAD.ns is not None else {"__builtins__": __builtins__}
    return types.FunctionType(code, ns, name, None, closure)


def _set_function_state(func: Any, state: tuple[dict[str, Any], dict[str, Any]]) -> None:
    # cloudpickle's setstate, except that the globals are the loading step's (left untouched)
    plain, slots = state
    func.__dict__.update(plain)
    closure = slots.pop("__closure__", None)
    slots.pop("__globals__", None)
    slots.pop("_cloudpickle_submodules", None)
    if closure is not None:
        for index, cell in enumerate(closure):
            try:
                value = cell.cell_contents
            except ValueError:
                continue
            func.__closure__[index].cell_contents = value
    for key, value in slots.items():
        setattr(func, key, value)


def _lru_cached(func: Any, maxsize: int | None, typed: bool) -> Any:
    """A notebook function under `functools.lru_cache`/`cache`, with an empty cache (its
    entries stay in the step that filled them: a cached call runs again once)."""
    return functools.lru_cache(maxsize=maxsize, typed=typed)(func)


def _prelude(name: str) -> Any:
    """A function or class of the `imports`/`functions` cells: the loading step's own."""
    try:
        return _LOAD.prelude[name]
    except KeyError:
        raise LookupError(
            f"`{name}` (defined in an imports/functions cell) is missing in this step"
        ) from None


def _marshalled(name: str, file: str) -> Any:
    return _named(name).load(_LOAD.folder / file)


def _view(
    root: Any, offset: int, shape: tuple[int, ...], strides: tuple[int, ...], dtype: Any
) -> Any:
    """A numpy view of `root`, restored as a view: changing one changes the other."""
    import numpy as np

    return np.ndarray(shape, dtype=dtype, buffer=root, offset=offset, strides=strides)


# --- saving -------------------------------------------------------------------------------


def _pandas_copy_on_write() -> bool:
    pd = sys.modules.get("pandas")
    if pd is None:
        return False
    if int(pd.__version__.split(".", 1)[0]) >= 3:
        return True  # always on from pandas 3
    return bool(getattr(pd.options.mode, "copy_on_write", False))


def _pandas_arrays(obj: Any) -> list[Any]:
    """The numpy arrays a DataFrame, Series or Index keeps its values in (none for others)."""
    manager = getattr(obj, "_mgr", None)
    found = list(getattr(manager, "arrays", ()) or ())
    index = getattr(obj, "_data", None)  # an Index's values
    if index is not None and hasattr(index, "dtype"):
        found.append(index)
    return found


def _np_root(arr: Any) -> Any:
    np = sys.modules["numpy"]
    root, base = arr, arr.base
    while isinstance(base, np.ndarray):
        root, base = base, base.base
    return root


class _Saver:
    def __init__(self, folder: Path, ns: dict[str, Any], prelude: dict[str, Any]) -> None:
        self.folder = folder
        self.ns = ns
        self.prelude_ids = {id(v): k for k, v in prelude.items()}
        self.prelude = prelude
        self.buffers: list[memoryview] = []
        self.files: list[str] = []
        self.view_roots: set[int] = set()  # arrays whose views are saved as views
        self.roots_seen: dict[int, int] = {}  # root id → times an array of it was pickled
        self.arrays_seen: set[int] = set()
        # arrays inside pandas objects: with copy-on-write no two pandas objects ever share
        # memory visibly (`col = df["a"]` keeps its values when df changes), so they are never
        # restored as views of one another
        self.pandas_arrays: set[int] = set()
        self.copy_on_write = _pandas_copy_on_write()

    def buffer(self, pb: pickle.PickleBuffer) -> bool:
        raw = pb.raw()
        if raw.nbytes < OUT_OF_BAND_BYTES:
            return True  # in band
        self.buffers.append(raw)
        return False

    def reduce(self, pickler: Any, obj: Any) -> Any:
        cls = type(obj)
        if cls is types.FunctionType:
            name = self.prelude_ids.get(id(obj))
            if name is not None and self.prelude.get(name) is obj:
                return (_prelude, (name,))
            if obj.__globals__ is self.ns:
                return self._function(pickler, obj)
            return NotImplemented
        if isinstance(obj, type):
            name = self.prelude_ids.get(id(obj))
            if name is not None and self.prelude.get(name) is obj:
                return (_prelude, (name,))
            return NotImplemented
        if cls is functools._lru_cache_wrapper:
            wrapped = getattr(obj, "__wrapped__", None)
            if isinstance(wrapped, types.FunctionType) and wrapped.__globals__ is self.ns:
                # pickled by name otherwise, a name the loading step may not have
                cache = obj.cache_parameters()
                return (_lru_cached, (wrapped, cache["maxsize"], cache["typed"]))
        np = sys.modules.get("numpy")
        if np is not None and cls is np.ndarray:
            return self._array(obj)
        if self.copy_on_write and cls.__module__.split(".", 1)[0] == "pandas":
            self.pandas_arrays.update(id(a) for a in _pandas_arrays(obj))
            return NotImplemented
        if cls.__module__ in ("builtins", "__main__"):
            return NotImplemented
        marshaller = _claim(obj)
        if marshaller is not None:
            file = f"{len(self.files)}.{marshaller.name}"
            marshaller.save(obj, self.folder / file)
            self.files.append(file)
            return (_marshalled, (marshaller.name, file))
        return NotImplemented

    def _function(self, pickler: Any, func: Any) -> Any:
        import cloudpickle

        state = cloudpickle.cloudpickle._function_getstate(func)
        plain, slots = state
        slots = {k: v for k, v in slots.items() if k != "__globals__"}
        closure = None
        if func.__closure__ is not None:
            closure = tuple(
                cloudpickle.cloudpickle._make_empty_cell() for _ in func.__code__.co_freevars
            )
        return (
            _step_function,
            (func.__code__, closure, func.__name__),
            (plain, slots),
            None,
            None,
            _set_function_state,
        )

    def _array(self, arr: Any) -> Any:
        if id(arr) in self.pandas_arrays:
            return NotImplemented
        root = _np_root(arr)
        self.arrays_seen.add(id(arr))
        if root is arr:
            self.roots_seen[id(arr)] = self.roots_seen.get(id(arr), 0) + 1
            return NotImplemented
        self.roots_seen[id(root)] = self.roots_seen.get(id(root), 0) + 1
        if id(root) not in self.view_roots or not root.flags.c_contiguous:
            return NotImplemented
        offset = arr.__array_interface__["data"][0] - root.__array_interface__["data"][0]
        return (_view, (root, offset, arr.shape, arr.strides, arr.dtype))

    def dumps(self, values: dict[str, Any]) -> bytes:
        import cloudpickle

        saver = self

        class _Pickler(cloudpickle.Pickler):
            def reducer_override(self, obj: Any) -> Any:
                found = saver.reduce(self, obj)
                if found is NotImplemented:
                    return super().reducer_override(obj)
                return found

        out = io.BytesIO()
        _Pickler(out, protocol=5, buffer_callback=self.buffer).dump(values)
        return out.getvalue()


def save_values(
    folder: Path, values: dict[str, Any], ns: dict[str, Any], prelude: dict[str, Any]
) -> list[str]:
    """Save `values` (name → value) together in `folder`; returns the files written.

    Args:
        folder: the step's values folder (created).
        values: what to save; objects shared between values stay shared.
        ns: the step's namespace (functions defined in it are rebuilt in the loading step's).
        prelude: name → function/class of the `imports`/`functions` cells of this step.

    Raises:
        pickle.PicklingError, TypeError: a value that cannot be saved.
    """
    folder.mkdir(parents=True, exist_ok=True)
    saver = _Saver(folder, ns, prelude)
    data = saver.dumps(values)
    # an array pickled both as itself and through a view (or two views of one array): save the
    # views as views of it, as in the notebook, where changing one changes the other
    shared = {root for root, count in saver.roots_seen.items() if count > 1}
    if shared:
        for file in saver.files:
            (folder / file).unlink(missing_ok=True)
        saver = _Saver(folder, ns, prelude)
        saver.view_roots = shared
        data = saver.dumps(values)
    files = [VALUES_FILE, *saver.files]
    layout = []
    if saver.buffers:
        layout = _write_buffers(folder / BUFFERS_FILE, saver.buffers)
        files.append(BUFFERS_FILE)
    else:
        (folder / BUFFERS_FILE).unlink(missing_ok=True)
    header = pickle.dumps(layout, protocol=5)
    tmp = folder / f".{VALUES_FILE}.tmp"
    with open(tmp, "wb") as fh:
        fh.write(len(header).to_bytes(8, "little"))
        fh.write(header)
        fh.write(data)
    os.replace(tmp, folder / VALUES_FILE)
    return files


def _write_buffers(path: Path, buffers: list[memoryview]) -> list[tuple[int, int]]:
    layout: list[tuple[int, int]] = []
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)  # a new file: truncating one full of cached pages waits on them
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        total = 0
        for buf in buffers:
            total += -total % _ALIGN + buf.nbytes
        if hasattr(os, "posix_fallocate"):
            with contextlib.suppress(OSError):
                os.posix_fallocate(fd, 0, total)  # extents at once: ≈ 25% faster writes on ext4
        position = 0
        for buf in buffers:
            pad = -position % _ALIGN
            if pad:
                os.write(fd, b"\0" * pad)
                position += pad
            layout.append((position, buf.nbytes))
            view = buf.cast("B") if buf.format != "B" or buf.ndim != 1 else buf
            done = 0
            while done < view.nbytes:
                done += os.write(fd, view[done : done + (1 << 30)])
            position += view.nbytes
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return layout


# --- loading --------------------------------------------------------------------------------


def load_values(
    path: str | os.PathLike[str], ns: dict[str, Any], prelude: dict[str, Any]
) -> dict[str, Any]:
    """Read what `save_values` wrote (`path` is its values.pkl), with notebook functions bound to
    the namespace `ns` and those of the `imports`/`functions` cells taken from `prelude`."""
    path = Path(path)
    with open(path, "rb") as fh:
        size = int.from_bytes(fh.read(8), "little")
        layout: list[tuple[int, int]] = pickle.loads(fh.read(size))
        data = fh.read()
    buffers: list[Any] = []
    if layout:
        with open(path.with_name(BUFFERS_FILE), "rb") as fh:
            # private and writable: the step may change what it loaded; the file never changes
            mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_COPY)
        view = memoryview(mapped)
        buffers = [view[offset : offset + size] for offset, size in layout]
    previous = (_LOAD.ns, _LOAD.prelude, _LOAD.folder)
    _LOAD.ns, _LOAD.prelude, _LOAD.folder = ns, prelude, path.parent
    try:
        values: dict[str, Any] = pickle.loads(data, buffers=buffers)
    finally:
        _LOAD.ns, _LOAD.prelude, _LOAD.folder = previous
    return values


def callables_of(ns: dict[str, Any]) -> dict[str, Any]:
    """The functions and classes a namespace defines (the `imports`/`functions` cells' ones when
    taken before any step value is loaded)."""
    return {
        k: v
        for k, v in ns.items()
        if not k.startswith("_") and isinstance(v, types.FunctionType | type)
    }
