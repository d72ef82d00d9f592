"""drctl against an in-process gRPC server with fake servicers, plus its pure helpers.

The fakes implement only the calls a test exercises; anything else answers
UNIMPLEMENTED (the generated base classes do that), which is itself a useful case.
"""

from __future__ import annotations

import json
import socket
import threading
from concurrent import futures

import grpc
import pytest
from google.protobuf import any_pb2, empty_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from dr_common.proto.dr.v1 import (
    common_pb2,
    inventory_pb2,
    inventory_pb2_grpc,
    nodes_pb2,
    nodes_pb2_grpc,
    operations_pb2_grpc,
    protection_pb2,
    protection_pb2_grpc,
    recovery_points_pb2,
    recovery_points_pb2_grpc,
    restore_pb2_grpc,
)
from dr_control.cli import names, progress, units, wait
from dr_control.cli.main import main
from dr_control.cli.table import format_fields, format_table

GiB = 1024**3


# --- names -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "pattern, text, parents, expected",
    [
        (names.PLAN, "p1", (), "plans/p1"),
        (names.PLAN, "plans/p1", (), "plans/p1"),
        (names.SITE, "sites", (), "sites/sites"),  # an id that equals the collection
        (names.WORKLOAD, "s1/w1", (), "sites/s1/workloads/w1"),
        (names.WORKLOAD, "sites/s1/workloads/w1", (), "sites/s1/workloads/w1"),
        (names.WORKLOAD, "w1", ("s1",), "sites/s1/workloads/w1"),
        (names.DISK, "s1/w1/d1", (), "sites/s1/workloads/w1/disks/d1"),
        (names.DISK, "w1/d1", ("s1",), "sites/s1/workloads/w1/disks/d1"),
        (names.RECOVERY_POINT, "p1/r1", (), "plans/p1/recoveryPoints/r1"),
        (names.RECOVERY_POINT, "plans/p1/recoveryPoints/r1", (), "plans/p1/recoveryPoints/r1"),
        (names.OPERATION, "op-7", (), "operations/op-7"),
    ],
)
def test_expand(pattern, text, parents, expected):
    assert names.expand(pattern, text, parents=parents) == expected


@pytest.mark.parametrize(
    "pattern, text",
    [
        (names.PLAN, ""),
        (names.PLAN, "p1/extra"),
        (names.WORKLOAD, "w1"),  # no site given and none to default to
        (names.WORKLOAD, "s1//"),
        (names.DISK, "s1/w1"),
        (names.RECOVERY_POINT, "p1"),
        (names.RECOVERY_POINT, "plans/p1/cycles/c1"),
        (names.WORKLOAD, "sites/s1/disks/d1"),
    ],
)
def test_expand_rejects(pattern, text):
    with pytest.raises(names.InvalidName, match=pattern.what):
        names.expand(pattern, text)


def test_short_name_round_trips():
    full = "sites/s1/workloads/w1/disks/d1"
    assert names.short_name(full) == "s1/w1/d1"
    assert names.expand(names.DISK, names.short_name(full)) == full
    assert names.short_name("weird") == "weird"
    assert names.resource_id(names.SITE, "sites/s1") == "s1"


# --- units -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, seconds",
    [("90", 90), ("90s", 90), ("15m", 900), ("1h", 3600), ("1d", 86400), ("1h30m", 5400),
     ("0", 0), (" 2H ", 7200),
     # Signs pass through: whether a value is acceptable is the server's decision.
     ("-5m", -300), ("-90", -90)],
)
def test_parse_duration(text, seconds):
    assert units.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "m", "15x", "1.5h", "--5m", "15 m", "h1", "1h-", "5m-"])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError, match="invalid duration"):
        units.parse_duration(text)


@pytest.mark.parametrize(
    "text, size",
    [("1048576", 1048576), ("1MiB", 1048576), ("256KiB", 262144), ("4M", 4 * 1048576),
     ("4MB", 4_000_000), ("1.5MiB", 1572864), ("2 GiB", 2 * GiB), ("1k", 1024), ("0", 0),
     ("-1M", -1048576)],
)
def test_parse_size(text, size):
    assert units.parse_size(text) == size


