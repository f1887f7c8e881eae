"""How `nb-mlops pipeline` commands meet signals and dead runners: SIGTERM and SIGHUP stop a run
as Ctrl-C does (kernels killed, MLflow runs KILLED, state saved, a resume hint printed, exit
status 128 + the signal), and every pipeline command first settles the runs of runners that died.
"""

from __future__ import annotations

import contextlib
import functools
import signal
import threading
from collections.abc import Iterator
from typing import Any

import click

__all__ = ["interruptible", "settle_dead_runs"]


def settle_dead_runs() -> None:
    """Every pipeline command first marks KILLED the runs of runners that died (costs a folder
    listing when none did); a failure here must not stop the command itself."""
    from nb_mlops.core.config import load_config
    from nb_mlops.pipeline.settle import LIVE_DIR

    with contextlib.suppress(Exception):
        cfg = load_config()
        if any((cfg.runs_dir / LIVE_DIR).glob("*.json")):
            from nb_mlops.pipeline.record import Recorder
            from nb_mlops.pipeline.settle import settle_dead_runs as settle

            settle(cfg, Recorder(cfg))


def interruptible(command: Any) -> Any:
    """Wrap a command's callback: SIGTERM and SIGHUP stop a run as Ctrl-C does (kernels killed,
    MLflow runs KILLED, state saved); the user is told how to resume; the exit status is
    128 + the signal number (130 for Ctrl-C)."""
    callback = command.callback

    @functools.wraps(callback)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with _stopped_by_signals():
            return callback(*args, **kwargs)

    command.callback = wrapper
    return command


class _Terminated(KeyboardInterrupt):
    """A stop signal other than SIGINT, raised where Ctrl-C would be (its text names it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def _stopped_by_signals() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers (the CLI always runs there)
        return

    def stop(signum: int, _frame: Any) -> None:
        raise _Terminated(signum)

    saved = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    except KeyboardInterrupt as exc:
        stopped = getattr(exc, "run", None)
        cause = exc.__cause__ if isinstance(exc.__cause__, KeyboardInterrupt) else exc
        signum = getattr(cause, "signum", signal.SIGINT)
        if stopped is not None and stopped.run_id:
            click.echo(
                f"interrupted: pipeline run {stopped.run_id} stopped, its MLflow runs marked "
                f"KILLED; resume it with: nb-mlops pipeline run {stopped.pipeline} "
                f"--resume {stopped.run_id}",
                err=True,
            )
        if signum != signal.SIGINT:
            raise click.exceptions.Exit(128 + signum) from None
        raise
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
