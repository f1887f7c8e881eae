"""A warm process that forks one `nb-mlops` command per request, for tests that kill many runners.

A cold `python -m nb_mlops.cli` pays ≈ 1 s of imports; a child forked from here pays none, so a
crash test can afford dozens of runners. Each child is a real, separate process (its own pid,
session and process group, like a command started from a shell) running `nb_mlops.cli.main`.

Protocol: one JSON line per request on stdin, one JSON line per answer on stdout.
    {"run": [ARGS...], "cwd": DIR, "out": FILE}  ->  {"pid": PID}
    {"wait": PID, "timeout": SECONDS}              ->  {"code": EXIT_STATUS or null}
An exit status is the command's own, or -N when signal N ended it.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time

# what a runner imports before its first step (the slow part of a cold start)
import nb_mlops.cli
import nb_mlops.cli.pipeline
import nb_mlops.pipeline.executors
import nb_mlops.pipeline.runner
from nb_mlops.pipeline.execute import prepare

prepare()


def _child(args: list[str], cwd: str, out: str) -> None:
    os.setsid()  # like a command started from a shell: its own process group
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.chdir(cwd)
    null = os.open(os.devnull, os.O_RDONLY)
    sink = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(null, 0)
    os.dup2(sink, 1)
    os.dup2(sink, 2)
    sys.stdin = open(os.devnull)  # noqa: SIM115 - lives as long as the process
    code = 1
    try:
        code = nb_mlops.cli.main(args)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _status(raw: int) -> int:
    return -os.WTERMSIG(raw) if os.WIFSIGNALED(raw) else os.WEXITSTATUS(raw)


def serve() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a test's group signal is for its runners
    for line in sys.stdin:
        request = json.loads(line)
        if "run" in request:
            assert threading.active_count() == 1, "a thread would not survive fork()"
            pid = os.fork()
            if pid == 0:
                _child(request["run"], request["cwd"], request["out"])
            answer: dict[str, int | None] = {"pid": pid}
        else:
            pid, code = int(request["wait"]), None
            deadline = time.monotonic() + float(request.get("timeout", 0))
            while code is None:
                done, raw = os.waitpid(pid, os.WNOHANG)
                if done:
                    code = _status(raw)
                elif time.monotonic() >= deadline:
                    break
                else:
                    time.sleep(0.005)
            answer = {"code": code}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    serve()
