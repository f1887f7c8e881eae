"""The process behind one job: build the staged notebook's pipeline, run it, promote it.

Started by the job service as `python -m nb_mlops.server.worker JOBS_DIR JOB_ID` in its own process
group. It only calls the `nb-mlops` CLI (argument lists, no shell, no code built from request
strings) and writes its progress into the job record. It imports neither tornado nor mlflow.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from nb_mlops.server.jobs import TERMINAL, now_iso, read_job, update_job

_PR_SET_CHILD_SUBREAPER = 36
POLL_SECONDS = 0.3


def _become_subreaper() -> None:
    """Orphaned grandchildren (kernels whose papermill died) stay in our tree, so cancel finds
    them."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _last_json(text: str) -> Any:
    """The last JSON document printed on stdout (the CLIs print one with --json)."""
    text = text.strip()
    if not text:
        return None
    with contextlib.suppress(ValueError):
        return json.loads(text)
    # Tolerate chatter before the document: try from each line that opens an object or array.
    lines = text.splitlines()
    for start in range(len(lines)):
        if lines[start].lstrip().startswith(("{", "[")):
            with contextlib.suppress(ValueError):
                return json.loads("\n".join(lines[start:]))
    return None


class Worker:
    """Runs one job's commands in order, keeping the job record current."""

    def __init__(self, jobs_dir: Path, job_id: str) -> None:
        self.jobs_dir = jobs_dir
        self.job_id = job_id
        self.job = read_job(jobs_dir, job_id)
        self.folder = jobs_dir / job_id
        self.cli: list[str] = list(self.job.get("cli") or [sys.executable, "-m", "nb_mlops.cli"])
        self.log = (self.folder / "log.txt").open("ab", buffering=0)

    def update(self, **changes: Any) -> dict[str, Any]:
        self.job = update_job(self.jobs_dir, self.job_id, **changes)
        return self.job

    def cancelled(self) -> bool:
        return read_job(self.jobs_dir, self.job_id).get("status") in TERMINAL

    def note(self, text: str) -> None:
        self.log.write(f"[nb-mlops job] {text}\n".encode())

    def call(self, name: str, args: list[str], poll: Any = None) -> tuple[int, str]:
        """Run one CLI command; stderr goes to the log, stdout is returned (and logged)."""
        self.note(" ".join(["nb-mlops", *args[: 2 if name != "promote" else 1]]) + " …")
        out_path = self.folder / f"{name}.stdout"
        with out_path.open("wb") as out:
            proc = subprocess.Popen(
                [*self.cli, *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=self.log,
                cwd=self.job["project_root"],
            )
            while True:
                try:
                    code = proc.wait(timeout=POLL_SECONDS)
                    break
                except subprocess.TimeoutExpired:
                    if poll is not None:
                        poll()
        stdout = out_path.read_text(errors="replace")
        if stdout.strip():
            self.log.write(stdout.encode() + (b"" if stdout.endswith("\n") else b"\n"))
        if poll is not None:
            poll()
        return code, stdout

    def fail(self, message: str) -> int:
        self.note(f"FAILED: {message}")
        self.update(status="FAILED", finished=now_iso(), error=message)
        return 1

    def _error_line(self, fallback: str) -> str:
        """The CLI's one-line `error: …` message from the log, else `fallback`."""
        lines = (self.folder / "log.txt").read_text(errors="replace").splitlines()
        for line in reversed(lines):
            if line.startswith("error: "):
                return line[len("error: ") :]
        return fallback

    def run(self) -> int:
        job = self.update(status="RUNNING", started=now_iso())
        staged = job["staged"]
        build_dir = self.folder / "pipeline"
        status_file = self.folder / "status.json"

        if job["action"] == "promote":
            # a bad setting must never open a gate: refuse before running anything
            code, _ = self.call("check", ["config", "--check"])
            if code != 0:
                return self.fail(self._error_line(f"config --check exited with status {code}"))

        code, _ = self.call(
            "build",
            ["pipeline", "build", staged, "-n", job["pipeline"], "-o", str(build_dir)],
        )
        if self.cancelled():
            return 1
        if code != 0:
            return self.fail(self._error_line(f"pipeline build exited with status {code}"))

        def poll_status() -> None:
            with contextlib.suppress(OSError, ValueError):
                live = json.loads(status_file.read_text())
                changes: dict[str, Any] = {}
                if isinstance(live.get("steps"), dict):
                    changes["steps"] = live["steps"]
                if live.get("run_id") and not self.job.get("run_id"):
                    changes["run_id"] = live["run_id"]
                if changes:
                    self.update(**changes)

        # Typed values go through a JSON file (no text coercion, nothing parsed by a shell).
        params_file = self.folder / "parameters.json"
        params_file.write_text(json.dumps(job.get("parameters") or {}))
        args = ["pipeline", "run", str(build_dir), "-f", str(params_file), "--json"]
        if job["action"] == "promote":
            # the promoted model must be one this run computed: a cached step holds none
            args.append("--no-cache")
        code, stdout = self.call(
            "run", [*args, "--status-file", str(status_file)], poll=poll_status
        )
        if self.cancelled():
            return 1
        result = _last_json(stdout)
        run_id = self.job.get("run_id")
        if isinstance(result, dict):
            run_id = result.get("run_id") or run_id
            if isinstance(result.get("steps"), dict):
                self.update(steps=result["steps"])
        if run_id:
            self.update(run_id=run_id, links={"run": f"#/runs/{run_id}"})
        if code != 0:
            return self.fail(self._error_line(f"pipeline run exited with status {code}"))
        if job["action"] == "run":
            self.note("SUCCEEDED")
            self.update(status="SUCCEEDED", finished=now_iso(), result=result)
            return 0
        if not run_id:
            return self.fail("the pipeline run reported no run id; cannot promote")

        code, stdout = self.call("promote", ["promote", run_id, "--model", job["model"], "--json"])
        if self.cancelled():
            return 1
        result = _last_json(stdout)
        gates = _gates_of(result)
        version = result.get("version") if isinstance(result, dict) else None
        links = dict(self.job.get("links") or {})
        if version is not None:
            links["model_version"] = f"#/models/{job['model']}/versions/{version}"
        if code == 0:
            self.note(f"PROMOTED {job['model']} version {version}")
            self.update(
                status="PROMOTED",
                finished=now_iso(),
                gates=gates,
                model_version=None if version is None else str(version),
                result=result,
                links=links,
            )
            return 0
        if gates and any(not _passed(g) for g in gates):
            self.note("BLOCKED by the gates")
            self.update(
                status="BLOCKED",
                finished=now_iso(),
                gates=gates,
                result=result,
                error=self._error_line("one or more gates failed"),
            )
            return 0
        self.update(gates=gates, result=result)
        return self.fail(self._error_line(f"promote exited with status {code}"))


def _passed(gate: Any) -> bool:
    if not isinstance(gate, dict):
        return True
    if "verdict" in gate:
        return str(gate["verdict"]).upper() != "FAIL"
    if "passed" in gate:
        return bool(gate["passed"])
    return str(gate.get("status", gate.get("result", "PASS"))).upper() in ("PASS", "PASSED", "OK")


def _gates_of(result: Any) -> list[Any]:
    if isinstance(result, list):
        return result
    if isinstance(result, dict):
        gates = result.get("gates")
        if isinstance(gates, list):
            return gates
        if isinstance(gates, dict):
            return [
                {"name": k, **v} if isinstance(v, dict) else {"name": k, "passed": v}
                for k, v in gates.items()
            ]
    return []


def main(argv: list[str]) -> int:
    jobs_dir, job_id = Path(argv[0]), argv[1]
    _become_subreaper()
    worker = Worker(jobs_dir, job_id)
    try:
        return worker.run()
    except Exception as exc:  # the record must end FAILED, never stay RUNNING
        return worker.fail(f"{type(exc).__name__}: {exc}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
