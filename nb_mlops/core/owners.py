"""Who owns a run: a `host:pid:start` token on every run (tag `nb_mlops.owner`), so that a later
session on the same machine can tell a run whose process died from one still being written, and
settle it the same way on every store (`orphan_outcome`).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from nb_mlops.core.procs import pid_alive

__all__ = [
    "END_STATUS_TAG",
    "INCOMPLETE_TAG",
    "KILLED_REASON_TAG",
    "OWNER_TAG",
    "PENDING_TAG",
    "orphan_outcome",
    "owner_alive",
    "owner_pid",
    "owner_token",
]

OWNER_TAG = "nb_mlops.owner"
PENDING_TAG = "nb_mlops.pending"  # what an ended run still waits for ("model, notebook capture")
END_STATUS_TAG = "nb_mlops.end_status"  # "FINISHED@<end ms>@<results pending, |-separated>"
INCOMPLETE_TAG = "nb_mlops.incomplete"  # provenance never saved (the run's results all were)
KILLED_REASON_TAG = "nb_mlops.killed_reason"
KILLED_REASON = "owning kernel died; marked by a later session"

_tokens: dict[int, str] = {}


def owner_token(pid: int | None = None) -> str:
    """`host:pid:start` naming this process, so a later session can tell a dead owner's runs
    (computed per pid: a forked child is its own owner)."""
    pid = pid or os.getpid()
    token = _tokens.get(pid)
    if token is None:
        token = _tokens[pid] = f"{socket.gethostname()}:{pid}:{_process_start(pid)}"
    return token


def _process_start(pid: int) -> str:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return fields[19]
    except (OSError, IndexError):
        return "?"


def owner_pid(token: str) -> int | None:
    """The pid in an owner token of this machine; None for another machine's or a malformed one."""
    host, _, rest = token.partition(":")
    pid_text = rest.partition(":")[0]
    return int(pid_text) if host == socket.gethostname() and pid_text.isdigit() else None


def owner_alive(token: str) -> bool:
    """Whether the process an owner token names still runs (another machine's: assumed so, since
    we cannot tell; a reused pid is told apart by its start time)."""
    pid = owner_pid(token)
    if pid is None:
        return True
    if not pid_alive(pid):
        return False
    start = token.partition(":")[2].partition(":")[2]
    return start == "?" or _process_start(pid) == start


def orphan_outcome(
    current: str, pending: str | None, ended: str | None, now_ms: int
) -> tuple[str, int, dict[str, str]]:
    """How a run whose owner died is settled: (status, end time in ms, tags to set).

    A run its owner never ended (the process died inside the block) becomes KILLED. A run its
    owner ended while part of its results was still being saved (`pending` with `ended`, the
    end-status tag) becomes FAILED (or KILLED, as it ended), and `nb_mlops.error` names what was
    never saved. A run ended with only provenance pending keeps its status and gets
    `nb_mlops.incomplete`. The caller then drops the pending and end-status tags.
    """
    status, _, rest = (ended or "").partition("@")
    end_text, _, results = rest.partition("@")
    end_ms = int(end_text) if end_text.isdigit() else now_ms
    if current != "RUNNING":  # ended; only its provenance was pending
        return current, end_ms, {INCOMPLETE_TAG: f"{pending}: never saved"}
    if pending and status in ("FINISHED", "FAILED", "KILLED"):
        lost = results.replace("|", ", ") or pending
        why = (
            f"incomplete: the process ended before it saved the run's {lost} "
            f"(the tracked block itself ended {status})"
        )
        return ("FAILED" if status == "FINISHED" else status), end_ms, {"nb_mlops.error": why}
    return "KILLED", now_ms, {KILLED_REASON_TAG: KILLED_REASON}
