"""A step kernel that dies while starting is started again: no user code ran, so nothing is lost.

The fault is real: the port jupyter_client hands the kernel is already bound by another socket
(what any process's outgoing connection may do between the pick and the kernel's bind), so the
kernel process exits with "Address already in use" before it answers.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.connect import LocalPortCache

from nb_mlops.pipeline import execute
from nb_mlops.pipeline.execute import KernelDiedAtStart, kernel_env, start_kernel, stop_kernel
from nb_mlops.pipeline.zygote import Zygote


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port some other socket holds on the kernel's address."""
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    yield int(holder.getsockname()[1])
    holder.close()


def hand_out_taken_port(monkeypatch: pytest.MonkeyPatch, port: int, times: int) -> list[int]:
    """The next `times` kernel starts are given `port` as their shell port; returns the count."""
    real = LocalPortCache.find_available_port
    given = [0]

    def find_available_port(self: Any, ip: str) -> int:
        picks = getattr(self, "_test_picks", 0)
        self._test_picks = picks + 1
        if picks % 5 == 0 and given[0] < times:  # the first of each kernel's five ports
            given[0] += 1
            return port
        return int(real(self, ip))

    monkeypatch.setattr(LocalPortCache, "find_available_port", find_available_port)
    return given


def answer(km: Any) -> str:
    client = km.blocking_client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=60)
        reply = client.execute_interactive("print(6 * 7)", timeout=60, output_hook=_collect)
        assert reply["content"]["status"] == "ok"
        return "".join(_OUT)
    finally:
        client.stop_channels()


_OUT: list[str] = []


def _collect(msg: dict[str, Any]) -> None:
    if msg["msg_type"] == "stream":
        _OUT.append(msg["content"]["text"])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.parametrize("forked", [False, True], ids=["launched", "forked"])
def test_a_kernel_that_cannot_bind_its_port_is_started_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, taken_port: int, forked: bool
) -> None:
    # Given the first kernel start handed a port another socket holds
    env = kernel_env({})
    zygote = Zygote(env, str(tmp_path)) if forked else None
    given = hand_out_taken_port(monkeypatch, taken_port, times=1)
    log = tmp_path / "kernels.log"
    _OUT.clear()
    try:
        # When a step kernel starts
        km = start_kernel(env, str(tmp_path), 60, log=str(log), zygote=zygote, zygote_wait=60)
        try:
            # Then it answers after a second start, and the kernel log says why
            assert given[0] == 1
            assert answer(km) == "42\n"
            text = log.read_text()
            assert "Address already in use" in text
            assert "the kernel died while starting; start 2" in text
        finally:
            stop_kernel(km)
    finally:
        if zygote is not None:
            zygote.close()


def test_a_kernel_that_never_starts_fails_with_the_reason_and_leaves_nothing_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, taken_port: int
) -> None:
    # Given every start handed a port another socket holds
    given = hand_out_taken_port(monkeypatch, taken_port, times=10**6)
    started: list[int] = []
    real_stop = execute.stop_kernel

    def stop_and_remember(km: Any) -> None:
        pid = execute._pid(km)
        if pid:
            started.append(pid)
        real_stop(km)

    monkeypatch.setattr(execute, "stop_kernel", stop_and_remember)
    # When a step kernel starts, Then it fails after the allowed attempts, saying why
    with pytest.raises(KernelDiedAtStart, match="died before replying"):
        start_kernel(kernel_env({}), str(tmp_path), 60, log=str(tmp_path / "kernels.log"))
    assert given[0] == execute.START_ATTEMPTS == len(started)
    # And no kernel process it started is left running
    assert not [pid for pid in started if alive(pid)]
