"""The protos lint clean with buf, and buf curl — an outside gRPC client, grpcurl's
stand-in here — lists exactly the services of proto/ through reflection."""

from __future__ import annotations

import re
import subprocess

from tests.helpers import ROOT
from tests.helpers.cluster import NODE_SERVICES
from tests.peers.tools import require_tool
from tools.localcluster import Cluster


def test_protos_lint_clean():
    buf = require_tool("buf", npm=True)
    run = subprocess.run([buf, "lint"], cwd=ROOT / "proto", capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_buf_curl_lists_the_services_of_the_protos(tmp_path):
    buf = require_tool("buf", npm=True)
    declared = set()
    for proto in (ROOT / "proto").glob("dr/v1/*.proto"):
        text = proto.read_text()
        declared |= {f"dr.v1.{s}" for s in re.findall(r"^service (\w+)", text, re.M)}
    declared -= NODE_SERVICES
    c = Cluster(tmp_path)
    c.start_control()
    try:
        base = [buf, "curl", "--protocol", "grpc", "--http2-prior-knowledge"]
        run = subprocess.run([*base, "--list-services", f"http://{c.address}"],
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        listed = set(run.stdout.split())
        assert listed - {"grpc.health.v1.Health",
                         "grpc.reflection.v1alpha.ServerReflection"} == declared
        health = subprocess.run([*base, "-d", "{}",
                                 f"http://{c.address}/grpc.health.v1.Health/Check"],
                                capture_output=True, text=True, timeout=60)
        assert '"status": "SERVING"' in health.stdout, health.stdout + health.stderr
    finally:
        c.stop()
