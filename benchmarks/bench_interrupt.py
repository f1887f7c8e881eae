"""Stopping a run from outside: `nb-mlops pipeline run` against `papermill` on the same notebook,
measured in the same run, each started from a shell-like session of its own.

Cases: Ctrl-C (SIGINT to the process group, as a terminal sends it) some seconds into a 60 s
cell — time until the command has exited (≤ 1 s), and processes left behind; SIGTERM to the
command; kill -9 of the command — processes it started still alive 5 s later (0). The cell
starts a process of its own (`sleep`), as real cells do (a data loader, a server).
Run: `.venv/bin/python benchmarks/bench_interrupt.py`; prints case, ours, peer, ratio, target,
PASS/MISS. `BENCH_INTERRUPT_AFTER` (default 8) sets the seconds into the cell for Ctrl-C (1 s
for the others), `BENCH_REPEAT` (default 3) the repeats.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.nbutil import new_notebook  # noqa: E402

REPEAT = int(os.environ.get("BENCH_REPEAT", "3"))
AFTER = float(os.environ.get("BENCH_INTERRUPT_AFTER", "8"))
CELLS = [
    ("n: int = 1", ["parameters"]),
    (
        "import pathlib, subprocess, time\n"
        "child = subprocess.Popen(['sleep', '300'])\n"
        "pathlib.Path('in_cell').write_text('')\n"
        "time.sleep(60)\n"
        "child.kill()\n"
        "done = n",
        ["step:slow"],
    ),
]


def _alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    found = []
    for proc in procs:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def _stop(
    root: Path, argv: list[str], sig: signal.Signals, group: bool, after: float
) -> tuple[float, int]:
    """Start `argv`, send `sig` `after` seconds into the cell; (seconds until it exited,
    processes it started still alive 5 s after the signal)."""
    (root / "in_cell").unlink(missing_ok=True)
    proc = subprocess.Popen(
        argv,
        cwd=root,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    while not (root / "in_cell").exists():
        if proc.poll() is not None:
            raise RuntimeError(f"{argv[2:4]} ended before its cell: {proc.returncode}")
        time.sleep(0.01)
    time.sleep(after)
    tree = psutil.Process(proc.pid).children(recursive=True)
    started = time.perf_counter()
    if group:
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    try:
        proc.wait(90)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    took = time.perf_counter() - started
    left = _alive(tree)
    while left and time.perf_counter() - started < 5.0:
        time.sleep(0.05)
        left = _alive(left)
    for orphan in left:  # leave the machine as we found it
        try:
            os.killpg(orphan.pid, signal.SIGKILL)
        except OSError:
            orphan.kill()
    return took, len(left)


def main() -> int:
    from nb_mlops.pipeline import build_pipeline

    root = Path(tempfile.mkdtemp(prefix="bench_interrupt_"))
    (root / "pyproject.toml").write_text("[tool.nb_mlops]\n")
    os.chdir(root)
    notebook = new_notebook(root / "slow.ipynb", CELLS)
    build_pipeline(notebook)
    ours = [sys.executable, "-m", "nb_mlops.cli", "pipeline", "run", "slow", "--no-cache"]
    peer = [sys.executable, "-m", "papermill", str(notebook), str(root / "out.ipynb")]
    rows = []
    for case, sig, group, after in (
        ("Ctrl-C (SIGINT to the group) into a 60 s cell", signal.SIGINT, True, AFTER),
        ("SIGTERM to the command in a 60 s cell", signal.SIGTERM, False, 1.0),
        ("kill -9 of the command in a 60 s cell", signal.SIGKILL, False, 1.0),
    ):
        results: dict[str, list[tuple[float, int]]] = {"ours": [], "peer": []}
        for i in range(REPEAT):
            order = (("ours", ours), ("peer", peer))[:: 1 if i % 2 == 0 else -1]
            for who, argv in order:
                results[who].append(_stop(root, argv, sig, group, after))
        took = {who: statistics.median(t for t, _ in r) for who, r in results.items()}
        left = {who: max(n for _, n in r) for who, r in results.items()}
        if sig != signal.SIGKILL:
            rows.append(
                (
                    f"{case}: seconds to exit",
                    f"{took['ours']:.3f}s",
                    f"{took['peer']:.3f}s",
                    f"{took['ours'] / took['peer']:.2f}",
                    "≤ 1 s",
                    took["ours"] <= 1.0,
                )
            )
        rows.append(
            (
                f"{case}: processes left after 5 s",
                str(left["ours"]),
                str(left["peer"]),
                "-",
                "0",
                left["ours"] == 0,
            )
        )
    print(f"cpus={os.cpu_count()} load average={os.getloadavg()[0]:.2f} (1 min) repeat={REPEAT}")
    print(f"Ctrl-C sent {AFTER:g} s into the cell; peer = papermill {_papermill_version()}")
    print(f"{'case':<62} {'ours':>8} {'peer':>8} {'ratio':>6}  {'target':<7} result")
    for case, ours_v, peer_v, ratio, target, ok in rows:
        result = "PASS" if ok else "MISS"
        print(f"{case:<62} {ours_v:>8} {peer_v:>8} {ratio:>6}  {target:<7} {result}")
    return 0


def _papermill_version() -> str:
    import papermill

    return str(papermill.__version__)


if __name__ == "__main__":
    sys.exit(main())
