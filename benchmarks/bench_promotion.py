"""Promotion on the embedded store: ours (gates + registry + journal) vs plain MLflow registry calls.

Peers, measured in the same process on the same store: `create_model_version` +
`set_registered_model_alias` (what a bare MLflow promotion costs, with no gates, no lock and no
journal); for lineage, `get_model_version_by_alias` + `get_run`. Candidates are pipeline runs shaped
like the runner's (a parent, a step, a nested run with a real sklearn model and a data snapshot).
Usage: `python benchmarks/bench_promotion.py [--repeat N]`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

GATES = """
metrics = { accuracy = ">= 0.5", log_loss = "<= 0.9" }
beat_champion = { metric = "accuracy", min_delta = 0.0 }
require_reproduced = true
require_data_verified = true
"""


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def _time(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=7, help="promotions measured per side")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="nb_mlops_bench_promo-")) / "project"
    root.mkdir()
    (root / "pyproject.toml").write_text(f"[tool.nb_mlops]\n\n[tool.nb_mlops.gates]\n{GATES}\n")
    os.chdir(root)

    import pandas as pd
    from promotion_helpers import make_pipeline_run

    import nb_mlops
    from nb_mlops.core import store
    from nb_mlops.core.config import load_config

    cfg = load_config(root)
    client = store.client(cfg)
    snap = nb_mlops.snapshot(pd.DataFrame({"x": range(1000), "y": [0, 1] * 500}), "eval")
    data = {"eval": (f"v{snap.version}:{snap.digest}", "eval")}
    n = args.repeat
    print(f"preparing {2 * n + 1} pipeline runs ...", file=sys.stderr)
    runs = [
        make_pipeline_run(cfg, metrics={"accuracy": 0.6 + i * 0.01, "log_loss": 0.5}, data=data)
        for i in range(2 * n + 1)
    ]
    # warm both paths (imports, engine, first registry rows) outside the measurement
    nb_mlops.promote(runs[0], model="ours", reason="warm-up")
    client.create_registered_model("peer")
    peer_sources = []
    for run_id in runs[1 : n + 1]:
        model = next(
            m
            for m in client.search_logged_models(
                experiment_ids=[e.experiment_id for e in client.search_experiments()]
            )
            if client.get_run(m.source_run_id).data.tags.get("mlflow.parentRunId")
            and _root(client, m.source_run_id) == run_id
        )
        peer_sources.append((run_id, model.artifact_location, model.model_id))

    ours_promote, peer_promote = [], []
    for i in range(n):
        # interleave ours and the peer so that machine noise hits both alike
        ours_promote.append(
            _time(lambda r=runs[n + 1 + i]: nb_mlops.promote(r, model="ours", reason="bench"))
        )
        run_id, source, model_id = peer_sources[i]

        def peer(run_id: str = run_id, source: str = source, model_id: str = model_id) -> None:
            mv = client.create_model_version(
                "peer", source, run_id=run_id, model_id=model_id, await_creation_for=0
            )
            client.set_registered_model_alias("peer", "champion", mv.version)

        peer_promote.append(_time(peer))

    ours_lineage, peer_lineage = [], []
    for _ in range(max(n, 10)):
        ours_lineage.append(_time(lambda: nb_mlops.lineage("ours")))

        def peer_read() -> None:
            mv = client.get_model_version_by_alias("peer", "champion")
            client.get_run(mv.run_id)

        peer_lineage.append(_time(peer_read))

    ours_rollback, peer_rollback = [], []
    for _ in range(3):
        ours_rollback.append(_time(lambda: nb_mlops.rollback("ours", reason="bench")))
        peer_rollback.append(
            _time(lambda: client.set_registered_model_alias("peer", "champion", "1"))
        )

    history = _time(lambda: nb_mlops.history("ours"))
    decision_gates = len(nb_mlops.history("ours")[-4].gates)

    rows = [
        (
            "promote (gates+registry+journal)",
            _median_ms(ours_promote),
            _median_ms(peer_promote),
            1000.0,
        ),
        ("lineage NAME@champion", _median_ms(ours_lineage), _median_ms(peer_lineage), 300.0),
        ("rollback", _median_ms(ours_rollback), _median_ms(peer_rollback), 1000.0),
        (f"history ({len(nb_mlops.history('ours'))} entries)", history * 1000, None, 300.0),
    ]
    print(
        f"\npromotion benchmark: {n} promotions per side, {decision_gates} gates each, mlflow on SQLite"
    )
    print(f"{'case':<36} {'ours ms':>9} {'peer ms':>9} {'ratio':>7} {'target':>10}  result")
    for case, ours, peer, target in rows:
        ratio = f"{ours / peer:.1f}x" if peer else "-"
        peer_text = f"{peer:.1f}" if peer is not None else "-"
        verdict = "PASS" if ours <= target else "MISS"
        print(
            f"{case:<36} {ours:>9.1f} {peer_text:>9} {ratio:>7} {'<= ' + format(target, '.0f') + ' ms':>10}  {verdict}"
        )
    return 0


def _root(client: object, run_id: str) -> str:
    """Walk `mlflow.parentRunId` up to the pipeline parent run."""
    current = run_id
    while True:
        parent = client.get_run(current).data.tags.get("mlflow.parentRunId")  # type: ignore[attr-defined]
        if not parent:
            return current
        current = parent


if __name__ == "__main__":
    sys.exit(main())
