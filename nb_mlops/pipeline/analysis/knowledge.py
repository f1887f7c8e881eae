"""What the analysis knows about code it cannot read: which builtins and library functions leave
their arguments alone, which draw on the global random generators, which change process-wide
state (a setting every later cell sees), and which values pickle cannot carry.

Everything not listed here is treated as possibly changing what it is given: being wrong in that
direction costs a value passed between steps, being wrong in the other costs a wrong result.
"""

from __future__ import annotations

import builtins
import re

__all__ = [
    "BUILTINS",
    "ENV_MAGICS",
    "GENERATORS",
    "SHELL_CALLS",
    "SHELL_CELL_MAGICS",
    "builtin_mutates",
    "draws_random",
    "fresh_result",
    "immutable_result",
    "is_state_setter",
    "keeps_args",
    "model_method_keeps_args",
    "model_result_is_new",
    "returns_receiver",
    "seeds",
    "seeds_uncarried",
    "unpicklable_kind",
]

BUILTINS = frozenset(dir(builtins))

# builtins that change an argument: the positions they change
_MUTATING_BUILTINS: dict[str, tuple[int | str, ...]] = {
    "next": (0,),
    "setattr": (0,),
    "delattr": (0,),
    # builtins that call a function they are given: a bound method (`out.append`) changes its
    # object when called
    "map": (0,),
    "filter": (0,),
    "iter": (0,),
    "sorted": ("key",),
    "min": ("key",),
    "max": ("key",),
}
# what runs a shell command, which may read and write any file
SHELL_CELL_MAGICS = frozenset({"bash", "sh", "script", "system", "!", "perl", "ruby"})
SHELL_CALLS = frozenset(
    {
        "os.system",
        "os.popen",
        "subprocess.run",
        "subprocess.call",
        "subprocess.check_call",
        "subprocess.check_output",
        "subprocess.Popen",
        "shutil.unpack_archive",
    }
)
# builtins that read a namespace the analysis cannot see into
DYNAMIC_BUILTINS = frozenset({"exec", "eval", "globals", "locals", "vars", "__import__"})

# Modules whose functions never change the objects passed to them (they may store them: that is
# aliasing, tracked separately). Matched on the qualified name's prefix.
_PURE_MODULES = (
    "math.",
    "cmath.",
    "statistics.",
    "string.",
    "re.",
    "json.",
    "os.",
    "posixpath.",
    "ntpath.",
    "shutil.",
    "glob.",
    "pathlib.",
    "datetime.",
    "time.",
    "textwrap.",
    "hashlib.",
    "base64.",
    "copy.",
    "operator.",
    "decimal.",
    "fractions.",
    "pprint.",
    "pickle.",
    "joblib.",
    "csv.",
    "warnings.",
    "logging.",
    "collections.",
    "functools.",
    "itertools.",
    "numpy.",
    "pandas.",
    "matplotlib.",
    "seaborn.",
    "scipy.stats.",
    "sklearn.metrics.",
    "sklearn.model_selection.",
    "sklearn.datasets.",
    "nb_mlops.",
    "tqdm.",
    "IPython.display.",
)
# ... except these, which change an argument in place (numpy's `out=` is checked by the caller)
_IMPURE = re.compile(
    r"^(numpy\.(random\.shuffle|random\.Generator\.shuffle|copyto|put|put_along_axis|place|"
    r"putmask|fill_diagonal|random\.permutation_in_place)|json\.dump|pickle\.dump|joblib\.dump|"
    r"shutil\.copyfileobj|csv\.writer|csv\.DictWriter)\Z"
)

# The global random generators whose state a pipeline carries from step to step.
GENERATORS = ("random", "numpy.random", "torch")
_SEEDS = {
    "random.seed": "random",
    "random.setstate": "random",
    "numpy.random.seed": "numpy.random",
    "numpy.random.set_state": "numpy.random",
    "torch.manual_seed": "torch",
    "torch.random.manual_seed": "torch",
    "torch.set_rng_state": "torch",
    "torch.random.set_rng_state": "torch",
}
# modules whose functions never draw from a global generator
_NOT_RANDOM = (
    "math.",
    "cmath.",
    "statistics.",
    "string.",
    "re.",
    "json.",
    "os.",
    "posixpath.",
    "shutil.",
    "glob.",
    "pathlib.",
    "datetime.",
    "time.",
    "textwrap.",
    "hashlib.",
    "base64.",
    "copy.",
    "operator.",
    "decimal.",
    "fractions.",
    "pprint.",
    "pickle.",
    "csv.",
    "warnings.",
    "logging.",
    "collections.",
    "functools.",
    "itertools.",
    "matplotlib.",
    "pandas.",
    "joblib.",
    "nb_mlops.",
    "IPython.display.",
)

