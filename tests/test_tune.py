"""`python -m hymba_compile tune`: MetaSchedule over a real TVM RPC tracker with two CPU servers
on loopback, the database it writes applied by `schedules.tuned.apply_tuned`, and every bad
input (unknown family, unreachable tracker, corrupt database) one line and exit status 2 with
nothing written."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
import tvm

from hymba_compile.__main__ import main
from hymba_compile.build import Kernel, build_kernel
from hymba_compile.config import preset
from hymba_compile.tune_compare import max_difference, random_args
from hymba_compile.tune_kernels import bind_sizes
from hymba_compile.ir import norm
from hymba_compile.schedules import named_target
from hymba_compile.schedules.options import build_for
from hymba_compile.schedules.tuned import RECORD_FILE, WORKLOAD_FILE, apply_tuned, open_database
from tests.conftest import run_cli

KEY = "hymba-test"
ROWS = 64  # the tiny preset's hidden size is 64: rmsnorm over [64, 64]
TRIALS = 6


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout} s")
        time.sleep(0.3)


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def rpc_cluster(tmp_path_factory):
    """A tracker and two CPU RPC servers of key KEY on loopback, each in its own process group
    (a server forks a worker per session) killed at the end: ("127.0.0.1:port", server logs)."""
    logs = tmp_path_factory.mktemp("rpc")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    procs = []

    def start(name: str, *args: str) -> None:
        with open(logs / f"{name}.log", "w") as log:
            procs.append(subprocess.Popen([sys.executable, "-m", *args], stdout=log,
                                          stderr=subprocess.STDOUT, env=env,
                                          start_new_session=True))

    try:
        port = free_port()
        start("tracker", "tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port", str(port),
              "--port-end", str(port + 1))
        try:
            wait_for(lambda: listening(port), 60, "the tracker did not listen")
        except TimeoutError as e:  # e.g. tornado (the tracker's dependency) missing
            raise TimeoutError(f"{e}: {(logs / 'tracker.log').read_text()[-2000:]}") from None
        for i in range(2):
            server_port = free_port()
            start(f"server{i}", "tvm.exec.rpc_server", "--tracker", f"127.0.0.1:{port}",
                  "--key", KEY, "--host", "127.0.0.1", "--port", str(server_port),
                  "--port-end", str(server_port + 1))

        def both_registered() -> bool:
            info = tvm.rpc.connect_tracker("127.0.0.1", port).summary()["server_info"]
            return sum(s["key"] == f"server:{KEY}" for s in info) == 2

        wait_for(both_registered, 60, "two servers did not register")
        yield f"127.0.0.1:{port}", [logs / "server0.log", logs / "server1.log"]
    finally:
        for proc in procs:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def tuned(rpc_cluster, tmp_path_factory):
    """The tiny model's rmsnorm tuned over the cluster: (database folder, JSON summary)."""
    tracker, _ = rpc_cluster
    folder = tmp_path_factory.mktemp("tuned")
    db, summary = folder / "db", folder / "summary.json"
    code = main(["tune", "--model", "tiny", "--kernels", "rmsnorm", "--trials", str(TRIALS),
                 "--prefill-rows", str(ROWS), "--out", str(db), "--rpc-tracker", tracker,
                 "--rpc-key", KEY, "--json", str(summary)])
    assert code == 0
    return db, json.loads(summary.read_text())


def rmsnorm_static():
    """The tiny program's rmsnorm as ir/ builds it, rows bound to ROWS (what was tuned)."""
    c = preset("tiny")
    func = build_for(norm.rmsnorm, (c.hidden_size, "float32", c.rms_norm_eps), named_target())
    return func, bind_sizes(func, {"n": ROWS})


def test_both_servers_measured(rpc_cluster, tuned):
    _, logs = rpc_cluster
    loads = [log.read_text().count("load_module") for log in logs]
    assert all(n >= 1 for n in loads), f"candidates loaded per server: {loads}"
    _, summary = tuned
    [row] = summary["kernels"]
    assert row["family"] == "rmsnorm" and row["sizes"] == {"n": ROWS}
    assert 1 <= row["valid_trials"] <= row["trials"] <= TRIALS and row["best_ms"] > 0
    assert row["ok"] and row["max_rel_diff"] <= 1e-4 and row["tuned_ms"] > 0
    assert summary["measured_on"].startswith("RPC tracker")