@pytest.mark.parametrize("text", ["", "MiB", "1XB", "--1M", "1.5", "0.3KiB", "1MiB2"])
def test_parse_size_rejects(text):
    with pytest.raises(ValueError, match="invalid size"):
        units.parse_size(text)


def test_format_units():
    assert units.format_size(0) == "0 B"
    assert units.format_size(1023) == "1023 B"
    assert units.format_size(GiB) == "1.0 GiB"
    assert units.format_size(int(1.25 * GiB)) == "1.2 GiB"
    assert units.format_rate(350_000_000) == "350 MB/s"
    assert units.format_rate(1_500_000) == "1.5 MB/s"
    assert units.format_duration(0) == "0s"
    assert units.format_duration(42) == "42s"
    assert units.format_duration(900) == "15m"
    assert units.format_duration(5403) == "1h 30m"
    assert units.format_duration(3605) == "1h"
    assert units.format_duration(-3) == "0s"


def test_progress_line():
    MiB = 1024**2
    line = progress.render(42 * MiB, 100 * MiB, 350e6, width=10)
    assert line == "[####......]   42%  42.0 MiB/100.0 MiB  350 MB/s"
    assert progress.render(5, 0, None) == "5 B"


# --- table -----------------------------------------------------------------------


def test_format_table_aligns_columns():
    text = format_table(
        ["NAME", "SIZE", "NOTE"],
        [["a", "1.0 GiB", "x"], ["longer", "5 B", None], ["c", "10 B", "two\nlines"]],
        right=["SIZE"],
    )
    assert text.splitlines() == [
        "NAME       SIZE  NOTE",
        "a       1.0 GiB  x",
        "longer      5 B  -",
        "c          10 B  two lines",
    ]


def test_format_table_rejects_ragged_rows_and_unknown_columns():
    with pytest.raises(ValueError):
        format_table(["A", "B"], [["1"]])
    with pytest.raises(ValueError):
        format_table(["A"], [["1"]], right=["B"])


def test_format_table_empty_has_headers():
    assert format_table(["A", "BB"], []) == "A  BB"


def test_format_fields():
    assert format_fields([("plan", "plans/p1"), ("rpo met", "yes")]) == (
        "plan:     plans/p1\nrpo met:  yes"
    )


# --- fake server -----------------------------------------------------------------


def _site(i: str) -> inventory_pb2.Site:
    return inventory_pb2.Site(name=f"sites/{i}", kind="file", path=f"/data/{i}", workload_count=1)


class Inventory(inventory_pb2_grpc.InventoryServiceServicer):
    def __init__(self):
        self.requests = []

    def CreateSite(self, request, context):
        self.requests.append(request)
        site = inventory_pb2.Site()
        site.CopyFrom(request.site)
        site.name = f"sites/{request.site_id}"
        return site

    def ListSites(self, request, context):
        self.requests.append(request)
        # Two pages, so the CLI must follow next_page_token.
        if request.page_token == "":
            return inventory_pb2.ListSitesResponse(sites=[_site("s1")], next_page_token="page2")
        assert request.page_token == "page2"
        return inventory_pb2.ListSitesResponse(sites=[_site("s2")])

    def ListWorkloads(self, request, context):
        self.requests.append(request)
        disks = [
            inventory_pb2.Disk(name="sites/s1/workloads/vm1/disks/d1", size_bytes=GiB, cbt="none"),
            inventory_pb2.Disk(name="sites/s1/workloads/vm1/disks/d2", size_bytes=GiB,
                               cbt="dirty-bitmap"),
        ]
        return inventory_pb2.ListWorkloadsResponse(
            workloads=[inventory_pb2.Workload(name="sites/s1/workloads/vm1", disks=disks)]
        )


def _abort_bad_request(context, message: str, field: str, description: str):
    detail = any_pb2.Any()
    detail.Pack(
        error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=field, description=description)
            ]
        )
    )
    status = status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=message, details=[detail])
    context.abort_with_status(rpc_status.to_status(status))


