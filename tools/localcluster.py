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
from dr_common import tls as dr_tls
from dr_control.cli.client import TlsFiles, open_channel
from dr_control.cli.main import main as drctl_main

BIN = Path(sys.executable).parent
# The checkout this module is in: the daemons run its code, not whichever checkout the
# venv's editable install points at (git worktrees share one venv).
SOURCE_ROOT = Path(__file__).resolve().parents[1]


def daemon_env(env: dict) -> dict:
    """The environment of a daemon process: ours, `env`, and SOURCE_ROOT first on its
    import path."""
    path = os.pathsep.join(filter(None, [str(SOURCE_ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, **env, "PYTHONPATH": path}


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
                 metrics: bool = False, database_url: str = "", tls: bool = False,
                 auth: bool = False):
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
        self.rest_port = free_port()
        self.rest_url = f"http://127.0.0.1:{self.rest_port}"
        self.control_env = {
            "DR_CONTROL_LISTEN": self.address,
            "DR_CONTROL_STATE_DIR": str(root / "state"),
            "DR_CONTROL_FILE_ROOTS": str(root),
            "DR_CONTROL_METRICS_PORT": str(self.control_metrics_port),
            # REST API and web UI (dr_control.rest) of the first control process.
            "DR_CONTROL_REST_LISTEN": f"127.0.0.1:{self.rest_port}",
            "DR_CONTROL_SCHEDULER__TICK_SECONDS": "0.2",
            "DR_CONTROL_SCHEDULER__LEASE_SECONDS": str(lease_seconds),
            "DR_CONTROL_SCHEDULER__CHECKPOINT_INTERVAL_BYTES": str(checkpoint_interval),
        }
        if database_url:  # e.g. PostgreSQL, shared by replicas (start_control(name=...))
            self.control_env["DR_CONTROL_DATABASE_URL"] = database_url
        # Further control replicas by name (start_control("b")); "" is self.control.
        self.replicas: dict[str, subprocess.Popen] = {}
        self.node_env = {
            "DR_NODE_CONTROL": self.address,
            "DR_NODE_FILE_ROOTS": str(root),
            "DR_NODE_METRICS_PORT": "-1",
            "DR_NODE_HEARTBEAT_SECONDS": "1",
            "DR_NODE_ENGINE__PROGRESS_SECONDS": "0.2",
            **(node_env or {}),
        }
        # tls: mutual TLS with certificates from dr_common.tls in root/certs; auth: API
        # tokens required, the cluster itself using an admin token made with
        # `dr-control token create` (the bootstrap path an operator takes).
        self.certs = root / "certs" if tls else None
        self.tls_files: TlsFiles | None = None
        self.admin_token_file: Path | None = None
        if tls:
            self._setup_tls()
        if auth:
            self.control_env["DR_CONTROL_AUTH__ENABLED"] = "true"
            self.admin_token_file = self.create_token("localcluster", "admin")
        self.channel = self._open(self.address)
        self.protection = protection_pb2_grpc.ProtectionServiceStub(self.channel)
        self.nodes_api = nodes_pb2_grpc.NodeServiceStub(self.channel)

    def _open(self, address: str) -> grpc.Channel:
        """A channel as drctl would open it: the cluster's TLS files and admin token."""
        token = self.admin_token_file.read_text().strip() if self.admin_token_file else ""
        return open_channel(address, tls_files=self.tls_files, token=token)

    def _setup_tls(self) -> None:
        dr_tls.init_dir(self.certs, server_names=list(dr_tls.DEFAULT_SERVER_NAMES), nodes=[])
        cert, key = dr_tls.client_file_names(dr_tls.DRCTL_NAME)
        self.tls_files = TlsFiles(str(self.certs / dr_tls.CA_CERT), str(self.certs / cert),
                                  str(self.certs / key))
        self.control_env.update({
            "DR_CONTROL_TLS_CERT_FILE": str(self.certs / dr_tls.SERVER_CERT),
            "DR_CONTROL_TLS_KEY_FILE": str(self.certs / dr_tls.SERVER_KEY),
            "DR_CONTROL_TLS_CLIENT_CA_FILE": str(self.certs / dr_tls.CA_CERT),
        })
        self.node_env["DR_NODE_TLS_CA_FILE"] = str(self.certs / dr_tls.CA_CERT)

    def node_tls_env(self, node_id: str, certs: Path | None = None) -> dict[str, str]:
        """A node's certificate settings, issued from the CA in `certs` (default: ours)."""
        certs = certs or self.certs
        cert, key = dr_tls.client_file_names(node_id)
        if not (certs / cert).exists():
            dr_tls.add_client(certs, node_id)
        return {"DR_NODE_TLS_CERT_FILE": str(certs / cert),
                "DR_NODE_TLS_KEY_FILE": str(certs / key)}

    def create_token(self, name: str, role: str) -> Path:
        """A token made with `dr-control token create`; returns the file holding its secret."""
        run = subprocess.run([str(BIN / "dr-control"), "token", "create", "--name", name,
                              "--role", role], env=daemon_env(self.control_env),
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        path = self.root / f"{name}.token"
        path.write_text(run.stdout.strip() + "\n")
        path.chmod(0o600)
        return path

    def _spawn(self, program: str, env: dict, log: str) -> subprocess.Popen:
        out = open(self.root / log, "ab")
        return subprocess.Popen([str(BIN / program)], env=daemon_env(env),
                                stdout=out, stderr=subprocess.STDOUT)

    def start_control(self, name: str = "") -> subprocess.Popen:
        """Starts the control plane, or with a `name` another replica of it on its own
        port, state dir and log (control-NAME.log), sharing the database (give the
        Cluster a PostgreSQL `database_url`) and the credentials key. Each process gets
        .address, .metrics_port and .log_name."""
        env, log_name, address = self.control_env, "control.log", f"127.0.0.1:{self.port}"
        metrics_port = self.control_metrics_port
        if name:
            address = f"127.0.0.1:{free_port()}"
            metrics_port = free_port() if self.metrics else -1
            log_name = f"control-{name}.log"
            env = {**env, "DR_CONTROL_LISTEN": address,
                   "DR_CONTROL_STATE_DIR": str(self.root / f"state-{name}"),
                   "DR_CONTROL_SECRET_KEY_FILE": str(self.root / "state" / "secret.key"),
                   "DR_CONTROL_METRICS_PORT": str(metrics_port),
                   "DR_CONTROL_REST_LISTEN": f"127.0.0.1:{free_port()}"}
        proc = self._spawn("dr-control", env, log_name)
        proc.address, proc.metrics_port, proc.log_name = address, metrics_port, log_name
        if name:
            self.replicas[name] = proc
        else:
            self.control = proc
        channel = self._open(address)
        health = health_pb2_grpc.HealthStub(channel)

        def serving():
            if proc.poll() is not None:
                raise AssertionError(f"dr-control exited: {self.log(log_name)}")
            with contextlib.suppress(grpc.RpcError):
                return health.Check(health_pb2.HealthCheckRequest(), timeout=1).status == \
                    health_pb2.HealthCheckResponse.SERVING
        try:
            wait_for(serving, what=f"dr-control {name} to serve")
        finally:
            channel.close()
        return proc

    def controls(self) -> dict[str, subprocess.Popen]:
        """Every control process started, running or not: "" (the first) and replicas."""
        return {**({"": self.control} if self.control else {}), **self.replicas}

    def use_control(self, name: str) -> None:
        """Points drctl and the API stubs at another replica (e.g. after killing one)."""
        self.address = self.controls()[name].address
        self.channel.close()
        self.channel = self._open(self.address)
        self.protection = protection_pb2_grpc.ProtectionServiceStub(self.channel)
        self.nodes_api = nodes_pb2_grpc.NodeServiceStub(self.channel)

    def start_node(self, node_id: str = "n1", *, site: str = "", transfer_port: int = 0,
                   advertise: str = "", **env: str) -> subprocess.Popen:
        """Starts a node and waits until it is online. `site`: the site it sits in
        (paired topology, docs/PAIRED.md); `transfer_port`: a target node's
        TransferService port on loopback (free_port() gives one); `advertise`: the
        address source nodes dial instead (e.g. an emulated WAN in front of it)."""
        if site:
            env.setdefault("DR_NODE_SITE", site)
        if transfer_port:
            env.setdefault("DR_NODE_TRANSFER__LISTEN", f"127.0.0.1:{transfer_port}")
        if advertise:
            env.setdefault("DR_NODE_TRANSFER__ADVERTISE", advertise)
        if self.metrics:
            env.setdefault("DR_NODE_METRICS_PORT", str(free_port()))
        if self.certs is not None:
            env = {**self.node_tls_env(node_id), **env}
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

    def drctl(self, *args: str, check: bool = True, token_file: Path | None = None
              ) -> tuple[int, str, str]:
        """Runs drctl in-process against this cluster; returns (exit code, stdout, stderr).

        With auth, it uses `token_file` (default: the cluster's admin token)."""
        out, err = io.StringIO(), io.StringIO()
        security: list[str] = []
        if self.tls_files is not None:
            security += ["--ca-file", self.tls_files.ca_file, "--cert-file",
                         self.tls_files.cert_file, "--key-file", self.tls_files.key_file]
        if token_file or self.admin_token_file:
            security += ["--token-file", str(token_file or self.admin_token_file)]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = drctl_main(["--server", self.address, *security, *args])
        if check and code != 0:
            raise AssertionError(f"drctl {' '.join(args)} exited {code}: {err.getvalue()}")
        return code, out.getvalue(), err.getvalue()

    def add_paired_site(self, site_id: str = "recovery") -> Path:
        """Adds a paired file site (its storage reachable only from its own nodes) whose
        directory, root/site_id, is the repository of fs plans targeting it."""
        path = self.root / site_id
        path.mkdir(parents=True, exist_ok=True)
        self.drctl("site", "add", site_id, "--kind", "file", "--path", str(path), "--paired")
        return path

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
        for proc in self.controls().values():
            if proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.channel.close()
