"""sklearn autolog with the work after `fit` moved to the background writer.

MLflow's autolog computes the training metrics (precision, recall, f1, log loss, ROC AUC, score),
renders `estimator.html` and writes params and metrics through `MlflowClient` inside the patched
`fit`: a few hundred milliseconds per fit. Here its queueing client hands values for our own runs to
our writer, and the post-fit content runs on the writer thread against copies of the estimator and
the training data (small inputs only: bigger ones are computed in the cell, as MLflow does). The
run still ends only after all of it is written: the writer keeps order.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nb_mlops.core.writer import Writer

__all__ = ["COPY_LIMIT", "forget_copies", "install", "shared_copy"]

# training data up to this size is copied and scored in the background
COPY_LIMIT = 64 << 20
_log = logging.getLogger(__name__)


def install(owner: Callable[[str], Writer | None]) -> None:
    """Patch MLflow's sklearn flavor (before `mlflow.sklearn.autolog()` is called).

    Args:
        owner: the writer of a run this process tracks, or None for any other run (those are
            left to MLflow, unchanged).
    """
    import importlib

    # seen through Any: MLflow's autologging internals carry no types
    flavor: Any = importlib.import_module("mlflow.sklearn")
    utils: Any = importlib.import_module("mlflow.sklearn.utils")
    client_class = _deferring_client(owner)
    flavor.MlflowAutologgingQueueingClient = client_class
    # read by `mlflow.sklearn._autolog` through a local import: patch before autolog() runs
    utils._log_estimator_content = _deferred_content(
        utils._log_estimator_content, owner, client_class
    )


def _deferring_client(owner: Callable[[str], Writer | None]) -> Any:
    """MLflow's autologging client, with the values of our runs sent to our writer."""
    import importlib

    base: Any = importlib.import_module("mlflow.utils.autologging_utils.client")

    class DeferringClient(base.MlflowAutologgingQueueingClient):  # type: ignore[misc]
        """Params, tags and metrics of our runs go to our writer; anything else (child runs of
        a parameter search, dataset inputs, metrics tied to a logged model) to MLflow."""

        _pending_ops_by_run_id: dict[Any, Any]
        # (run_id, writer) known in advance: on the writer thread the run may have left the stack
        fixed: tuple[str, Writer] | None = None

        def _writer_for(self, run_id: Any) -> Writer | None:
            if not isinstance(run_id, str):
                return None
            if self.fixed is not None and self.fixed[0] == run_id:
                return self.fixed[1]
            return owner(run_id)

        def flush(self, synchronous: bool = True) -> Any:
            theirs = {}
            for run_id, ops in self._pending_ops_by_run_id.items():
                writer = self._writer_for(run_id)
                if (
                    writer is None
                    or ops.create_run
                    or ops.set_terminated
                    or ops.datasets_queue
                    or any(m.model_id for m in ops.metrics_queue)
                ):
                    theirs[run_id] = ops
                    continue
                writer.values(
                    [(run_id, m.key, m.value, m.timestamp, m.step) for m in ops.metrics_queue],
                    [(run_id, p.key, p.value) for p in ops.params_queue],
                    [(run_id, t.key, t.value) for t in ops.tags_queue],
                )
            self._pending_ops_by_run_id = theirs
            return super().flush(synchronous)

    return DeferringClient


def _deferred_content(
    original: Any, owner: Callable[[str], Writer | None], client_class: Any
) -> Callable[..., dict[str, Any]]:
    """`_log_estimator_content` that, for our runs, computes the post-fit training metrics on the
    writer thread, on copies of the estimator and the data, instead of in the user's cell."""

    def deferred_content(
        autologging_client: Any,
        estimator: Any,
        run_id: str,
        prefix: str,
        X: Any,
        y_true: Any = None,
        sample_weight: Any = None,
        pos_label: Any = None,
        model_id: str | None = None,
        dataset: Any = None,
    ) -> dict[str, Any]:
        rest = {"prefix": prefix, "pos_label": pos_label, "model_id": model_id, "dataset": dataset}
        writer = owner(run_id)
        copies = _copies((X, y_true, sample_weight)) if writer is not None else None
        if writer is None or copies is None or y_true is None:
            result: dict[str, Any] = original(
                autologging_client=autologging_client,
                estimator=estimator,
                run_id=run_id,
                X=X,
                y_true=y_true,
                sample_weight=sample_weight,
                **rest,
            )
            return result
        fitted = copy.deepcopy(estimator)
        _share(estimator, fitted)

        def later() -> None:
            client = client_class()
            client.fixed = (run_id, writer)
            try:
                original(
                    autologging_client=client,
                    estimator=fitted,
                    run_id=run_id,
                    X=copies[0],
                    y_true=copies[1],
                    sample_weight=copies[2],
                    **rest,
                )
            except Exception as exc:  # noqa: BLE001 - as MLflow's autolog: warn, keep the run
                _log.warning("training metrics of run %s not recorded: %s", run_id, exc)
            client.flush()

        writer.call(later, f"training metrics of run {run_id}")
        return {}  # only read for MLflow's "no training labels" warning, and y_true is set

    return deferred_content


# the copies made of estimators fitted in the current cell, by object id, with the fingerprint
# of their fitted state then: model capture reuses one instead of copying the model again
_shared: dict[int, tuple[Any, Any]] = {}


def _share(estimator: Any, fitted: Any) -> None:
    from nb_mlops.core.capture.models import _fingerprint

    _shared[id(estimator)] = (_fingerprint(estimator), fitted)


def shared_copy(estimator: Any) -> Any | None:
    """The copy autolog made of `estimator` right after its fit, if it is still as fitted then
    (same fitted-state fingerprint), else None. The writer thread only reads it."""
    from nb_mlops.core.capture.models import _fingerprint

    found = _shared.get(id(estimator))
    if found is None or found[0] != _fingerprint(estimator):
        return None
    return found[1]


def forget_copies() -> None:
    """Drop the copies of this cell (called when the cell's models have been taken)."""
    _shared.clear()


def _copies(values: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """Deep copies of the training inputs (the user may change them in place after the cell), or
    None when one is too big or of unknown size."""
    total = 0
    out: list[Any] = []
    for value in values:
        if value is None:
            out.append(None)
            continue
        size = _nbytes(value)
        if size is None:
            return None
        total += size
        if total > COPY_LIMIT:
            return None
        out.append(copy.deepcopy(value))
    return tuple(out)


def _nbytes(value: Any) -> int | None:
    nbytes = getattr(value, "nbytes", None)  # numpy arrays, pandas Series
    if isinstance(nbytes, int):
        return nbytes
    usage = getattr(value, "memory_usage", None)  # pandas DataFrame
    if callable(usage):
        try:
            return int(usage(index=True, deep=False).sum())
        except Exception:  # noqa: BLE001 - unknown size: not copied
            return None
    data_bytes = getattr(getattr(value, "data", None), "nbytes", None)  # scipy sparse
    if isinstance(data_bytes, int):
        return data_bytes * 3
    if isinstance(value, (list, tuple)) and len(value) < 100_000:
        return 64 * len(value)
    return None
