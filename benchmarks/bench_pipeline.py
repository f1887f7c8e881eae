"""Pipeline benchmark: ours against plain papermill of the same notebook, measured in the same run.

Cases: a 4-step linear pipeline of trivial steps vs papermill of the whole notebook (≤ 1.0×); an
unchanged re-run, all cached (≤ 0.3 s, no kernel started); two independent CPU-bound branches that
call `os.makedirs`, 2 parallel steps vs 1 (≥ 1.7×: module calls create no edge); two random
forests fitted on the same `X` in two steps, parallel vs one after the other; building a
200-cell notebook (≤ 1 s); passing a 1 GiB numpy array and a 10M-row frame from a step's saver to
the next step's loader vs cloudpickle dump + load (≤ 0.5×; each side also reads the data once).
Run: `.venv/bin/python benchmarks/bench_pipeline.py`; prints case, ours, peer, ratio, target, PASS/MISS.
`BENCH_SKIP_VALUES=1` leaves out the value cases (they need ≈ 4 GiB of memory).
"""

from __future__ import annotations

import os
import shutil
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


def _parallel_row(pipeline: str, case: str, target: float) -> tuple:
    """A pipeline's two branches run 2 at once vs one after the other (paired runs)."""
    from nb_mlops.pipeline import run_pipeline

    parallel, sequential = _paired(
        lambda: run_pipeline(pipeline, cache=False, max_parallel=2),
        lambda: run_pipeline(pipeline, cache=False, max_parallel=1),
        int(os.environ.get("BENCH_REPEAT_BRANCHES", "2")),
    )
    speedup = sequential / parallel
    return (
        f"{case} (parallel vs seq.)",
        parallel,
        sequential,
        speedup,
        f"≥ {target:g}× faster",
        speedup >= target,
    )


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
            "≤ 1.0×",
            ours / peer <= 1.0,
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

    # 3. two independent CPU-bound branches, each calling os.makedirs (a module call: no edge),
    # 2 at once vs one after the other; each branch ≈ 3 s of CPU, so that the fixed cost (the
    # first kernels' start) is not the case
    burn = "total = 0\nfor i in range(30_000_000):\n    total += i % 7"
    branches = new_notebook(
        root / "branches.ipynb",
        [
            ("import os", ["imports"]),
            (
                "os.makedirs('out/left', exist_ok=True)\n" + burn.replace("total", "left"),
                ["step:left"],
            ),
            (
                "os.makedirs('out/right', exist_ok=True)\n" + burn.replace("total", "right"),
                ["step:right"],
            ),
        ],
    )
    spec = build_pipeline(branches)
    assert spec.steps["right"].after == [], "the branches must stay independent"
    rows.append(_parallel_row("branches", "two branches calling os.makedirs", 1.7))

    # 3b. two models fitted on the same data in two steps: a model's `fit` leaves X alone (checked
    # at the step's end), so the branches stay independent; each fit ≈ 3 s of CPU
    models = new_notebook(
        root / "models.ipynb",
        [
            (
                "import numpy as np\nfrom sklearn.ensemble import RandomForestClassifier",
                ["imports"],
            ),
            (
                "rng = np.random.RandomState(0)\nX = rng.rand(20_000, 20)\n"
                "y = (X[:, 0] + X[:, 1] > 1).astype(int)",
                ["step:data"],
            ),
            (
                "a = RandomForestClassifier(60, random_state=1, n_jobs=1).fit(X, y)\n"
                "acc_a = a.score(X, y)",
                ["step:forest_a"],
            ),
            (
                "b = RandomForestClassifier(60, random_state=2, n_jobs=1).fit(X, y)\n"
                "acc_b = b.score(X, y)",
                ["step:forest_b"],
            ),
        ],
    )
    spec = build_pipeline(models)
    assert spec.steps["forest_b"].after == ["data"], "the model branches must stay independent"
    rows.append(_parallel_row("models", "two models fitted on the same X", 1.5))

    # 4. building a 200-cell notebook
    big = chain_notebook(root / "big.ipynb")
    build = _median(lambda: build_pipeline(big))
    rows.append(
        ("build a 200-cell notebook", build, float("nan"), float("nan"), "≤ 1 s", build <= 1.0)
    )

    if not os.environ.get("BENCH_SKIP_VALUES"):
        rows += _value_cases(root)

    print(f"cpus={os.cpu_count()} load average={os.getloadavg()[0]:.2f} (1 min) repeat={REPEAT}")
    print(f"{'case':<52} {'ours':>8} {'peer':>8} {'ratio':>7}  {'target':<14} result")
    for case, ours_s, peer_s, ratio, target, ok in rows:
        peer_txt = "-" if peer_s != peer_s else f"{peer_s:.3f}s"
        ratio_txt = "-" if ratio != ratio else f"{ratio:.2f}"
        print(
            f"{case:<52} {ours_s:>7.3f}s {peer_txt:>8} {ratio_txt:>7}  {target:<14} {'-' if ok is None else 'PASS' if ok else 'MISS'}"
        )
    return 0


