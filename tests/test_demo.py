"""`nb-mlops demo` end to end: the quickstart is tracked, snapshotted, pipelined and promoted, and
the champion's lineage reaches back to the data snapshot the pipeline's load step took."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def test_demo_promotes_the_quickstart_with_data_lineage(tmp_path: Path) -> None:
    # Given a project holding the quickstart notebook and the repository's gates
    project = tmp_path / "demo"
    (project / "notebooks").mkdir(parents=True)
    shutil.copy(REPO / "notebooks" / "quickstart.ipynb", project / "notebooks")
    config = (REPO / "pyproject.toml").read_text()
    (project / "pyproject.toml").write_text(config[config.index("[tool.nb_mlops]") :])
    cli = [sys.executable, "-m", "nb_mlops.cli"]

    # When the demo runs
    done = subprocess.run([*cli, "demo"], cwd=project, capture_output=True, text=True, timeout=600)

    # Then it succeeds and ends with the champion's lineage
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "PROMOTED: breast-cancer version 1 is champion" in done.stdout

    def read_json(*args: str) -> Any:
        run = subprocess.run([*cli, *args], cwd=project, capture_output=True, text=True, check=True)
        return json.loads(run.stdout)

    lineage = read_json("lineage", "breast-cancer", "--json")
    assert lineage["version"] == "1" and "champion" in lineage["aliases"]
    assert [d["name"] for d in lineage["data"]] == ["breast_cancer"]
    assert lineage["notebook"]["path"].endswith("notebooks/quickstart.ipynb")
    assert lineage["parameters"]["C"] == "1.0"
    # And every gate of the repository's config was judged, the data gate on a real snapshot
    history = read_json("history", "breast-cancer", "--json")
    verdicts = {gate["gate"]: gate["verdict"] for gate in history[-1]["gates"]}
    assert verdicts["require_data_verified"] == "PASS"
    assert verdicts["require_reproduced"] == "PASS"
    assert verdicts["metric:accuracy"] == "PASS"
