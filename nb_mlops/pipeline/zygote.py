# mypy: disable-error-code="no-untyped-call,misc,attr-defined"
"""Fast fresh kernels: a per-run "zygote" process imports ipykernel once, then forks one new
process per kernel, which starts an ordinary IPython kernel from that state.

A forked kernel is as fresh as a launched one (a new process, its own session and process group,
an empty namespace, the step's environment and working folder); it skips only the interpreter
start and the imports (≈ 0.5 s of CPU per step). The zygote lives as long as the executor that
started it, and never longer than its runner (a parent-death signal, and the end of its input);
when it ends, it kills the process groups of the kernels it forked, and each of them also dies
with the zygote (its own parent-death signal): a runner killed with SIGKILL leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

__all__ = ["Zygote", "ZygoteProvisioner"]

# Runs in the zygote: import what a kernel imports, then serve fork requests (one JSON line each:
# argv, env, cwd, log) answering each with the child's pid. No thread may exist before fork().
_SERVER = r"""
import ctypes, json, os, signal, sys

def die_with_parent(expected, sig):
    # the kernel's parent-death signal (Linux); if the parent is already gone, act now
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(sig), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != expected:
        os.kill(os.getpid(), sig)

kids = set()

def end(*_):
    # the runner is gone or closed us: the kernels' whole process groups go with us
    for pid in kids:
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
    os._exit(0)

signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is the runner's to handle
signal.signal(signal.SIGTERM, end)
signal.signal(signal.SIGHUP, end)  # the terminal closed
die_with_parent(int(sys.argv[1]), signal.SIGTERM)
import ipykernel.kernelapp, ipykernel.ipkernel, IPython.core.interactiveshell
# what a kernel imports while it initialises (the debugger's debugpy alone is ≈ 0.3 s), then what
# every generated step imports; none of these starts a thread (fork() would lose it)
for name in (
    "ipykernel.debugger", "debugpy.server", "IPython.core.completerlib", "IPython.core.debugger",
    "IPython.core.oinspect", "IPython.extensions.storemagic", "tornado.queues", "tornado.locks",
    "tornado.platform.asyncio", "sqlite3", "psutil", "http.server", "pdb",
    "nb_mlops.pipeline.kernel", "blake3", "cloudpickle",
):
    try:
        __import__(name)
    except Exception:
        pass
signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernels are reaped as they die
requests, replies = sys.stdin.buffer, sys.stdout.buffer
replies.write(b"ready\n"); replies.flush()
zygote = os.getpid()
for line in requests:
    job = json.loads(line)
    ready_r, ready_w = os.pipe()
    # no SIGTERM/SIGHUP between fork() and the child's own handlers: ours kill its siblings
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGHUP})
    pid = os.fork()
    if pid == 0:
        try:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGHUP, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGHUP})
            os.close(ready_r)
            os.setsid()  # its own process group: killing the kernel kills what it starts
            die_with_parent(zygote, signal.SIGKILL)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            null = os.open(os.devnull, os.O_RDWR)
            out = os.open(job["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) if job["log"] else 2
            os.dup2(null, 0); os.dup2(out, 1); os.dup2(out, 2)
            os.chdir(job["cwd"])
            if sys.path and sys.path[0] == "":  # as ipykernel_launcher does
                del sys.path[0]
            os.environ.clear(); os.environ.update(job["env"])
            os.write(ready_w, b"1"); os.close(ready_w)
            sys.argv = ["ipykernel_launcher"] + job["argv"]
            sys.stdin = open(os.devnull)
            ipykernel.kernelapp.launch_new_instance()
        except BaseException:
            import traceback; traceback.print_exc()
            os._exit(1)
        os._exit(0)
    kids.add(pid)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGHUP})
    os.close(ready_w)
    os.read(ready_r, 1)  # the child has its own session before anyone may signal its group
    os.close(ready_r)
    replies.write(b"%d\n" % pid); replies.flush()