# Calls that change process-wide settings: later cells (in any step) see them, so later steps
# repeat them. Qualified names; the last component is matched against the setter patterns.
_SETTER = re.compile(
    r"^(set_\w*|use|style\.use|chdir|putenv|unsetenv|filterwarnings|simplefilter|resetwarnings|"
    r"setrecursionlimit|seterr|set_printoptions|basicConfig|rc|rcdefaults|set_option|reset_option|"
    r"enable_\w+|disable_\w+|setLevel|set_config|set_default_dtype|set_grad_enabled|"
    r"set_num_threads|use_deterministic_algorithms)\Z"
)
# process-wide containers reached through a module: a method call on them changes the setting
_STATE_CONTAINERS = re.compile(
    r"^(sys\.path|sys\.modules|os\.environ|matplotlib\.rcParams|matplotlib\.pyplot\.rcParams|"
    r"pandas\.options(\.\w+)*|warnings\.filters)\Z"
)
_CONTAINER_MUTATORS = frozenset(
    {"append", "insert", "extend", "update", "setdefault", "pop", "remove", "clear", "__setitem__"}
)

# line magics that only change the kernel's settings: repeated in later steps like imports
ENV_MAGICS = frozenset(
    {
        "matplotlib",
        "config",
        "env",
        "cd",
        "load_ext",
        "reload_ext",
        "autoreload",
        "aimport",
        "precision",
        "xmode",
        "pylab",
        "colors",
        "pdb",
    }
)

# calls whose result pickle refuses: the reason names the kind of value for the error message
_UNPICKLABLE_CALLS = {
    "open": "an open file",
    "io.open": "an open file",
    "builtins.open": "an open file",
    "tempfile.TemporaryFile": "an open file",
    "tempfile.NamedTemporaryFile": "an open file",
    "threading.Lock": "a lock",
    "threading.RLock": "a lock",
    "threading.Condition": "a lock",
    "threading.Semaphore": "a lock",
    "multiprocessing.Lock": "a lock",
    "socket.socket": "a socket",
    "sqlite3.connect": "a database connection",
}


# library functions whose result is a new value sharing nothing with their arguments
_FRESH_RESULT = (
    "math.",
    "cmath.",
    "statistics.",
    "string.",
    "re.",
    "json.dumps",
    "json.loads",
    "os.path.",
    "posixpath.",
    "hashlib.",
    "base64.",
    "time.",
    "datetime.",
    "textwrap.",
    "decimal.",
    "fractions.",
    "copy.deepcopy",
    "sklearn.metrics.",
    "sklearn.model_selection.train_test_split",
    "sklearn.model_selection.cross_val_score",
    "sklearn.model_selection.cross_validate",
)
_NUMPY_FRESH = re.compile(
    r"^numpy\.(mean|sum|std|var|min|max|median|percentile|quantile|argmax|argmin|argsort|"
    r"sort|round|sqrt|exp|log|log1p|abs|absolute|corrcoef|cov|dot|matmul|array|zeros|ones|"
    r"full|arange|linspace|concatenate|stack|vstack|hstack|unique|histogram|cumsum|prod|"
    r"count_nonzero|allclose|isclose|array_equal|all|any|nanmean|nansum|nanstd)\Z"
)
# ... and those whose result is an immutable value (a number, a string)
_IMMUTABLE_RESULT = (
    "math.",
    "statistics.",
    "json.dumps",
    "os.path.join",
    "os.path.basename",
    "os.path.dirname",
    "os.path.abspath",
    "os.path.exists",
    "os.path.isfile",
    "os.path.isdir",
    "os.getcwd",
    "os.getenv",
    "hashlib.",
    "base64.",
    "time.time",
    "time.perf_counter",
)


