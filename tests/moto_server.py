"""moto's S3 server on 127.0.0.1, the stand-in for S3's HTTP API in the tests and benchmarks.

moto's app runs under a single-threaded werkzeug server: moto checks `If-None-Match` and then
writes without a lock, so a threaded server could let two racing create-only writes both succeed,
which real S3 never does. Started on a free port, stopped by its pid.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from jupyter_proc import free_port

AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
_SERVER = textwrap.dedent(
    """
    import sys
    from werkzeug.serving import run_simple
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    app = DomainDispatcherApplication(create_backend_app)
    run_simple("127.0.0.1", int(sys.argv[1]), app, threaded=False)
    """
)


def start(log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """The server and its endpoint URL, once it listens.

    Raises:
        RuntimeError: it exited or did not listen within 30 s (the message names its log).
    """
    import socket

    port = free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", _SERVER, str(port)],
            env={**os.environ, **AWS},
            stdout=out,
            stderr=out,
        )
    for _ in range(300):
        if proc.poll() is not None:
            raise RuntimeError(f"moto server exited with {proc.returncode} (log: {log})")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return proc, f"http://127.0.0.1:{port}"
        time.sleep(0.1)
    stop(proc)
    raise RuntimeError(f"moto server did not start listening (log: {log})")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=30)