def _value_cases(root: Path) -> list[tuple]:
    """A step's saver and the next step's loader (the kernel's own code, in this process) vs
    cloudpickle to a file and pickle.load, for a 1 GiB array and a 10M-row frame. The target
    is on save + load; a second row (info) adds one pass over the data on both sides, where a
    lazily mapped value pays its page faults."""
    import pickle

    import cloudpickle
    import numpy as np
    import pandas as pd

    from nb_mlops.pipeline.kernel import Step

    rng = np.random.default_rng(0)
    n = 10_000_000
    frame = pd.DataFrame(
        {
            "a": rng.random(n),
            "b": rng.integers(0, 100, n),
            "c": pd.Categorical(rng.choice(["x", "y", "z"], n)),
            "s": pd.array(rng.choice(["alpha", "beta", "gamma"], n), dtype="str"),
        }
    )
    cases = [
        ("a 1 GiB numpy array", rng.random(1 << 27), lambda v: float(v.sum())),
        ("a 10M-row frame", frame, lambda v: float(v["a"].sum()) + float(v["b"].sum())),
    ]
    repeat = int(os.environ.get("BENCH_REPEAT_VALUES", "3"))
    rows = []
    folder = root / "values"
    for case, value, read in cases:
        # each side first removes its own previous output (freeing its pages is on its clock)
        def ours(value=value, read=read, touch=False) -> None:
            shutil.rmtree(folder / "producer", ignore_errors=True)
            producer = Step("producer", {"outputs_dir": str(folder / "producer")}, "", "")
            producer.save({"v": value}, ["v"], [])
            ns: dict = {}
            values = {"v": str(folder / "producer" / "values.pkl")}
            Step("consumer", {"inputs": values}, "", "").load(ns, {"v": "producer"})
            if touch:
                read(ns["v"])

        def peer(value=value, read=read, touch=False) -> None:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "peer.pkl").unlink(missing_ok=True)
            with open(folder / "peer.pkl", "wb") as fh:
                cloudpickle.dump(value, fh, protocol=5)
            with open(folder / "peer.pkl", "rb") as fh:
                loaded = pickle.load(fh)
            if touch:
                read(loaded)

        ours_s, peer_s = _paired(ours, peer, repeat)
        ratio = ours_s / peer_s
        rows.append((f"pass {case} (save + load)", ours_s, peer_s, ratio, "≤ 0.5×", ratio <= 0.5))
        ours_s, peer_s = _paired(lambda o=ours: o(touch=True), lambda p=peer: p(touch=True), repeat)
        rows.append(("  same, then read once", ours_s, peer_s, ours_s / peer_s, "info", None))
        shutil.rmtree(folder, ignore_errors=True)
    return rows


if __name__ == "__main__":
    sys.exit(main())