end()
"""


class Zygote:
    """The fork server of one executor: `spawn` returns a Popen-like handle on a new kernel."""

    def __init__(self, env: dict[str, str], cwd: str) -> None:
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._failed = False
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _SERVER, str(os.getpid())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            cwd=cwd,
        )
        threading.Thread(target=self._wait_ready, name="nb-mlops-zygote", daemon=True).start()

    def _wait_ready(self) -> None:
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        self._failed = line.strip() != b"ready"
        self._ready.set()

    def usable(self, wait: float = 0.0) -> bool:
        """Whether the zygote has finished its imports (waiting up to `wait` seconds)."""
        return self._ready.wait(wait) and not self._failed and self._proc.poll() is None

    def spawn(self, argv: list[str], env: dict[str, str], cwd: str, log: str | None) -> _Forked:
        """Fork a kernel process running `ipykernel_launcher argv` in `env` and `cwd`.

        Raises:
            OSError: the zygote is gone.
        """
        job = json.dumps({"argv": argv, "env": env, "cwd": cwd, "log": log or ""})
        with self._lock:
            assert self._proc.stdin is not None and self._proc.stdout is not None
            try:
                self._proc.stdin.write(job.encode() + b"\n")
                self._proc.stdin.flush()
                answer = self._proc.stdout.readline()
            except (OSError, ValueError) as exc:
                raise OSError(f"the kernel zygote is gone: {exc}") from None
        if not answer.strip().isdigit():
            raise OSError("the kernel zygote is gone")
        return _Forked(int(answer))

    def close(self, wait: float = 5.0) -> None:
        """Stop the zygote: at the end of its input it kills the kernels it forked that still
        run, then exits (killed after `wait` seconds if it does not)."""
        with contextlib.suppress(Exception):
            if self._proc.stdin is not None:
                self._proc.stdin.close()
        try:
            self._proc.wait(wait)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                self._proc.send_signal(signal.SIGTERM)  # its handler kills the kernels too
            try:
                self._proc.wait(1.0)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(OSError):
                    self._proc.kill()
                with contextlib.suppress(Exception):
                    self._proc.wait(5)
        with contextlib.suppress(Exception):
            if self._proc.stdout is not None:
                self._proc.stdout.close()

    @property
    def pid(self) -> int:
        return int(self._proc.pid)


class _Forked:
    """Enough of `subprocess.Popen` for jupyter_client's local provisioner."""

    stdin = stdout = stderr = None

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                os.kill(self.pid, 0)
                # a zombie still answers: it is dead all the same
                with open(f"/proc/{self.pid}/stat") as fh:
                    if fh.read().rsplit(")", 1)[1].split()[0] == "Z":
                        self.returncode = -signal.SIGKILL
            except (ProcessLookupError, FileNotFoundError, IndexError):
                self.returncode = -signal.SIGKILL  # not our child: its exit code is unknown
            except PermissionError:
                pass
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(str(self.pid), timeout or 0)
            time.sleep(0.02)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)


def _provisioner_class() -> type:
    from jupyter_client.provisioning import LocalProvisioner

    class ZygoteProvisioner(LocalProvisioner):
        """jupyter_client's local provisioner, launching through a `Zygote` fork."""

        zygote: Zygote | None = None
        log: str | None = None

        async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> Any:
            zygote = self.zygote
            # cmd is `python -m ipykernel_launcher ARGS...`: the zygote runs ipykernel_launcher
            if zygote is None or cmd[1:3] != ["-m", "ipykernel_launcher"]:
                return await super().launch_kernel(cmd, **kwargs)
            env = {str(k): str(v) for k, v in (kwargs.get("env") or os.environ).items()}
            cwd = str(kwargs.get("cwd") or os.getcwd())
            forked = zygote.spawn(cmd[3:], env, cwd, self.log)
            self.process = forked  # type: ignore[assignment]  # Popen's interface, see _Forked
            self.pid = self.pgid = forked.pid
            self.cwd = cwd
            return self.connection_info

    return ZygoteProvisioner


_CLASS: type | None = None


def ZygoteProvisioner() -> type:  # noqa: N802 - a lazily built class
    """The provisioner class (built on first use: jupyter_client is imported lazily)."""
    global _CLASS
    if _CLASS is None:
        _CLASS = _provisioner_class()
    return _CLASS


def use_zygote(km: Any, zygote: Zygote, log: str | None) -> None:
    """Make kernel manager `km` (not started yet) start its kernel through `zygote`."""
    import uuid

    km.kernel_id = km.kernel_id or str(uuid.uuid4())
    provisioner = ZygoteProvisioner()(kernel_id=km.kernel_id, kernel_spec=km.kernel_spec, parent=km)
    provisioner.zygote = zygote
    provisioner.log = log
    km.provisioner = provisioner
