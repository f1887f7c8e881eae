"""The exception hierarchy of nb_mlops: one root, one branch per layer of the product.

Every message says what was wrong, names the offending value, and says what to do next.

    NbMlopsError
     ├── ConfigError             bad or unreadable configuration
 │    └── PluginError        an installed plugin (entry point) cannot be loaded
     ├── StoreError              the tracking / data store cannot be used
     │    ├── StoreUnavailable   the tracking server is down or unreachable
     │    └── StillPending       flush(timeout) ran out with writes still pending
     ├── TrackingError           misuse of runs and logging
     │    └── NoActiveRun        nb_mlops.log() outside a tracked cell or pipeline step
     ├── DataError               data snapshots
     │    ├── SnapshotNotFound   unknown name or version
     │    └── IntegrityError     stored bytes do not match their content hash
     ├── PipelineError           notebook → pipeline conversion and runs
     │    ├── BuildError         the notebook cannot be converted (names the cell)
     │    ├── ParameterError     a parameter is unknown, mistyped or not JSON-like
     │    └── StepFailed         a step failed (names the step and the cell)
     ├── PromotionError          promotion, registry and journal
     │    ├── GatesBlocked       one or more gates failed
     │    ├── PermissionDenied   the user is not among the configured promoters or approvers
     │    ├── ApprovalError      an approval request is stale, already decided or one's own
     │    │    └── RequestNotFound no pending approval request of that id
     │    └── RollbackError      there is nothing (valid) to roll back to
     │         └── ModelNotFound no registered model of that name
     └── MonitorError            batch scoring, drift and decay checks, policies, alerts
"""

from __future__ import annotations

__all__ = [
    "BuildError",
    "ApprovalError",
    "ConfigError",
    "DataError",
    "GatesBlocked",
    "IntegrityError",
    "ModelNotFound",
    "MonitorError",
    "NbMlopsError",
    "NoActiveRun",
    "ParameterError",
    "PermissionDenied",
    "PipelineError",
    "PluginError",
    "PromotionError",
    "RequestNotFound",
    "RollbackError",
    "SnapshotNotFound",
    "StepFailed",
    "StillPending",
    "StoreError",
    "StoreUnavailable",
    "TrackingError",
]


class NbMlopsError(Exception):
    """Root of every error nb_mlops raises on purpose."""


class ConfigError(NbMlopsError):
    """The configuration file or an environment override is invalid."""


class PluginError(ConfigError):
    """A plugin named by an `nb_mlops.*` entry point failed to import or is not what it should be."""


class StoreError(NbMlopsError):
    """The tracking or data store cannot be opened or written."""


class StoreUnavailable(StoreError):
    """A remote tracking server did not answer within the timeout."""


class StillPending(StoreError):
    """`flush(timeout)` returned before every pending write was stored (they keep going)."""


class TrackingError(NbMlopsError):
    """Runs or logging were used in a way that cannot be recorded."""


class NoActiveRun(TrackingError):
    """Logging was attempted with no tracked cell or pipeline step active."""


class DataError(NbMlopsError):
    """A data snapshot could not be taken, read or restored."""


class SnapshotNotFound(DataError):
    """The snapshot name or version does not exist."""


class IntegrityError(DataError):
    """Stored bytes no longer match the content hash they are named by."""


class PipelineError(NbMlopsError):
    """A pipeline could not be built or run."""


class BuildError(PipelineError):
    """The notebook cannot be converted into a pipeline."""


class ParameterError(PipelineError):
    """A parameter value or name does not fit the declared schema."""


class StepFailed(PipelineError):
    """A pipeline step did not run to its last cell."""


class PromotionError(NbMlopsError):
    """A promotion or rollback could not be carried out."""


class GatesBlocked(PromotionError):
    """At least one promotion gate failed."""


class PermissionDenied(PromotionError):
    """The acting user is not in `[promotion] promoters` (or `approvers`) of the configuration."""


class ApprovalError(PromotionError):
    """An approval request cannot be decided: stale, already decided, or the requester's own."""


class RequestNotFound(ApprovalError, LookupError):
    """No approval request of that id."""


class RollbackError(PromotionError):
    """There is no earlier version to roll back to, or the target is invalid."""


class ModelNotFound(RollbackError, LookupError):
    """No registered model of that name (nothing to roll back)."""


class MonitorError(NbMlopsError):
    """A scoring run, a drift or decay check, a policy action or an alert could not be done."""
