"""A local cluster: real dr-control and dr-node processes on loopback ports, used by the
tests and by `make demo`.

Readiness is checked, never assumed: the control plane is ready when its gRPC health
check answers SERVING; a node when the control plane lists it online.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dr_common.proto.dr.v1 import nodes_pb2, nodes_pb2_grpc, protection_pb2_grpc
from dr_control.cli.main import main as drctl_main

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, *, timeout: float = 30.0, interval: float = 0.05, what: str = ""):
    """Polls `predicate` until it returns something truthy; fails with `what` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


class Cluster:
    """One control plane and any number of nodes, all in `root`."""

    def __init__(self, root: Path, *, lease_seconds: int = 30,
                 checkpoint_interval: int = 500_000_000, node_env: dict | None = None,
                 metrics: bool = False):
        self.root = root
        self.src = root / "src"
        self.repo = root / "repo"
        self.out = root / "out"
        for d in (self.src, self.repo, self.out):
            d.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.control: subprocess.Popen | None = None
        self.nodes: dict[str, subprocess.Popen] = {}
        self.metrics = metrics
        self.control_metrics_port = free_port() if metrics else -1
        self.control_env = {
            "DR_CONTROL_LISTEN": self.address,
            "DR_CONTROL_STATE_DIR": str(root / "state"),
            "DR_CONTROL_FILE_ROOTS": str(root),
            "DR_CONTROL_METRICS_PORT": str(self.control_metrics_port),
            "DR_CONTROL_SCHEDULER__TICK_SECONDS": "0.2",
            "DR_CONTROL_SCHEDULER__LEASE_SECONDS": str(lease_seconds),
            "DR_CONTROL_SCHEDULER__CHECKPOINT_INTERVAL_BYTES": str(checkpoint_interval),
        }
        self.node_env = {
            "DR_NODE_CONTROL": self.address,
            "DR_NODE_FILE_ROOTS": str(root),
            "DR_NODE_METRICS_PORT": "-1",
            "DR_NODE_HEARTBEAT_SECONDS": "1",
            "DR_NODE_ENGINE__PROGRESS_SECONDS": "0.2",
            **(node_env or {}),
        }
        self.channel = grpc.insecure_channel(self.address)
        self.protection = protection_pb2_grpc.ProtectionServiceStub(self.channel)
        self.nodes_api = nodes_pb2_grpc.NodeServiceStub(self.channel)

    def _spawn(self, program: str, env: dict, log: str) -> subprocess.Popen:
        out = open(self.root / log, "ab")
        return subprocess.Popen([str(BIN / program)], env={**os.environ, **env},
                                stdout=out, stderr=subprocess.STDOUT)

    def start_control(self) -> None:
        self.control = self._spawn("dr-control", self.control_env, "control.log")
        health = health_pb2_grpc.HealthStub(self.channel)

        def serving():
            if self.control.poll() is not None:
                raise AssertionError(f"dr-control exited: {self.log('control.log')}")
            with contextlib.suppress(grpc.RpcError):
                return health.Check(health_pb2.HealthCheckRequest(), timeout=1).status == \
                    health_pb2.HealthCheckResponse.SERVING
        wait_for(serving, what="dr-control to serve")

    def start_node(self, node_id: str = "n1", **env: str) -> subprocess.Popen:
        if self.metrics:
            env.setdefault("DR_NODE_METRICS_PORT", str(free_port()))
        proc = self._spawn("dr-node", {**self.node_env, "DR_NODE_NODE_ID": node_id, **env},
                           f"node-{node_id}.log")
        proc.metrics_port = int(env.get("DR_NODE_METRICS_PORT", -1))
        self.nodes[node_id] = proc

        def online():
            if proc.poll() is not None:
                raise AssertionError(f"dr-node exited: {self.log(f'node-{node_id}.log')}")
            nodes = self.nodes_api.ListNodes(nodes_pb2.ListNodesRequest(), timeout=5).nodes
            return any(n.name == f"nodes/{node_id}" and n.state == "online" for n in nodes)
        wait_for(online, what=f"node {node_id} to register")
        return proc

    def restart_control(self) -> None:
        """SIGTERM (a clean stop), then start again on the same port and database."""
        self.control.terminate()
        assert self.control.wait(30) == 0, self.log("control.log")
        self.start_control()

    def kill_node(self, node_id: str, sig: int = signal.SIGKILL, timeout: float = 30) -> int:
        proc = self.nodes.pop(node_id)
        proc.send_signal(sig)
        return proc.wait(timeout)

    def log(self, name: str) -> str:
        path = self.root / name
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def drctl(self, *args: str, check: bool = True) -> tuple[int, str, str]:
        """Runs drctl in-process against this cluster; returns (exit code, stdout, stderr)."""
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = drctl_main(["--server", self.address, *args])
        if check and code != 0:
            raise AssertionError(f"drctl {' '.join(args)} exited {code}: {err.getvalue()}")
        return code, out.getvalue(), err.getvalue()

    def drctl_json(self, *args: str):
        return json.loads(self.drctl(*args, "--output", "json")[1])

    def points(self, plan: str) -> list[dict]:
        return self.drctl_json("point", "list", plan)

    def cycles(self, plan: str) -> list[dict]:
        return self.drctl_json("plan", "cycles", plan)

    def __enter__(self) -> "Cluster":
        """Starts the control plane and one node, n1; stops everything on exit."""
        try:
            self.start_control()
            self.start_node("n1")
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        for node_id in list(self.nodes):
            proc = self.nodes.pop(node_id)
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(30)
            if proc.poll() is None:
                proc.kill()
        if self.control is not None:
            self.control.terminate()
            try:
                self.control.wait(30)
            except subprocess.TimeoutExpired:
                self.control.kill()
        self.channel.close()