def fresh_result(qualname: str) -> bool:
    """Whether a library call returns a new object that shares nothing with its arguments."""
    return qualname.startswith(_FRESH_RESULT) or bool(_NUMPY_FRESH.match(qualname))


def immutable_result(qualname: str) -> bool:
    """Whether a library call returns an immutable value (a number, a string)."""
    return qualname.startswith(_IMMUTABLE_RESULT)


def keeps_args(qualname: str, keywords: set[str]) -> bool:
    """Whether the library function `qualname` leaves the objects passed to it unchanged."""
    if "out" in keywords or _IMPURE.match(qualname):
        return False
    return qualname.startswith(_PURE_MODULES)


# The methods of scikit-learn's estimator API (and xgboost's, lightgbm's, ... which follow it):
# they change the model, never the data given to them. Assumed, not known (a hand-written
# transformer may change its input), so the step checks at run time that what it received is
# unchanged at its end, and fails naming the value if not. First those that return a new object
# (predictions, scores), never one they were given or hold:
_NEW_RESULT_METHODS = frozenset(
    {
        "predict",
        "predict_proba",
        "predict_log_proba",
        "decision_function",
        "score",
        "score_samples",
        "staged_predict",
        "staged_predict_proba",
    }
)
_MODEL_METHODS = _NEW_RESULT_METHODS | {
    "fit",
    "partial_fit",
    "fit_transform",
    "fit_predict",
    "transform",
    "inverse_transform",
    "kneighbors",
}


def model_method_keeps_args(method: str) -> bool:
    """Whether a method of an object of the notebook is a model's (`fit`, `predict`, ...),
    assumed to leave its arguments unchanged (checked when the step runs)."""
    return method in _MODEL_METHODS


def returns_receiver(method: str) -> bool:
    """Whether a model's method returns the model itself (scikit-learn's `fit` convention): its
    result is the model, not something sharing the data it was given. (A fitted model may keep
    a reference to its training data, e.g. kNN: changing that data in place after the fit, in
    another step, is not followed.)"""
    return method in ("fit", "partial_fit")


def model_result_is_new(method: str) -> bool:
    """Whether a model's method returns a new object (predictions, scores), never one it was
    given or holds (`transform` may return its input unchanged: not listed)."""
    return method in _NEW_RESULT_METHODS


def builtin_mutates(name: str) -> tuple[int | str, ...]:
    """The argument positions (or keywords) a builtin changes or calls (most do neither)."""
    return _MUTATING_BUILTINS.get(name, ())


def seeds(qualname: str) -> str | None:
    """The global generator a call seeds (or sets the state of), if any."""
    return _SEEDS.get(qualname)


def seeds_uncarried(qualname: str) -> bool:
    """Whether a call seeds a global generator the pipeline cannot carry (tensorflow's, ...)."""
    return qualname not in _SEEDS and bool(
        re.search(r"(^|\.)(set_seed|seed|manual_seed)\Z", qualname)
    )


def draws_random(qualname: str | None) -> tuple[str, ...]:
    """The global generators a library call may draw from (`None`: a call the analysis cannot
    name, e.g. a method: any of them)."""
    if qualname is None:
        return GENERATORS
    if qualname.startswith("random."):
        return ("random",)
    if qualname.startswith("numpy.random."):
        return ("numpy.random",)
    if qualname.startswith("numpy.") or qualname.startswith(_NOT_RANDOM):
        return ()
    if qualname.startswith("torch."):
        return ("torch",)
    return GENERATORS


def is_state_setter(qualname: str) -> bool:
    """Whether a call of the library function `qualname` changes a process-wide setting."""
    module, _, func = qualname.rpartition(".")
    if module and _STATE_CONTAINERS.match(module) and func in _CONTAINER_MUTATORS:
        return True
    if qualname in _SEEDS:
        return False  # a seed is carried as a value, not repeated
    tail = qualname.split(".", 1)[1] if "." in qualname else ""
    return bool(_SETTER.match(func) or _SETTER.match(tail))


def is_state_container(qualname: str) -> bool:
    """Whether `module.attr` names a process-wide setting container (`os.environ`, ...)."""
    return bool(_STATE_CONTAINERS.match(qualname))


def unpicklable_kind(qualname: str) -> str | None:
    """What kind of value pickle refuses a call of `qualname` returns (an open file, ...)."""
    return _UNPICKLABLE_CALLS.get(qualname)
