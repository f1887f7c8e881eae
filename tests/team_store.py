"""A team store for tests: a throw-away PostgreSQL cluster and an `mlflow server` on it, both on
127.0.0.1 with free ports, stopped by their pid / data folder at the end.

PostgreSQL refuses to run as root: when the tests run as root, the cluster belongs to the `postgres`
user (its folder lives outside pytest's root-only temp folders) and its commands run through `runuser`.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from jupyter_proc import free_port

DATABASE = "mlflow"


@dataclass(frozen=True)
class TeamStore:
    """A running team store: the MLflow server's URI and where it keeps its artifacts."""

    uri: str
    artifacts: Path
    database_uri: str


def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found is not None:
        return found
    for candidate in sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True):
        return candidate
    raise RuntimeError(
        f"PostgreSQL's `{name}` is not installed; run `bash scripts/ensure_postgres.sh` (or `make postgres`)"
    )


def _as_owner(args: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return args
    return ["runuser", "-u", "postgres", "--", *args]


def _run(args: list[str], log: Path) -> None:
    done = subprocess.run(_as_owner(args), capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise RuntimeError(
            f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}\n{tail}"
        )


@contextmanager
def postgres() -> Iterator[str]:
    """A fresh PostgreSQL cluster with an empty database; yields its SQLAlchemy URI (psycopg2)."""
    folder = Path(tempfile.mkdtemp(prefix="nb-mlops-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, user="postgres")
    data, log = folder / "data", folder / "server.log"
    port = free_port()
    _run([_pg_bin("initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8"], log)
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
    _run([_pg_bin("pg_ctl"), "-D", str(data), "-o", options, "-l", str(log), "-w", "start"], log)
    try:
        _run(
            [_pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", DATABASE],
            log,
        )
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/{DATABASE}"
    finally:
        subprocess.run(
            _as_owner([_pg_bin("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(folder, ignore_errors=True)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)  # its own session: the server and its workers
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=20)


@contextmanager
def mlflow_server(database_uri: str, folder: Path, *, timeout: float = 180) -> Iterator[TeamStore]:
    """`mlflow server` on `database_uri`, serving artifacts from `folder/artifacts`, one worker.

    Raises:
        RuntimeError: the server exited or did not answer `/health` within `timeout` seconds.
    """
    artifacts = folder / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    mlflow = Path(sys.executable).with_name("mlflow")
    args = [
        str(mlflow) if mlflow.exists() else "mlflow",
        "server",
        "--backend-store-uri",
        database_uri,
        "--serve-artifacts",
        "--artifacts-destination",
        str(artifacts),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "NB_MLOPS_"))}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # no job runner and huey workers to boot
    log = folder / "mlflow-server.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            args, cwd=folder, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + timeout
        while not _healthy(url):
            if proc.poll() is not None:
                raise RuntimeError(
                    f"mlflow server exited ({proc.returncode}):\n"
                    + log.read_text(errors="replace")[-3000:]
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"mlflow server did not answer {url}/health within {timeout:.0f} s:\n"
                    + log.read_text(errors="replace")[-3000:]
                )
            time.sleep(0.25)
        yield TeamStore(uri=url, artifacts=artifacts, database_uri=database_uri)
    finally:
        _stop(proc)


@contextmanager
def team_store(folder: Path) -> Iterator[TeamStore]:
    """PostgreSQL plus an MLflow server on it, both stopped on exit."""
    with postgres() as database_uri, mlflow_server(database_uri, folder) as server:
        yield server
