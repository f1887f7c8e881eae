"""What kernels log on their own output streams during start-up and shutdown races, which lands
in an executed notebook's stream outputs: noise of the run (a papermill run and a pipeline step
alike), not output of the notebook. Tests comparing printed output strip it from both sides."""

from __future__ import annotations

import re

__all__ = ["strip_kernel_noise"]

_NOISE = [
    # jupyter_client interrupts a kernel it shuts down; the signal may land before it is gone
    re.compile(r"\[IPKernelApp\] ERROR \| KeyboardInterrupt caught in kernel\.\n"),
    # ipykernel's shell or control thread reading a message cut short by a client going away
    re.compile(
        r"^ERROR:tornado\.general:Uncaught exception in ZMQStream callback\n"
        r".*?^ValueError: DELIM not in msg_list\n",
        re.M | re.S,
    ),
    # libzmq's own check failing in a nested run's process on a busy machine (it aborts that
    # process's socket, not the notebook's run)
    re.compile(r"Assertion failed: [^\n]*\(src/\w+\.cpp:\d+\)\n"),
    # pyzmq tearing down a kernel client on a busy machine ("Socket operation on non-socket")
    re.compile(
        r"^(Traceback \(most recent call last\):|Exception ignored in\b).*?^zmq\.error\.\w+:[^\n]*\n",
        re.M | re.S,
    ),
]


def strip_kernel_noise(text: str) -> str:
    for pattern in _NOISE:
        text = pattern.sub("", text)
    return text