def test_database_applies_and_matches_the_reference(tuned):
    db, _ = tuned
    func, static = rmsnorm_static()
    target = named_target()
    assert apply_tuned(func, target, db) is None  # symbolic rows: tuned only at ROWS
    sch = apply_tuned(static, target, db)
    assert sch is not None
    tuned_kernel = Kernel("rmsnorm", "tuned", "cpu", tvm.compile(sch.mod, target=target).mod)
    reference = build_kernel(func, "cpu", "unscheduled")
    args = random_args(static, torch.device("cpu"), seed=3)
    ref, out = [a.clone() for a in args], [a.clone() for a in args]
    reference(*ref)
    tuned_kernel(*out)
    _, rel = max_difference(ref, out)
    assert rel <= 1e-4


def test_no_database_is_no_schedule(tmp_path):
    _, static = rmsnorm_static()
    assert apply_tuned(static, named_target(), tmp_path / "none") is None


def test_unknown_family_is_one_error(capsys, tmp_path):
    code, _, err = run_cli(capsys, "tune", "--model", "tiny", "--kernels", "rmsnorm", "bogus",
                           "--trials", "2", "--out", str(tmp_path / "db"))
    assert code == 2
    assert err.startswith("error: unknown kernel family bogus;") and err.count("\n") == 1
    assert "rmsnorm" in err and "matmul" in err  # the known ones are listed
    assert not (tmp_path / "db").exists()


def test_unreachable_tracker_is_one_error(capsys, tmp_path):
    code, _, err = run_cli(capsys, "tune", "--model", "tiny", "--kernels", "rmsnorm",
                           "--trials", "2", "--out", str(tmp_path / "db"),
                           "--rpc-tracker", f"127.0.0.1:{free_port()}", "--rpc-key", KEY)
    assert code == 2 and "is unreachable" in err and err.count("\n") == 1
    assert not (tmp_path / "db").exists()


def test_tracker_without_the_key_is_one_error(capsys, rpc_cluster, tmp_path):
    tracker, _ = rpc_cluster
    code, _, err = run_cli(capsys, "tune", "--model", "tiny", "--kernels", "rmsnorm",
                           "--trials", "2", "--out", str(tmp_path / "db"),
                           "--rpc-tracker", tracker, "--rpc-key", "no-such-key")
    assert code == 2 and f"no server for key 'no-such-key'; keys there: {KEY}" in err


def test_corrupt_database_is_one_error(capsys, tuned, tmp_path):
    db, _ = tuned
    corrupt = tmp_path / "db"
    shutil.copytree(db, corrupt)
    with open(corrupt / RECORD_FILE, "a") as f:
        f.write('[0, [["half a record\n')
    before = {p.name: p.read_bytes() for p in corrupt.iterdir()}
    code, _, err = run_cli(capsys, "tune", "--model", "tiny", "--kernels", "rmsnorm",
                           "--trials", "2", "--out", str(corrupt))
    assert code == 2 and err.startswith(f"error: tuning database {corrupt} is corrupt")
    assert err.count("\n") == 1
    assert {p.name: p.read_bytes() for p in corrupt.iterdir()} == before


def test_incomplete_database_is_refused(tuned, tmp_path):
    db, _ = tuned
    shutil.copy(db / WORKLOAD_FILE, tmp_path / WORKLOAD_FILE)
    with pytest.raises(ValueError, match="incomplete"):
        open_database(tmp_path)


def test_a_failed_run_leaves_the_database_as_it_was(capsys, tuned, tmp_path, monkeypatch):
    import hymba_compile.tune as tune_module

    db, _ = tuned
    dest = tmp_path / "db"
    shutil.copytree(db, dest)
    before = {p.name: p.read_bytes() for p in dest.iterdir()}

    def fail(*args, **kwargs):
        raise RuntimeError("killed mid-run")

    monkeypatch.setattr(tune_module, "_tune_one", fail)
    with pytest.raises(RuntimeError, match="killed mid-run"):
        main(["tune", "--model", "tiny", "--kernels", "rmsnorm", "--trials", "2",
              "--out", str(dest)])
    assert {p.name: p.read_bytes() for p in dest.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["db"]  # no staging folder left
