"""Driving a `tools.localcluster.Cluster` (real dr-control and dr-node processes): a
file-to-file plan, a point of it to recover, waiting for recovery points, and the
REST API, and the daemons' /metrics."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

from tests.helpers.disks import MiB, make_disk
from tools.localcluster import Cluster, wait_for

# Services of proto/ that dr-node serves, not dr-control: target nodes' TransferService.
NODE_SERVICES = frozenset({"dr.v1.TransferService"})


def metric(ports: list[int], name: str, **labels: str) -> float:
    """The sum of metric `name`'s samples with `labels` over the /metrics of `ports`."""
    from prometheus_client.parser import text_string_to_metric_families
    total = 0.0
    for port in ports:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
        for family in text_string_to_metric_families(text.decode()):
            total += sum(s.value for s in family.samples if s.name == name and all(
                s.labels.get(k) == v for k, v in labels.items()))
    return total


def daemon_metrics(c: Cluster, *names: str) -> dict[str, float]:
    """{name: its sum over dr-control and every node} (a cluster made with metrics=True)."""
    ports = [c.control_metrics_port, *(n.metrics_port for n in c.nodes.values())]
    return {name: metric(ports, name) for name in names}


def setup_plan(c: Cluster, disk: str = "vm1", rpo: str = "1h", *extra: str) -> str:
    """Sites src (the cluster's source directory) and dst (its repository) and plan p1
    protecting workload `disk` of src; returns the plan's id."""
    c.drctl("site", "add", "src", "--kind", "file", "--path", str(c.src))
    c.drctl("site", "add", "dst", "--kind", "file", "--path", str(c.repo))
    c.drctl("plan", "create", "p1", "--source", "src", "--target", "dst",
            "--workload", f"src/{disk}", "--rpo", rpo, *extra)
    return "p1"


def protect_file_source(c: Cluster, size: int = 3 * MiB) -> tuple[Path, bytes, dict]:
    """A file source (data, a hole, data) protected into an fs repository by one cycle
    of plan p1, for recovery tests; returns the image, its content at the point, and the
    point. The image is written after the point: a recovery must not see that."""
    disk = c.src / "vm1.img"
    make_disk(disk, size, [(0, MiB), (2 * MiB, size - 2 * MiB)], seed=7)
    setup_plan(c)
    c.drctl("plan", "run", "p1", "--wait")
    (point,) = c.points("p1")
    content = disk.read_bytes()
    with open(disk, "r+b") as f:
        f.write(b"after the point" * 100)
    return disk, content, point


def completed_execution(c: Cluster, execution: str, point: dict) -> dict:
    """`drctl recovery get EXECUTION --wait`: the execution, checked to have completed
    from `point` with its steps in a recovery's order."""
    code, out, err = c.drctl("recovery", "get", execution, "--wait", "--output", "json")
    assert code == 0, err
    got = json.loads(out)
    assert got["state"] == "completed", got
    assert got["recovery_point"] == point["name"]
    steps = [e["step"] for e in got["events"]]
    assert steps.index("disk-prepared") < steps.index("instance-launched") < \
        steps.index("instance-running") < steps.index("group-running")
    return got


def wait_points(c: Cluster, plan: str, n: int, timeout: float = 60) -> list[dict]:
    return wait_for(lambda: (lambda p: p if len(p) >= n else None)(c.points(plan)),
                    timeout=timeout, what=f"{n} recovery points of {plan}")


def run_cycle(c: Cluster, plan: str, n: int, *, state: str = "completed") -> dict:
    """Runs `plan` and waits for the end of its n-th cycle (oldest first), which must end
    in `state`; returns that cycle as drctl shows it."""
    c.drctl("plan", "run", plan, check=False)
    cycles = wait_for(lambda: (lambda cy: cy if len(cy) >= n and cy[n - 1]["state"] in (
        "completed", "failed") else None)(c.cycles(plan)), timeout=120, what=f"cycle {n}")
    assert cycles[n - 1]["state"] == state, cycles[n - 1].get("error") or cycles[n - 1]
    return cycles[n - 1]


def rest_call(c: Cluster, path: str, method: str = "GET", body: dict | None = None,
              token_file: Path | None = None) -> tuple[int, dict]:
    """One REST request: (HTTP status, the JSON answer), errors included."""
    headers = {"Accept": "application/json"}
    if token_file is not None:
        headers["Authorization"] = "Bearer " + token_file.read_text().strip()
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(c.rest_url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def wait_rest(c: Cluster, token_file: Path | None = None) -> None:
    """The REST port opens just after gRPC reports SERVING."""
    def up():
        try:
            return rest_call(c, "/v1/me", token_file=token_file)[0] == 200
        except OSError:
            return False
    wait_for(up, what="the REST API to answer")
