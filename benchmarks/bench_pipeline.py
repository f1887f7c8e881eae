"""Pipeline benchmark: ours against plain papermill of the same notebook, measured in the same run.

Cases: a 4-step linear pipeline of trivial steps vs papermill of the whole notebook
(≤ 1.3×); an unchanged re-run, all cached (≤ 0.3 s, no kernel started); two independent CPU-bound
branches with 2 parallel steps vs 1 (≥ 1.7×); building a 200-cell notebook (≤ 1 s).
Run: `.venv/bin/python benchmarks/bench_pipeline.py`; prints case, ours, peer, ratio, target, PASS/MISS.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.nbutil import chain_notebook, new_notebook  # noqa: E402

REPEAT = int(os.environ.get("BENCH_REPEAT", "5"))


def _median(fn, repeat: int = REPEAT) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _paired(ours_fn, peer_fn, repeat: int = REPEAT) -> tuple[float, float]:
    """Medians of ours and the peer, measured alternately so both see the same machine load."""
    ours, peer = [], []
    for i in range(repeat):
        for fn, times in ((ours_fn, ours), (peer_fn, peer))[:: 1 if i % 2 == 0 else -1]:
            started = time.perf_counter()
            fn()
            times.append(time.perf_counter() - started)
    return statistics.median(ours), statistics.median(peer)


def main() -> int:
    import papermill

    from nb_mlops.core.config import load_config
    from nb_mlops.core.store import client
    from nb_mlops.pipeline import build_pipeline, run_pipeline

    root = Path(tempfile.mkdtemp(prefix="bench_pipeline_"))
    (root / "pyproject.toml").write_text("[tool.nb_mlops]\n")
    os.chdir(root)
    client(load_config())  # the store exists, as after any first use
    rows = []

    # 1. four trivial linear steps vs papermill of the whole notebook
    linear = new_notebook(
        root / "linear.ipynb",
        [
            ("n: int = 3", ["parameters"]),
            ("a = n + 1", ["step:s1"]),
            ("b = a * 2", ["step:s2"]),
            ("c = b - 1", ["step:s3"]),
            ("d = c * c", ["step:s4"]),
        ],
    )
    build_pipeline(linear)
    run_pipeline("linear", cache=False)  # warm imports on both sides
    ours, peer = _paired(
        lambda: run_pipeline("linear", cache=False),
        lambda: papermill.execute_notebook(
            str(linear), str(root / "out.ipynb"), kernel_name="python3", progress_bar=False
        ),
    )
    rows.append(
        (
            "4-step linear pipeline (trivial steps)",
            ours,
            peer,
            ours / peer,
            "≤ 1.3×",
            ours / peer <= 1.3,
        )
    )

    # 1b. the same from the terminal: `nb-mlops pipeline run` vs the `papermill` command (info:
    # each pays its own interpreter start and imports, as a user or a JupyterLab job does)
    bin_dir = Path(sys.executable).parent
    cli_ours, cli_peer = _paired(
        lambda: subprocess.run(
            [str(bin_dir / "nb-mlops"), "pipeline", "run", "linear", "--no-cache"],
            check=True,
            capture_output=True,
        ),
        lambda: subprocess.run(
            [
                str(bin_dir / "papermill"),
                "-k",
                "python3",
                "--no-progress-bar",
                str(linear),
                "o.ipynb",
            ],
            check=True,
            capture_output=True,
        ),
        3,
    )
    rows.append(
        (
            "same, from the terminal (vs the papermill command)",
            cli_ours,
            cli_peer,
            cli_ours / cli_peer,
            "info",
            None,
        )
    )

    # 2. unchanged re-run, all cached
    run_pipeline("linear")
    cached = _median(lambda: run_pipeline("linear"))
    again = run_pipeline("linear")
    no_kernel = (
        all(s.cached for s in again.steps.values()) and not (again.run_dir / "kernels.log").exists()
    )
    rows.append(
        (
            f"re-run, all cached (no kernel started: {no_kernel})",
            cached,
            peer,
            cached / peer,
            "≤ 0.3 s",
            cached <= 0.3 and no_kernel,
        )
    )

    # 3. two independent CPU-bound branches: 2 at once vs one after the other
    # each branch ≈ 3 s of CPU, so that the fixed cost (the first kernels' start) is not the case
    burn = "total = 0\nfor i in range(30_000_000):\n    total += i % 7"
    branches = new_notebook(
        root / "branches.ipynb",
        [
            (burn.replace("total", "left"), ["step:left"]),
            (burn.replace("total", "right"), ["step:right"]),
        ],
    )
    build_pipeline(branches)
    parallel, sequential = _paired(
        lambda: run_pipeline("branches", cache=False, max_parallel=2),
        lambda: run_pipeline("branches", cache=False, max_parallel=1),
        int(os.environ.get("BENCH_REPEAT_BRANCHES", "2")),
    )
    rows.append(
        (
            "two CPU-bound branches (parallel vs sequential)",
            parallel,
            sequential,
            sequential / parallel,
            "≥ 1.7× faster",
            sequential / parallel >= 1.7,
        )
    )

    # 4. building a 200-cell notebook
    big = chain_notebook(root / "big.ipynb")
    build = _median(lambda: build_pipeline(big))
    rows.append(
        ("build a 200-cell notebook", build, float("nan"), float("nan"), "≤ 1 s", build <= 1.0)
    )

    print(f"cpus={os.cpu_count()} load average={os.getloadavg()[0]:.2f} (1 min) repeat={REPEAT}")
    print(f"{'case':<52} {'ours':>8} {'peer':>8} {'ratio':>7}  {'target':<14} result")
    for case, ours_s, peer_s, ratio, target, ok in rows:
        peer_txt = "-" if peer_s != peer_s else f"{peer_s:.3f}s"
        ratio_txt = "-" if ratio != ratio else f"{ratio:.2f}"
        print(
            f"{case:<52} {ours_s:>7.3f}s {peer_txt:>8} {ratio_txt:>7}  {target:<14} {'-' if ok is None else 'PASS' if ok else 'MISS'}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