def _disk_progress(state: str, watermark: int) -> protection_pb2.DiskProgress:
    return protection_pb2.DiskProgress(
        disk="sites/s1/workloads/vm1/disks/d1", state=state, size_bytes=GiB,
        watermark_bytes=watermark,
    )


class Protection(protection_pb2_grpc.ProtectionServiceServicer):
    def __init__(self):
        self.requests = []
        self.final_state = "completed"
        self.polls = 0

    def CreatePlan(self, request, context):
        self.requests.append(request)
        if request.plan.rpo_seconds <= 0:
            _abort_bad_request(
                context, "the plan is invalid", "plan.rpo_seconds", "must be at least 60 seconds"
            )
        plan = protection_pb2.Plan()
        plan.CopyFrom(request.plan)
        plan.name = f"plans/{request.plan_id}"
        plan.state = "initializing"
        return plan

    def DeletePlan(self, request, context):
        if request.name != "plans/p1":
            context.abort(grpc.StatusCode.NOT_FOUND, f"{request.name} does not exist")
        return empty_pb2.Empty()

    def RunPlan(self, request, context):
        return protection_pb2.Cycle(name="plans/p1/cycles/c1", state="queued")

    def GetPlanStatus(self, request, context):
        # The cycle runs for two polls, then is no longer the current cycle.
        self.polls += 1
        status = protection_pb2.PlanStatus(
            plan=protection_pb2.Plan(name="plans/p1", state="running", rpo_seconds=900),
            last_recovery_point="plans/p1/recoveryPoints/r0",
            rpo_lag_seconds=125,
            rpo_met=True,
            in_sync_count=1,
            disks=[
                protection_pb2.DiskStatus(disk="sites/s1/workloads/vm1/disks/d1", state="in-sync"),
                protection_pb2.DiskStatus(disk="sites/s1/workloads/vm1/disks/d2",
                                          state="initial-sync"),
            ],
        )
        if self.polls <= 2:
            status.current_cycle.CopyFrom(
                protection_pb2.Cycle(
                    name="plans/p1/cycles/c1", state="running",
                    disks=[_disk_progress("running", GiB // 4 * self.polls)],
                )
            )
        return status

    def ListCycles(self, request, context):
        cycle = protection_pb2.Cycle(
            name="plans/p1/cycles/c1",
            state=self.final_state,
            disks=[_disk_progress(self.final_state, GiB)],
            stats=common_pb2.TransferStats(bytes_read=GiB, chunks_sent=7, chunks_zero=3),
        )
        if self.final_state == "failed":
            cycle.error.CopyFrom(
                common_pb2.TaskError(reason="source-unavailable", message="disk d1 vanished")
            )
        else:
            cycle.recovery_point = "plans/p1/recoveryPoints/r1"
        # The wanted cycle is on the second page.
        if request.page_token == "":
            return protection_pb2.ListCyclesResponse(
                cycles=[protection_pb2.Cycle(name="plans/p1/cycles/c0", state="completed")],
                next_page_token="2",
            )
        return protection_pb2.ListCyclesResponse(cycles=[cycle])


class Operations(operations_pb2_grpc.OperationsServiceServicer):
    """Serves operations/op1: running for one poll, then `self.final`."""

    def __init__(self):
        self.final = None
        self.polls = 0

    def GetOperation(self, request, context):
        if request.name != "operations/op1" or self.final is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"{request.name} does not exist")
        self.polls += 1
        if self.polls == 1:
            return common_pb2.Operation(
                name="operations/op1", kind=self.final.kind, state="running",
                bytes_done=2 * GiB, bytes_total=4 * GiB,
            )
        return self.final


class RecoveryPoints(recovery_points_pb2_grpc.RecoveryPointServiceServicer):
    def __init__(self, operations: Operations):
        self.operations = operations

    def ListRecoveryPoints(self, request, context):
        assert request.parent == "plans/p1"
        return recovery_points_pb2.ListRecoveryPointsResponse(recovery_points=[self._point()])

    def GetRecoveryPoint(self, request, context):
        return self._point()

    @staticmethod
    def _point() -> recovery_points_pb2.RecoveryPoint:
        point = recovery_points_pb2.RecoveryPoint(
            name="plans/p1/recoveryPoints/r1",
            cycle="plans/p1/cycles/c1",
            disks=[
                recovery_points_pb2.RecoveryPointDisk(
                    disk="sites/s1/workloads/vm1/disks/d1", size_bytes=GiB, root_hash="cd" * 32,
                    full_sync=True,
                ),
                recovery_points_pb2.RecoveryPointDisk(
                    disk="sites/s1/workloads/vm1/disks/d2", size_bytes=GiB, root_hash="ef" * 32,
                ),
            ],
            stats=common_pb2.TransferStats(bytes_stored=3 * 1024**2),
        )
        point.create_time.GetCurrentTime()
        return point

    def VerifyRecoveryPoint(self, request, context):
        return common_pb2.Operation(name="operations/op1", kind="verify", state="queued",
                                    target=request.name)


class Restore(restore_pb2_grpc.RestoreServiceServicer):
    def __init__(self):
        self.requests = []

    def RestoreDisk(self, request, context):
        self.requests.append(request)
        return common_pb2.Operation(name="operations/op1", kind="restore", state="queued",
                                    bytes_total=4 * GiB)


class Nodes(nodes_pb2_grpc.NodeServiceServicer):
    def ListNodes(self, request, context):
        node = nodes_pb2.Node(name="nodes/n1", hostname="repl-1", state="online",
                              running_tasks=2, max_tasks=40)
        node.last_heartbeat_time.GetCurrentTime()
        return nodes_pb2.ListNodesResponse(nodes=[node])


class Fake:
    def __init__(self):
        self.inventory = Inventory()
        self.protection = Protection()
        self.operations = Operations()
        self.recovery_points = RecoveryPoints(self.operations)
        self.restore = Restore()
        self.nodes = Nodes()
        self.address = ""


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setattr(wait, "POLL_INTERVAL", 0.0)
    monkeypatch.delenv("DRCTL_SERVER", raising=False)
    f = Fake()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    inventory_pb2_grpc.add_InventoryServiceServicer_to_server(f.inventory, server)
    protection_pb2_grpc.add_ProtectionServiceServicer_to_server(f.protection, server)
    operations_pb2_grpc.add_OperationsServiceServicer_to_server(f.operations, server)
    recovery_points_pb2_grpc.add_RecoveryPointServiceServicer_to_server(f.recovery_points, server)
    restore_pb2_grpc.add_RestoreServiceServicer_to_server(f.restore, server)
    nodes_pb2_grpc.add_NodeServiceServicer_to_server(f.nodes, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    f.address = f"127.0.0.1:{port}"
    yield f
    server.stop(None)


def drctl(fake: Fake, *args: str) -> int:
    return main(["--server", fake.address, *args])


# --- commands against the fake server ----------------------------------------------


def test_site_list_follows_pages(fake, capsys):
    assert drctl(fake, "site", "list") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["SITE", "KIND", "PATH", "PAIRED", "WORKLOADS", "CREATED",
                              "DESCRIPTION"]
    assert [line.split()[0] for line in out[1:]] == ["s1", "s2"]
    assert [r.page_token for r in fake.inventory.requests] == ["", "page2"]


@pytest.mark.parametrize(
    "argv",
    [
        ["--output", "json", "site", "list"],
        ["site", "list", "--output", "json"],
        ["-o", "table", "site", "list", "-o", "json"],
    ],
)
def test_json_list_is_an_array_with_proto_field_names(fake, capsys, argv):
    assert drctl(fake, *argv) == 0
    data = json.loads(capsys.readouterr().out)
    assert isinstance(data, list)
    assert [s["name"] for s in data] == ["sites/s1", "sites/s2"]
    assert data[0]["workload_count"] == 1  # proto field name, not workloadCount
    assert data[0]["description"] == ""  # default values are printed too


def test_server_from_environment(fake, capsys, monkeypatch):
    monkeypatch.setenv("DRCTL_SERVER", fake.address)
    assert main(["site", "list", "-o", "json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2


def test_site_add_single_resource_json(fake, capsys):
    rc = drctl(fake, "-o", "json", "site", "add", "src", "--kind", "file", "--path", "/images",
               "--description", "lab")
    assert rc == 0
    data = json.loads(capsys.readouterr().out)
    assert isinstance(data, dict)
    assert data["name"] == "sites/src" and data["path"] == "/images"
    request = fake.inventory.requests[-1]
    assert request.site_id == "src" and request.site.kind == "file"


def test_workload_list_table(fake, capsys):
    assert drctl(fake, "workload", "list", "--site", "s1") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].split() == ["s1/vm1", "2", "2.0", "GiB", "dirty-bitmap,none"]
    assert fake.inventory.requests[-1].parent == "sites/s1"


def test_plan_create_builds_request(fake, capsys):
    rc = drctl(fake, "plan", "create", "p1", "--source", "s1", "--target", "sites/t1",
               "--workload", "vm1", "--workload", "s2/vm9", "--disk", "vm2/d3",
               "--rpo", "15m", "--keep-last", "5", "--chunk-size", "4M",
               "--compression", "zstd")
    assert rc == 0, capsys.readouterr().err
    req = fake.protection.requests[-1]
    assert req.plan_id == "p1"
    assert req.plan.source_site == "sites/s1" and req.plan.target_site == "sites/t1"
    assert req.plan.target_kind == "fs"
    assert list(req.plan.workloads) == ["sites/s1/workloads/vm1", "sites/s2/workloads/vm9"]
    assert list(req.plan.disks) == ["sites/s1/workloads/vm2/disks/d3"]
    assert req.plan.rpo_seconds == 900 and req.plan.keep_last == 5
    assert req.plan.chunk_size_bytes == 4 * 1024 * 1024 and req.plan.compression == "zstd"
    assert "plans/p1" in capsys.readouterr().out


@pytest.mark.parametrize("rpo", ["0", "--rpo=-5m"])
def test_plan_create_shows_field_violations(fake, capsys, rpo):
    # Zero and negative values are not judged by the CLI: the server's answer is shown.
    rpo_args = [rpo] if rpo.startswith("--") else ["--rpo", rpo]
    rc = drctl(fake, "plan", "create", "p1", "--source", "s1", "--target", "t1", *rpo_args)
    assert fake.protection.requests[-1].plan.rpo_seconds == units.parse_duration(
        rpo.removeprefix("--rpo=")
    )
    assert rc == 1
    err = capsys.readouterr().err
    assert "error: INVALID_ARGUMENT: the plan is invalid" in err
    assert "  field plan.rpo_seconds: must be at least 60 seconds" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--rpo", "15x"], "argument --rpo: invalid duration '15x'"),
        (["--rpo", "1m", "--chunk-size", "1XB"], "argument --chunk-size: invalid size '1XB'"),
        (["--rpo", "1m", "--keep-last", str(2**31)],
         f"argument --keep-last: {2**31} is out of range for the API"),
        (["--rpo", "1m", "--workload", "a/b/c"], "invalid workload name 'a/b/c'"),
    ],
)
def test_plan_create_usage_errors(fake, capsys, extra, message):
    rc = drctl(fake, "plan", "create", "p1", "--source", "s1", "--target", "t1", *extra)
    assert rc == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    assert fake.protection.requests == []  # nothing was sent


def test_plan_delete_not_found(fake, capsys):
    assert drctl(fake, "plan", "delete", "p1") == 0
    assert capsys.readouterr().out.strip() == "deleted plans/p1"
    assert drctl(fake, "plan", "delete", "nope") == 1
    assert capsys.readouterr().err.strip() == "error: NOT_FOUND: plans/nope does not exist"


def test_plan_status_table(fake, capsys):
    assert drctl(fake, "plan", "status", "p1") == 0
    out = capsys.readouterr().out
    assert "last recovery point:  p1/r0" in out
    assert "rpo lag:              2m 5s" in out
    assert "rpo met:              yes" in out
    assert "in sync:              1/2" in out
    assert "current cycle:        p1/c1 (running)" in out
    rows = [line.split() for line in out.splitlines() if line.startswith("s1/")]
    assert rows == [
        ["s1/vm1/d1", "in-sync", "running", "no", "25%", "256.0", "MiB/1.0", "GiB"],
        ["s1/vm1/d2", "initial-sync", "-", "-", "-"],
    ]


@pytest.mark.parametrize("final, rc", [("completed", 0), ("partially-completed", 0),
                                        ("failed", 1)])
def test_plan_run_wait(fake, capsys, final, rc):
    fake.protection.final_state = final
    assert drctl(fake, "plan", "run", "p1", "--wait") == rc
    captured = capsys.readouterr()
    assert f"state:                       {final}" in captured.out
    if final == "failed":
        assert "error: plans/p1/cycles/c1 failed: source-unavailable: disk d1 vanished" in (
            captured.err
        )
    if final == "partially-completed":
        assert "warning: plans/p1/cycles/c1 partially completed" in captured.err
    # Progress from the running polls, on stderr; the line is ended.
    assert "\r[" in captured.err and captured.err.split("\r")[-1].count("\n") >= 1


def test_plan_run_no_wait_json(fake, capsys):
    assert drctl(fake, "plan", "run", "p1", "-o", "json") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["name"] == "plans/p1/cycles/c1" and data["state"] == "queued"


def test_verify_reports_bad_chunks(fake, capsys):
    fake.operations.final = common_pb2.Operation(
        name="operations/op1", kind="verify", state="completed", done=True,
        target="plans/p1/recoveryPoints/r1",
        verify_result=common_pb2.VerifyResult(
            ok=False, chunks_checked=1024,
            bad_chunks=[common_pb2.BadChunk(disk="sites/s1/workloads/vm1/disks/d1",
                                            offset=3 * 1048576, length=1048576,
                                            reason="hash-mismatch")],
        ),
    )
    assert drctl(fake, "point", "verify", "p1/r1") == 1
    captured = capsys.readouterr()
    assert "result:          NOT OK" in captured.out
    assert "chunks checked:  1024" in captured.out
    bad = [line.split() for line in captured.out.splitlines() if line.startswith("s1/")]
    assert bad == [["s1/vm1/d1", "3145728", "1048576", "hash-mismatch"]]
    assert "failed verification: 1 bad chunk(s)" in captured.err


def test_verify_ok(fake, capsys):
    fake.operations.final = common_pb2.Operation(
        name="operations/op1", kind="verify", state="completed", done=True,
        verify_result=common_pb2.VerifyResult(ok=True, chunks_checked=10),
    )
    assert drctl(fake, "-o", "json", "point", "verify", "plans/p1/recoveryPoints/r1") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["verify_result"]["ok"] is True
    assert data["verify_result"]["chunks_checked"] == "10"  # proto3 JSON: 64-bit as string


def test_restore_success_with_progress(fake, capsys):
    fake.operations.final = common_pb2.Operation(
        name="operations/op1", kind="restore", state="completed", done=True,
        bytes_done=4 * GiB, bytes_total=4 * GiB,
        restore_result=common_pb2.RestoreResult(destination_path="/restore/d1.raw",
                                                bytes_written=4 * GiB, root_hash="ab" * 32),
    )
    rc = drctl(fake, "restore", "p1/r1", "--to", "/restore/d1.raw", "--disk", "s1/vm1/d1",
               "--overwrite")
    assert rc == 0
    captured = capsys.readouterr()
    assert "destination:    /restore/d1.raw" in captured.out
    assert "bytes written:  4.0 GiB (4294967296 bytes)" in captured.out
    assert "root hash:      " + "ab" * 32 in captured.out
    assert "\r[" in captured.err and " 50%  2.0 GiB/4.0 GiB" in captured.err
    assert "100%  4.0 GiB/4.0 GiB" in captured.err and captured.err.endswith("\n")
    req = fake.restore.requests[-1]
    assert req.recovery_point == "plans/p1/recoveryPoints/r1"
    assert req.disk == "sites/s1/workloads/vm1/disks/d1"
    assert req.format == "" and req.overwrite  # the point decides: raw for repositories


def test_restore_failure(fake, capsys):
    fake.operations.final = common_pb2.Operation(
        name="operations/op1", kind="restore", state="failed", done=True,
        error=common_pb2.TaskError(reason="corrupt-chunk", message="chunk at 4096 mismatches"),
    )
    assert drctl(fake, "-o", "json", "restore", "p1/r1", "--to", "/restore/x.raw") == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["state"] == "failed"
    assert "corrupt-chunk: chunk at 4096 mismatches" in captured.err
    assert "\r[" not in captured.err  # JSON and no TTY: no progress bar


def test_restore_no_wait(fake, capsys):
    assert drctl(fake, "restore", "p1/r1", "--to", "/x", "--no-wait") == 0
    assert "operation:  operations/op1" in capsys.readouterr().out
    assert fake.operations.polls == 0


def test_point_list_and_show(fake, capsys):
    assert drctl(fake, "point", "list", "p1") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["POINT", "CREATED", "DISKS", "FULL-SYNC", "DISKS", "STORED",
                             "FULL-SYNC", "REASONS"]
    assert out[1].split()[0] == "p1/r1"
    assert out[1].split()[-6:] == ["2", "1", "3.0", "MiB", "unknown", "(1)"]
    assert drctl(fake, "point", "show", "p1/r1") == 0
    out = capsys.readouterr().out
    assert "recovery point:          plans/p1/recoveryPoints/r1" in out
    assert "s1/vm1/d1  1.0 GiB  yes        " + "cd" * 32 in out


def test_wait_interrupted_leaves_operation_running(fake, capsys, monkeypatch):
    fake.operations.final = common_pb2.Operation(name="operations/op1", kind="restore")

    def interrupt(_seconds):
        raise KeyboardInterrupt

    monkeypatch.setattr(wait.time, "sleep", interrupt)
    assert drctl(fake, "restore", "p1/r1", "--to", "/x") == 130
    err = capsys.readouterr().err
    assert "operations/op1 keeps running on dr-control" in err
    assert "`drctl operation cancel op1`" in err
    assert "Traceback" not in err


def test_unimplemented_call(fake, capsys):
    assert drctl(fake, "operation", "cancel", "op1") == 1
    assert capsys.readouterr().err.startswith("error: UNIMPLEMENTED: ")


def test_node_list(fake, capsys):
    assert drctl(fake, "node", "list") == 0
    row = capsys.readouterr().out.splitlines()[1].split()
    assert row[:6] == ["n1", "repl-1", "-", "online", "2", "40"]  # "-": no site
    assert row[-2:] == ["ago", "-"]  # last heartbeat; no pairs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_server(capsys):
    address = f"127.0.0.1:{_free_port()}"
    assert main(["--server", address, "plan", "list"]) == 3
    err = capsys.readouterr().err
    assert f"error: cannot reach dr-control at {address}: is it running?" in err
    assert "Traceback" not in err


def test_deadline_hint(capsys):
    # A listener that never answers: the call must end at --timeout with a hint.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        stop = threading.Event()
        conns = []

        def accept():
            listener.settimeout(0.1)
            while not stop.is_set():
                try:
                    conns.append(listener.accept()[0])
                except OSError:
                    pass

        t = threading.Thread(target=accept, daemon=True)
        t.start()
        address = "127.0.0.1:%d" % listener.getsockname()[1]
        try:
            rc = main(["--server", address, "--timeout", "0.5", "site", "list"])
        finally:
            stop.set()
            t.join()
            for c in conns:
                c.close()
    err = capsys.readouterr().err
    assert rc == 1
    assert err.startswith("error: DEADLINE_EXCEEDED")
    assert "raise --timeout" in err


def test_usage_errors_exit_2(capsys):
    assert main([]) == 2
    assert main(["plan"]) == 2
    assert main(["--timeout", "0", "plan", "list"]) == 2
    assert main(["point", "show", "p1"]) == 2
    assert "invalid recovery point name 'p1'" in capsys.readouterr().err
    assert main(["--help"]) == 0
