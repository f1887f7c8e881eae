"""A real Jupyter server or JupyterLab on 127.0.0.1, for the browser test and the server benchmark:
start it on a free port, wait until it answers, stop it by its pid. Also Chromium's location and
flags (Debian's package, headless)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def quiet_settings(settings_dir: Path) -> Path:
    """A JUPYTERLAB_SETTINGS_DIR without the "official Jupyter news?" toast over the page."""
    notification = settings_dir / "@jupyterlab" / "apputils-extension"
    notification.mkdir(parents=True, exist_ok=True)
    (notification / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
    return settings_dir


def start(
    root: Path,
    *,
    token: str,
    env: dict[str, str],
    log: Path | None = None,
    lab: bool = True,
    timeout: float = 60,
) -> tuple[subprocess.Popen[bytes], int]:
    """Start `jupyter lab` (or a bare `jupyter server`) serving `root`; return it once it answers.

    Raises:
        RuntimeError: it exited, or did not answer within `timeout` seconds (it is stopped).
    """
    port = free_port()
    args = [
        sys.executable,
        "-m",
        "jupyterlab" if lab else "jupyter_server",
        "--no-browser",
        "--ip",
        "127.0.0.1",
        "--port",
        str(port),
        f"--ServerApp.token={token}",
        "--allow-root",
        f"--ServerApp.root_dir={root}",
    ]
    if lab:
        args += [
            "--LabApp.news_url=",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ]
    sink = log.open("wb") if log is not None else subprocess.DEVNULL
    try:
        proc = subprocess.Popen(
            args, cwd=root, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
    finally:
        if log is not None:
            sink.close()  # type: ignore[union-attr]  # the server holds its own descriptor
    status = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/status", headers={"Authorization": f"token {token}"}
    )
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"jupyter exited with status {proc.returncode} (log: {log})")
        try:
            with urllib.request.urlopen(status, timeout=2) as response:
                if response.status == 200:
                    return proc, port
        except OSError:
            if time.monotonic() > deadline:
                stop(proc)
                raise RuntimeError(
                    f"jupyter did not answer within {timeout:g} s (log: {log})"
                ) from None
            time.sleep(0.1)


def stop(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """Stop a server we started, by its pid (SIGKILL to its own process group if it hangs)."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
