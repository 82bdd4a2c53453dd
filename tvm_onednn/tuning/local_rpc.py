"""A throw-away RPC tracker with servers on this machine (127.0.0.1), for tests and tutorials.

Each process runs ``python -m tvm.exec.rpc_tracker`` / ``rpc_server`` in its own process
group, so that stopping it also stops the workers a server forks per session.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from .rpc import RPCTrackerError, check_tracker

__all__ = ["free_port_pair", "local_tracker"]

HOST = "127.0.0.1"


def free_port_pair() -> int:
    """A localhost port P with P+1 free too (what ``--port P --port-end P+1`` binds)."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind((HOST, 0))
            port = s.getsockname()[1]
        if port >= 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind((HOST, port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no free pair of localhost ports")


def _commands(port: int, key: str, servers: int) -> list[tuple[str, list[str]]]:
    """``(name, python -m arguments)`` of the tracker on ``port`` and its servers."""
    address = f"{HOST}:{port}"
    commands = [
        ("tracker", ["tvm.exec.rpc_tracker", "--host", HOST, "--port", str(port),
                     "--port-end", str(port + 1)]),
    ]  # fmt: skip
    for i in range(servers):
        q = free_port_pair()
        commands.append(
            (f"server{i}", ["tvm.exec.rpc_server", "--host", HOST, "--port", str(q),
                            "--port-end", str(q + 1), "--tracker", address, "--key", key])
        )  # fmt: skip
    return commands


def _stop(procs: list[subprocess.Popen]) -> None:
    """SIGTERM every process group, SIGKILL what is still there after 10 s."""
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@contextlib.contextmanager
def local_tracker(
    key: str,
    servers: int = 2,
    timeout: float = 180.0,
    log_dir: Path | None = None,
    echo: bool = False,
) -> Iterator[str]:
    """A tracker with ``servers`` servers under ``key``; yields the tracker's ``host:port``.

    Waits (up to ``timeout`` seconds: importing TVM takes a while on a loaded machine) until
    every server has registered. ``log_dir`` keeps each process's output (else discarded);
    ``echo`` prints the commands. Raises RuntimeError naming the logs if they do not start.
    """
    port = free_port_pair()
    address = f"{HOST}:{port}"
    where = f"; logs in {log_dir}" if log_dir else ""
    procs: list[subprocess.Popen] = []
    try:
        for name, command in _commands(port, key, servers):
            if echo:
                print("$ python -m " + " ".join(command))
            sink = contextlib.nullcontext(subprocess.DEVNULL)
            with open(log_dir / f"{name}.log", "wb") if log_dir else sink as log:
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", *command],
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        deadline = time.monotonic() + timeout
        while True:
            dead = [" ".join(p.args[2:4]) for p in procs if p.poll() is not None]
            if dead:
                raise RuntimeError(f"RPC processes exited early: {dead}{where}")
            with contextlib.suppress(RPCTrackerError):
                if check_tracker(address, key, timeout=2).servers == servers:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"RPC servers not registered after {timeout:.0f} s{where}")
            time.sleep(1)
        yield address
    finally:
        _stop(procs)
