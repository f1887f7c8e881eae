"""Runs view on an experiment of 10,000 runs: our first page sorted by a metric vs MLflow's search.

The store is filled once through MLflow's own client (create_run + log_batch + set_terminated, about
25 ms a run) and cached in the temp folder between benchmark runs; each run then measures ours and
the peer side by side on the same store. Usage: `python benchmarks/bench_runs_view.py [--runs N]`.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

METRICS = ("acc", "loss", "f1", "precision", "recall")


def populated_project(count: int) -> Path:
    """A project root whose embedded store holds `count` runs in experiment `bench` (cached)."""
    root = (
        Path(tempfile.gettempdir()) / "nb_mlops_bench" / f"runs-{count}-mlflow-{version('mlflow')}"
    )
    done = root / ".populated"
    if done.exists():
        return root
    import shutil

    from mlflow.entities import Metric, Param, RunTag

    from nb_mlops.core.config import load_config
    from nb_mlops.core.store import client, experiment_id

    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    (root / "pyproject.toml").write_text("[tool.nb_mlops]\n")
    cfg = load_config(root)
    mlflow_client = client(cfg)
    exp_id = experiment_id(cfg, "bench")
    rnd = random.Random(42)
    started = time.perf_counter()
    for index in range(count):
        start = 1_700_000_000_000 + index * 1000
        run = mlflow_client.create_run(exp_id, start_time=start, run_name=f"run-{index}")
        mlflow_client.log_batch(
            run.info.run_id,
            metrics=[Metric(key, rnd.random(), start, 0) for key in METRICS],
            params=[Param(f"p{k}", str(rnd.choice([0.1, 0.01, 0.001]))) for k in range(5)],
            tags=[RunTag("nb_mlops.mode", "interactive"), RunTag("team", rnd.choice("abc"))],
        )
        mlflow_client.set_terminated(run.info.run_id, end_time=start + rnd.randint(100, 9000))
        if index % 1000 == 999:
            rate = (index + 1) / (time.perf_counter() - started)
            print(f"  populated {index + 1}/{count} runs ({rate:.0f} runs/s)", file=sys.stderr)
    done.write_text(str(count))
    return root


def timed(fn: Callable[[], Any], repeat: int) -> float:
    """Median wall time of `fn` in seconds, after one untimed warm-up call."""
    fn()
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def process_time(argv: list[str], cwd: Path, repeat: int) -> float:
    """Median wall time of a whole process (interpreter start, imports, query, output)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "NB_MLOPS_"))}

    def run() -> None:
        subprocess.run(argv, cwd=cwd, env=env, check=True, capture_output=True)

    return timed(run, repeat)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=7, help="timed calls of ours (median)")
    parser.add_argument("--peer-repeat", type=int, default=3, help="timed calls of the peer")
    args = parser.parse_args()

    root = populated_project(args.runs)
    os.chdir(root)
    for name in [n for n in os.environ if n.startswith(("MLFLOW_", "NB_MLOPS_"))]:
        del os.environ[name]

    import mlflow
    from IPython.core.interactiveshell import InteractiveShell
    from mlflow.tracking import MlflowClient
    from mlflow.utils.search_utils import SearchUtils

    from nb_mlops.core.config import load_config
    from nb_mlops.core.runs import runs
    from nb_mlops.widgets.runs import RunsView

    cfg = load_config(root)
    mlflow.set_tracking_uri(cfg.tracking_uri)
    peer = MlflowClient(cfg.tracking_uri)
    exp_id = peer.get_experiment_by_name("bench").experiment_id
    order = ["metrics.`acc` DESC"]
    last_page = SearchUtils.create_page_token(args.runs - 100)

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "nb_mlops")
    import threading

    for thread in threading.enumerate():  # let the background warm-up finish: it is not the view
        if thread.name in ("nb_mlops-warm-up", "nb_mlops-load"):
            thread.join(timeout=120)
    shell.display_pub.publish = lambda *a, **k: None  # measure building the view, not the terminal

    cases: list[tuple[str, float, float, float]] = []

    def case(name: str, ours: Callable[[], Any], theirs: Callable[[], Any], target: float) -> None:
        # the peer takes seconds a call: fewer repeats keep the whole benchmark to a few minutes
        cases.append((name, timed(ours, args.repeat), timed(theirs, args.peer_repeat), target))

    case(
        "first page of 100, by metric (API)",
        lambda: runs("bench", metric="acc", limit=100, cfg=cfg),
        lambda: peer.search_runs([exp_id], max_results=100, order_by=order),
        0.150,
    )
    case(
        "%mlops runs --metric acc (page of 50, table shown)",
        lambda: shell.run_line_magic("mlops", "runs --experiment bench --metric acc"),
        lambda: mlflow.search_runs(experiment_ids=[exp_id], order_by=order),
        0.150,
    )
    case(
        "widget view built (page of 50, widgets on)",
        lambda: RunsView(runs("bench", metric="acc", cfg=cfg), cfg=cfg).widget,
        lambda: peer.search_runs([exp_id], max_results=50, order_by=order),
        0.150,
    )
    case(
        "last page of 100 (offset N-100), by metric",
        lambda: runs("bench", metric="acc", limit=100, page_token=last_page.decode(), cfg=cfg),
        lambda: peer.search_runs([exp_id], max_results=100, order_by=order, page_token=last_page),
        0.150,
    )
    cli = Path(sys.executable).with_name("nb-mlops")
    peer_script = (
        "from mlflow.tracking import MlflowClient; import sys; c = MlflowClient(sys.argv[1]); "
        "e = c.get_experiment_by_name('bench').experiment_id; "
        "print(len(c.search_runs([e], max_results=50, order_by=['metrics.`acc` DESC'])))"
    )
    cases.append(
        (
            "`nb-mlops runs --metric acc --json`, whole process",
            process_time(
                [str(cli), "runs", "--experiment", "bench", "--metric", "acc", "--json"], root, 3
            ),
            process_time([sys.executable, "-c", peer_script, cfg.tracking_uri], root, 3),
            1.0,
        )
    )

    width = max(len(c[0]) for c in cases)
    print(
        f"\nruns view, {args.runs:,} runs; median of {args.repeat} (ours) and {args.peer_repeat} "
        f"(peer) calls after a warm-up; MLflow {version('mlflow')}"
    )
    print(f"{'case':<{width}}  {'ours':>9}  {'peer':>9}  {'ratio':>7}  {'target':>8}  result")
    misses = 0
    for name, ours, theirs, target in cases:
        ok = ours <= target
        misses += not ok
        print(
            f"{name:<{width}}  {ours * 1000:7.1f}ms  {theirs * 1000:7.1f}ms  "
            f"{ours / theirs:6.3f}x  {'≤' + format(target * 1000, '.0f') + 'ms':>8}  "
            f"{'PASS' if ok else 'MISS'}"
        )
    print("peer columns: MlflowClient.search_runs(max_results, order_by); for the %mlops row,")
    print("mlflow.search_runs(order_by) (the DataFrame API, every run); last row: a peer script.")
    return 1 if misses else 0


if __name__ == "__main__":
    sys.exit(main())
