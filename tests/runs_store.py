"""Fill a real MLflow store with runs of known shape, for the runs-view tests (no mocks)."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from mlflow.entities import Metric, Param, RunTag

from nb_mlops.core.config import Config
from nb_mlops.core.store import client, experiment_id


@dataclass
class Filled:
    experiment: str
    experiment_id: str
    run_ids: list[str]
    deleted: list[str]


def fill(
    cfg: Config, experiment: str, count: int, seed: int = 7, base: int = 1_700_000_000_000
) -> Filled:
    """Create `count` runs in `experiment` through MlflowClient: metric `acc` with ties, NaN,
    infinities and gaps; param `lr`; tag `team`; shared start times; some RUNNING, FAILED or deleted.
    """
    rnd = random.Random(seed)
    mlflow_client = client(cfg)
    exp_id = experiment_id(cfg, experiment)
    run_ids: list[str] = []
    deleted: list[str] = []
    for index in range(count):
        start = base + (index // 3) * 1000  # three runs share each start time: tie-breaks matter
        run = mlflow_client.create_run(exp_id, start_time=start, run_name=f"run-{index % 11}")
        run_id = run.info.run_id
        metrics = []
        roll = rnd.random()
        if roll < 0.1:
            acc = math.nan
        elif roll < 0.15:
            acc = math.inf if rnd.random() < 0.5 else -math.inf
        else:
            acc = rnd.choice([0.5, 0.75, 0.9, round(rnd.uniform(-1, 1), 3)])
        if index % 7 != 3:  # some runs never log `acc`
            metrics.append(Metric("acc", acc, start, 0))
        metrics.append(Metric("loss", rnd.random(), start, 0))
        params = [Param("lr", str(rnd.choice([0.1, 0.01, 0.001])))] if index % 5 else []
        tags = [RunTag("team", rnd.choice(["a", "b", "<img src=x onerror=alert(1)>"]))]
        if index % 4:
            tags.append(RunTag("nb_mlops.mode", "interactive"))
        mlflow_client.log_batch(run_id, metrics=metrics, params=params, tags=tags)
        if index % 9 == 0:
            pass  # left RUNNING: no end time
        else:
            status = "FAILED" if index % 6 == 0 else "FINISHED"
            mlflow_client.set_terminated(run_id, status, end_time=start + rnd.randint(1, 5000))
        if index % 13 == 5:
            mlflow_client.delete_run(run_id)
            deleted.append(run_id)
        else:
            run_ids.append(run_id)
    return Filled(experiment, exp_id, run_ids, deleted)
