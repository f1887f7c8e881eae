"""Pipeline runs whose runner died (kill -9, a crash, power loss): a running pipeline run leaves a
small "live" marker naming its owner (`host:pid:start`); the next pipeline command that finds the
owner gone marks the run's MLflow runs KILLED and its `state.json` CANCELLED, so that it shows
what happened and `--resume` can take it up.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nb_mlops.core.config import Config
from nb_mlops.core.files import write_atomic
from nb_mlops.core.owners import owner_alive as _owner_alive

if TYPE_CHECKING:
    from nb_mlops.pipeline.record import Recorder

__all__ = ["LIVE_DIR", "forget", "mark_live", "owner_alive", "settle_dead_runs", "write_json"]

LIVE_DIR = ".live"  # under the runs folder: one `<run_id>.json` per run in progress
DEAD_REASON = "the pipeline runner died; marked by a later command"


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomic: a reader (or a runner killed mid-write) never sees half a file."""
    write_atomic(path, json.dumps(data, indent=1, default=str).encode())


def owner_alive(token: str) -> bool:
    """Whether the process named by an owner token still runs (another host's: assumed so)."""
    return not token or _owner_alive(token)


def _marker(cfg: Config, run_id: str) -> Path:
    return cfg.runs_dir / LIVE_DIR / f"{run_id}.json"


def mark_live(cfg: Config, run_id: str, owner: str, state_file: Path) -> None:
    """Note that run `run_id` is in progress, owned by `owner`."""
    write_json(_marker(cfg, run_id), {"owner": owner, "state": str(state_file)})


def forget(cfg: Config, run_id: str) -> None:
    """The run has ended (its final state is written): no later command needs to settle it."""
    with contextlib.suppress(OSError):
        _marker(cfg, run_id).unlink(missing_ok=True)


def _cancel_state(state: dict[str, Any], reason: str) -> dict[str, Any]:
    state["status"] = "CANCELLED"
    for step in state.get("steps", {}).values():
        if step.get("status") == "RUNNING":
            step.update(status="CANCELLED", error=f"interrupted: {reason}")
        elif step.get("status") == "QUEUED":
            step.update(status="CANCELLED", error="not run: the run was interrupted")
    state["error"] = reason
    return state


def settle_dead_runs(cfg: Config, recorder: Recorder) -> list[str]:
    """Mark KILLED the MLflow runs (parent, steps, runs tracked in the steps) of every pipeline
    run whose owner is gone, and CANCELLED in its `state.json`. Costs a folder listing when
    none is in progress.

    Returns:
        The pipeline run ids settled.
    """
    folder = cfg.runs_dir / LIVE_DIR
    try:
        markers = sorted(folder.glob("*.json"))
    except OSError:
        return []
    settled = []
    for path in markers:
        try:
            info = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # unreadable: left for a later look (writes are atomic)
        if owner_alive(str(info.get("owner", ""))):
            continue
        run_id = path.stem
        recorder.kill_tree(run_id, DEAD_REASON)
        state_file = Path(str(info.get("state", "")))
        with contextlib.suppress(OSError, ValueError):
            state = json.loads(state_file.read_text())
            if state.get("status") == "RUNNING":
                write_json(state_file, _cancel_state(state, DEAD_REASON))
        forget(cfg, run_id)
        settled.append(run_id)
    if recorder.sqlite is not None:
        # runs created before their marker was written (a kill in between) carry the owner tag
        recorder.sqlite.kill_orphans()
    return settled
