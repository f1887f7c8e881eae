"""Team-store benchmarks: nb_mlops against a live MLflow server on PostgreSQL, side by side with
MLflow's own client calls on the same server, in the same run.

Starts a throw-away PostgreSQL cluster and `mlflow server` on 127.0.0.1 (the test suite's team
store, stopped by pid at the end), then measures:

- a steady `%%track` cell (5 metrics) blocking the notebook, vs the same cell with MLflow's fluent
  API (`start_run` + `log_metrics`) against the same server;
- the first page of 100 runs sorted by a metric out of 10,000, vs `MlflowClient.search_runs`.
  The 10,000 runs are copied in SQL from one run MLflow created, so the rows are MLflow's own shape.

Usage: `python benchmarks/bench_team.py [--runs N]`. Prints case, ours, peer, ratio, target.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from team_store import TeamStore, team_store  # noqa: E402  (the tests' team store)

METRICS = ("acc", "loss", "f1", "precision", "recall")

SHELL = """
import json, statistics, time
from IPython.core.interactiveshell import InteractiveShell
ip = InteractiveShell.instance()
ip.run_cell("pass")
def timed(src):
    t = time.perf_counter(); r = ip.run_cell(src); took = time.perf_counter() - t
    if not r.success: raise SystemExit(f"cell failed: {src!r}")
    return took
"""

OURS_CELL = (
    SHELL
    + "import nb_mlops\ntimed('%load_ext nb_mlops'); ip.run_cell('import nb_mlops')\n"
    + "cell = '%%track --no-autolog\\nnb_mlops.log(a=1, b=2, c=3, d=4, e=5)'\n"
    + "timed(cell); nb_mlops.flush()  # the first cell warms the client and the experiment\n"
    + "ts = []\n"
    + "for _ in range(30):\n    ts.append(timed(cell)); time.sleep(0.05)\n"
    + "nb_mlops.flush()\n"
    + "print(json.dumps(statistics.median(ts)))"
)

PEER_CELL = (
    SHELL
    + "ip.run_cell('import mlflow\\nmlflow.set_tracking_uri(URI)\\nmlflow.set_experiment(\"peer\")')\n"
    + "cell = 'with mlflow.start_run():\\n    mlflow.log_metrics(dict(a=1, b=2, c=3, d=4, e=5))'\n"
    + "timed(cell)\n"
    + "ts = []\n"
    + "for _ in range(30):\n    ts.append(timed(cell)); time.sleep(0.05)\n"
    + "print(json.dumps(statistics.median(ts)))"
)

PAGE = """
import json, statistics, time
from mlflow.tracking import MlflowClient
from nb_mlops.core.config import load_config
from nb_mlops.core.runs import runs
cfg = load_config()
peer = MlflowClient(cfg.tracking_uri)
exp_id = peer.get_experiment_by_name("bench").experiment_id
def timed(fn, repeat=7):
    fn(); out = []
    for _ in range(repeat):
        t = time.perf_counter(); fn(); out.append(time.perf_counter() - t)
    return statistics.median(out)
ours = timed(lambda: runs("bench", metric="acc", limit=100, cfg=cfg))
page = runs("bench", metric="acc", limit=100, cfg=cfg)
assert len(list(page)) == 100, len(list(page))
theirs = timed(lambda: peer.search_runs([exp_id], max_results=100, order_by=["metrics.`acc` DESC"]))
print(json.dumps([ours, theirs]))
"""


def _project(server: TeamStore) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="nb-mlops-bench-team-"))
    (folder / "nb_mlops.toml").write_text(f'tracking_uri = "{server.uri}"\n')
    return folder


def _run(code: str, cwd: Path, server: TeamStore) -> object:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "NB_MLOPS_"))}
    code = f"URI = {server.uri!r}\n" + textwrap.dedent(code)
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True
    )
    if done.returncode:
        raise SystemExit(f"benchmark failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _seed_runs(server: TeamStore, count: int) -> None:
    """`count` finished runs in experiment `bench`, each with METRICS, copied in SQL from one
    template run that MLflow's client created (so every column has MLflow's own values)."""
    import psycopg2
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(server.uri)
    exp_id = client.create_experiment("bench")
    template = client.create_run(exp_id, run_name="template").info.run_id
    client.log_batch(template, metrics=[Metric(k, 0.5, 1, 0) for k in METRICS])
    client.set_terminated(template)
    con = psycopg2.connect(server.database_uri.replace("postgresql+psycopg2", "postgresql"))
    with con, con.cursor() as cur:
        cur.execute("select column_name from information_schema.columns where table_name = 'runs'")
        columns = [row[0] for row in cur.fetchall()]
        new_values = {
            "run_uuid": "md5('bench' || i)",
            "name": "'run-' || i",
            "start_time": "start_time + i * 1000",
            "end_time": "end_time + i * 1000",
        }
        select = ", ".join(new_values.get(c, c) for c in columns)
        cur.execute(
            f"insert into runs ({', '.join(columns)}) select {select} "
            "from runs, generate_series(1, %s) as i where run_uuid = %s",
            (count, template),
        )
        for table in ("metrics", "latest_metrics"):
            cur.execute(
                f"insert into {table} (key, value, timestamp, step, is_nan, run_uuid) "
                "select k, random(), 1, 0, false, md5('bench' || i) "
                "from generate_series(1, %s) as i, unnest(%s) as k",
                (count, list(METRICS)),
            )
    con.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder, team_store(Path(folder)) as server:
        project = _project(server)
        ours = float(_run(OURS_CELL, project, server))  # type: ignore[arg-type]
        peer = float(_run(PEER_CELL, project, server))  # type: ignore[arg-type]
        rows.append(("steady %%track cell, 5 metrics (median)", ours, peer, 0.005))
        started = time.perf_counter()
        _seed_runs(server, args.runs)
        print(
            f"seeded {args.runs:,} runs in {time.perf_counter() - started:.1f} s", file=sys.stderr
        )
        page = _run(PAGE, project, server)
        assert isinstance(page, list)
        rows.append((f"first page of 100 by metric, of {args.runs:,} runs", page[0], page[1], 0.3))
    print(f"{'case':<48} {'ours':>10} {'peer':>10} {'peer/ours':>10}  target")
    for case, mine, theirs, target in rows:
        verdict = "PASS" if mine <= target else "MISS"
        print(
            f"{case:<48} {mine * 1e3:8.1f} ms {theirs * 1e3:8.1f} ms {theirs / mine:9.2f}x"
            f"  ≤ {target * 1e3:.0f} ms {verdict}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
