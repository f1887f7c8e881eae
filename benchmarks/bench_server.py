"""Benchmark: a Promote click reaches QUEUED in ≤ 200 ms (issue 6).

Starts a real `jupyter server` with the nb_mlops extension on a temporary project, then times
`POST /nb-mlops/api/jobs` (validate the parameters, stage the notebook, spawn the job's process
group) against the peer `POST /api/contents` (jupyter_server creating an untitled notebook), in the
same run. Each job is cancelled right away so no pipeline runs. Prints: case, ours, peer, ratio,
target, PASS/MISS.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.nbutil import new_notebook  # noqa: E402

TOKEN = "bench-token"
ROUNDS = 15
TARGET_MS = 200.0


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _call(base: str, method: str, path: str, body: dict | None = None) -> tuple[float, dict]:
    request = urllib.request.Request(
        f"{base}{path}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"token {TOKEN}", "Content-Type": "application/json"},
    )
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=30) as response:
        data = json.loads(response.read() or b"{}")
    return (time.perf_counter() - start) * 1000, data


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "project"
        root.mkdir()
        (root / "pyproject.toml").write_text('[project]\nname = "bench"\n\n[tool.nb_mlops]\n')
        new_notebook(
            root / "train.ipynb",
            [("alpha: float = 0.5\nn: int = 3", ["parameters"]), "x = alpha * n"],
        )
        port = _port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("NB_MLOPS_")}
        env["JUPYTER_CONFIG_DIR"] = str(Path(tmp) / "config")
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jupyter_server",
                "--no-browser",
                "--ip",
                "127.0.0.1",
                "--port",
                str(port),
                f"--ServerApp.token={TOKEN}",
                "--allow-root",
                f"--ServerApp.root_dir={root}",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        base = f"http://127.0.0.1:{port}/"
        try:
            for _ in range(300):
                try:
                    _call(base, "GET", "api/status")
                    break
                except OSError:
                    time.sleep(0.1)
            ours, peer = [], []
            body = {"path": "train.ipynb", "action": "run", "parameters": {"alpha": 0.25}}
            _call(base, "POST", "nb-mlops/api/jobs", body)  # warm-up (first notebook parse)
            for _ in range(ROUNDS):
                elapsed, job = _call(base, "POST", "nb-mlops/api/jobs", body)
                assert job["status"] == "QUEUED", job
                ours.append(elapsed)
                _call(base, "POST", f"nb-mlops/api/jobs/{job['id']}/cancel")
                elapsed, _ = _call(base, "POST", "api/contents", {"type": "notebook"})
                peer.append(elapsed)
            for job in _call(base, "GET", "nb-mlops/api/jobs")[1]["jobs"]:
                _call(base, "POST", f"nb-mlops/api/jobs/{job['id']}/cancel")
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
    ours_ms, peer_ms = statistics.median(ours), statistics.median(peer)
    verdict = "PASS" if ours_ms <= TARGET_MS else "MISS"
    rows = [
        ("case", "ours", "peer", "ratio", "target", "result"),
        (
            "POST jobs → QUEUED (median of 15)",
            f"{ours_ms:.1f} ms",
            f"{peer_ms:.1f} ms (POST /api/contents)",
            f"{ours_ms / peer_ms:.1f}x",
            f"≤ {TARGET_MS:.0f} ms",
            verdict,
        ),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
