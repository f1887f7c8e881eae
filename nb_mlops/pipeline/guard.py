"""A launched step kernel's watch on its runner: when the runner is gone (kill -9), the kernel
kills its own process group — itself and whatever its cells started — so nothing outlives the
run. Forked kernels need none: their zygote does it (`zygote.py`).

Imported inside the kernel, so it stays tiny: standard library only.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import threading
import time

__all__ = ["watch"]

EVERY = 0.2  # seconds between looks without a pidfd; ipykernel's own poll looks once a second


def watch(parent: int) -> None:
    """Kill this process's group once its parent is no longer `parent` (a daemon thread).

    It must act before ipykernel's own parent poll ends the kernel alone (`os._exit`, leaving
    the cells' processes behind): a pidfd wakes it the moment the parent dies.
    """

    def run() -> None:
        fd = None
        with contextlib.suppress(AttributeError, OSError):
            fd = os.pidfd_open(parent)
        while os.getppid() == parent:
            if fd is not None:
                poller = select.poll()
                poller.register(fd, select.POLLIN)
                poller.poll()  # readable once the parent has exited
            else:
                time.sleep(EVERY)
        os.killpg(os.getpgid(0), signal.SIGKILL)

    if os.getppid() == parent:
        threading.Thread(target=run, name="nb-mlops-guard", daemon=True).start()
    else:
        os.killpg(os.getpgid(0), signal.SIGKILL)
