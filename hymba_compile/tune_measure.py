"""Where MetaSchedule builds and measures candidates: builds always here, measurements here or
on the servers of an RPC tracker."""

from __future__ import annotations

import os
import socket

import tvm
from tvm.s_tir import meta_schedule as ms

from .errors import InputError

BUILD_TIMEOUT_S = 60.0  # per candidate, a builder process's start (~5 s) included
RUN_TIMEOUT_S = 30.0  # per candidate (MetaSchedule's default): at least 3 timed runs
SESSION_TIMEOUT_S = 60  # per candidate on an RPC server: upload and load, then the runs
CONNECT_TIMEOUT_S = 3.0


def build_candidate(mod: tvm.IRModule, target: tvm.target.Target, _params) -> tvm.runtime.Module:
    """MetaSchedule's default build (`builder.default_build`) without its import of every
    tensor intrinsic, which costs ~25 s in each fresh builder process (the CUDA ones): a
    candidate's tensorized blocks already hold the intrinsics' code."""
    from tvm.driver import build  # noqa: PLC0415 - in the builder process
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock  # noqa: PLC0415

    return build(RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod), target=target)


def physical_cores() -> int:
    import psutil  # noqa: PLC0415 - MetaSchedule needs it anyway

    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


def tuning_target(target: tvm.target.Target) -> tvm.target.Target:
    """`target` with the "num-cores" MetaSchedule requires (this machine's physical cores)."""
    config = dict(target.export())
    config.setdefault("num-cores", physical_cores())
    return tvm.target.Target(config)


def builder() -> ms.builder.LocalBuilder:
    return ms.builder.LocalBuilder(timeout_sec=BUILD_TIMEOUT_S, f_build=build_candidate)


def parse_tracker(text: str) -> tuple[str, int]:
    """(host, port) from HOST:PORT; InputError otherwise."""
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InputError(f"--rpc-tracker {text!r}: expected HOST:PORT, e.g. 127.0.0.1:9190")
    return host, int(port)


def tracker_servers(host: str, port: int, key: str) -> int:
    """How many servers of `key` the tracker at host:port has (busy or free); InputError when
    it cannot be reached, is not a TVM tracker, or has none of that key."""
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as e:
        raise InputError(f"RPC tracker {host}:{port} is unreachable: {e.strerror or e}") from None
    try:
        summary = tvm.rpc.connect_tracker(host, port).summary()
    except (RuntimeError, OSError) as e:
        raise InputError(f"{host}:{port} does not answer as a TVM RPC tracker: {e}") from None
    servers = [s for s in summary.get("server_info", []) if s.get("key") == f"server:{key}"]
    if not servers:
        keys = sorted({s.get("key", "").removeprefix("server:")
                       for s in summary.get("server_info", [])})
        raise InputError(f"RPC tracker {host}:{port} has no server for key {key!r}; keys there: "
                         f"{', '.join(keys) or 'none'}")
    return len(servers)


def runner(rpc_tracker: str | None, rpc_key: str | None) -> ms.runner.Runner:
    """A LocalRunner, or an RPCRunner over the tracker's servers of `rpc_key` (one measuring
    worker per server)."""
    if rpc_tracker is None and rpc_key is None:
        return ms.runner.LocalRunner(timeout_sec=RUN_TIMEOUT_S)
    if rpc_tracker is None or not rpc_key:
        raise InputError("--rpc-tracker HOST:PORT and --rpc-key KEY go together")
    host, port = parse_tracker(rpc_tracker)
    count = tracker_servers(host, port, rpc_key)
    config = ms.runner.RPCConfig(tracker_host=host, tracker_port=port, tracker_key=rpc_key,
                                 session_timeout_sec=SESSION_TIMEOUT_S)
    return ms.runner.RPCRunner(rpc_config=config, max_workers=count)
