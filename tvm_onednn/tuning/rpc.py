"""Measuring tuning candidates on RPC servers behind TVM's RPC tracker.

Candidates are built locally; MetaSchedule's ``RPCRunner`` uploads each one to a server
registered under a key with TVM's tracker (``python -m tvm.exec.rpc_tracker`` /
``python -m tvm.exec.rpc_server --tracker HOST:PORT --key KEY``) and times it there.

MetaSchedule's runner only finds out that the tracker is unreachable (or that no server
has the key) when it measures, in its worker process, and the search then goes on with
every measurement failed (or waits for a server forever). :func:`check_tracker` asks the
tracker first, with a short socket timeout, and raises :class:`RPCTrackerError` naming
the address and key.
"""

from __future__ import annotations

import socket
import struct
import sys
from dataclasses import dataclass

#: Seconds the tracker may take to accept a connection and answer the summary request.
CHECK_TIMEOUT_S = 5.0


class RPCTrackerError(ValueError):
    """The tracker does not answer, or no server is registered under the key."""


@dataclass(frozen=True)
class TrackerStatus:
    """What the tracker said about one key."""

    host: str
    port: int
    key: str
    servers: int  # registered under the key, free or busy
    free: int
    pending: int  # requests waiting for a server of this key

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def __str__(self) -> str:
        return (
            f"RPC tracker {self.address}, key {self.key!r}: {self.servers} server(s), "
            f"{self.free} free"
        )


def parse_tracker_address(address: str) -> tuple[str, int]:
    """``"host:port"`` -> ``(host, port)``; ``ValueError`` for anything else."""
    host, sep, port = str(address).strip().rpartition(":")
    host = host.strip("[]")  # [::1]:9190
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(
            f"bad RPC tracker address {address!r}: expected HOST:PORT, e.g. 127.0.0.1:9190"
        )
    return host, int(port)


def _query_summary(host: str, port: int, timeout: float) -> dict:
    """The tracker's summary dict (the ``TrackerSession.summary`` protocol, with timeouts)."""
    from tvm.rpc import base

    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(struct.pack("<i", base.RPC_TRACKER_MAGIC))
        magic = struct.unpack("<i", base.recvall(sock, 4))[0]
        if magic != base.RPC_TRACKER_MAGIC:
            raise RPCTrackerError(f"{host}:{port} answers, but is not a TVM RPC tracker")
        base.sendjson(sock, [base.TrackerCode.SUMMARY])
        value = base.recvjson(sock)
        if not value or value[0] != base.TrackerCode.SUCCESS:
            raise RPCTrackerError(f"RPC tracker {host}:{port} refused the summary request")
        return value[1]


def check_tracker(address: str, key: str, timeout: float = CHECK_TIMEOUT_S) -> TrackerStatus:
    """Check that the tracker at ``address`` answers and has a server under ``key``.

    Raises ``ValueError`` for a bad address string and :class:`RPCTrackerError` when the
    tracker does not answer within ``timeout`` seconds or no server (free or busy) is
    registered under ``key``. Returns what the tracker said.
    """
    host, port = parse_tracker_address(address)
    if not key:
        raise ValueError("an RPC tracker needs a key (--rpc-key): the servers' --key")
    try:
        summary = _query_summary(host, port, timeout)
    except RPCTrackerError:
        raise
    except (OSError, ConnectionError, struct.error, ValueError) as err:
        reason = "no answer" if isinstance(err, socket.timeout) else str(err) or type(err).__name__
        raise RPCTrackerError(
            f"RPC tracker {host}:{port} does not answer ({reason}); start it with "
            f"`python -m tvm.exec.rpc_tracker --host {host} --port {port} --port-end {port + 1}`"
        ) from None
    servers = [
        s for s in summary.get("server_info", []) if s.get("key", "").split(":", 1)[-1] == key
    ]
    queue = summary.get("queue_info", {}).get(key, {})
    status = TrackerStatus(
        host, port, key, len(servers), int(queue.get("free", 0)), int(queue.get("pending", 0))
    )
    if not servers:
        known = sorted(
            {s.get("key", "").split(":", 1)[-1] for s in summary.get("server_info", [])} - {""}
        )
        others = f"; keys with servers: {', '.join(known)}" if known else "; it has no servers"
        raise RPCTrackerError(
            f"RPC tracker {host}:{port} has no server under key {key!r}{others}"
        )
    return status


def remote_run_evaluator(num_threads: int):
    """MetaSchedule's default run evaluator, after sizing the remote TVM thread pool.

    Remote measurements then use the target's ``num-cores`` threads, as local ones do.
    """

    def run_evaluator(session, rt_mod, device, evaluator_config, repeated_args):
        from tvm.s_tir.meta_schedule.runner.rpc_runner import default_run_evaluator

        session.get_function("runtime.config_threadpool")(1, num_threads)
        return default_run_evaluator(session, rt_mod, device, evaluator_config, repeated_args)

    return run_evaluator


def rpc_runner(status: TrackerStatus, num_threads: int, timeout_sec: float):
    """An ``RPCRunner`` measuring on the servers of ``status.key``, one worker per server."""
    import cloudpickle
    from tvm.s_tir import meta_schedule as ms

    # The run evaluator is pickled by value: runner workers need not import tvm_onednn.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    return ms.runner.RPCRunner(
        rpc_config=ms.runner.RPCConfig(
            tracker_host=status.host,
            tracker_port=status.port,
            tracker_key=status.key,
            session_priority=1,
            session_timeout_sec=int(max(1, round(timeout_sec))),
        ),
        f_run_evaluator=remote_run_evaluator(num_threads),
        max_workers=max(1, status.servers),
    )
