"""The gRPC API as an outside client sees it: reflection, health, and errors for bad input
that say what was wrong and change nothing."""

from __future__ import annotations

import re
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase)
from grpc_status import rpc_status

from dr_common.proto.dr.v1 import inventory_pb2, inventory_pb2_grpc, protection_pb2
from tests.helpers.cluster import NODE_SERVICES
from tests.helpers.disks import MiB, make_disk
from tools.localcluster import Cluster

PROTO_DIR = Path(__file__).resolve().parent.parent / "proto"


@pytest.fixture(scope="module")
def control(tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    c = Cluster(root)
    make_disk(c.src / "vm1.img", 4 * MiB, [(0, MiB)])
    c.start_control()  # no node: nothing here needs one, and no cycle may write anything
    inventory = inventory_pb2_grpc.InventoryServiceStub(c.channel)
    inventory.CreateSite(inventory_pb2.CreateSiteRequest(
        site_id="src", site=inventory_pb2.Site(kind="file", path=str(c.src))))
    inventory.CreateSite(inventory_pb2.CreateSiteRequest(
        site_id="dst", site=inventory_pb2.Site(kind="file", path=str(c.repo))))
    c.protection.CreatePlan(_plan_request("existing", rpo=3600))
    try:
        yield c
    finally:
        c.stop()


def _plan_request(plan_id: str, *, rpo: int, disks=(), workloads=("sites/src/workloads/vm1",)):
    return protection_pb2.CreatePlanRequest(plan_id=plan_id, plan=protection_pb2.Plan(
        source_site="sites/src", target_site="sites/dst", workloads=list(workloads),
        disks=list(disks), rpo_seconds=rpo))


def test_reflection_lists_the_services_of_the_proto_files(control: Cluster):
    declared = set()
    for proto in PROTO_DIR.glob("dr/v1/*.proto"):
        text = proto.read_text()
        package = re.search(r"^package ([\w.]+);", text, re.M).group(1)
        declared |= {f"{package}.{s}" for s in re.findall(r"^service (\w+)", text, re.M)}
    declared -= NODE_SERVICES
    listed = set(ProtoReflectionDescriptorDatabase(control.channel).get_services())
    assert declared == listed - {"grpc.health.v1.Health",
                                 "grpc.reflection.v1alpha.ServerReflection"}
    assert {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= listed
    # A client can fetch each service's schema, as `grpcurl describe` would.
    db = ProtoReflectionDescriptorDatabase(control.channel)
    assert db.FindFileContainingSymbol("dr.v1.ProtectionService").name == "dr/v1/protection.proto"


def _error(call) -> tuple[grpc.StatusCode, str, dict[str, str], str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    err = info.value
    status = rpc_status.from_call(err)
    fields, reason = {}, ""
    for detail in status.details if status else []:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            br = error_details_pb2.BadRequest()
            detail.Unpack(br)
            fields.update({v.field: v.description for v in br.field_violations})
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info_ = error_details_pb2.ErrorInfo()
            detail.Unpack(info_)
            reason = info_.reason
    return err.code(), err.details(), fields, reason


def _nothing_written(c: Cluster) -> None:
    plans = c.protection.ListPlans(protection_pb2.ListPlansRequest()).plans
    assert [p.name for p in plans] == ["plans/existing"]
    sites = inventory_pb2_grpc.InventoryServiceStub(c.channel).ListSites(
        inventory_pb2.ListSitesRequest()).sites
    assert [s.name for s in sites] == ["sites/dst", "sites/src"]
    cycles = c.protection.ListCycles(protection_pb2.ListCyclesRequest(parent="plans/existing"))
    assert len(cycles.cycles) <= 1  # the existing plan's first cycle, never one per request


@pytest.mark.parametrize("rpo", [0, -60])
def test_bad_rpo_is_invalid_argument(control: Cluster, rpo: int):
    code, message, fields, reason = _error(
        lambda: control.protection.CreatePlan(_plan_request("p-rpo", rpo=rpo)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "rpo_seconds must be positive" in message
    assert "plan.rpo_seconds" in fields and reason == "invalid-argument"
    _nothing_written(control)


def test_plan_for_missing_disk_is_not_found(control: Cluster):
    missing = "sites/src/workloads/vm1/disks/nope"
    code, message, _, reason = _error(lambda: control.protection.CreatePlan(
        _plan_request("p-missing", rpo=60, workloads=(), disks=[missing])))
    assert code == grpc.StatusCode.NOT_FOUND
    assert missing in message and reason == "not-found"
    _nothing_written(control)


def test_duplicate_plan_is_already_exists(control: Cluster):
    code, message, _, _ = _error(
        lambda: control.protection.CreatePlan(_plan_request("existing", rpo=60)))
    assert code == grpc.StatusCode.ALREADY_EXISTS
    assert "plans/existing already exists" in message
    _nothing_written(control)


def test_source_path_outside_roots_is_invalid_argument(control: Cluster, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside")
    code, message, fields, _ = _error(lambda: inventory_pb2_grpc.InventoryServiceStub(
        control.channel).CreateSite(inventory_pb2.CreateSiteRequest(
            site_id="evil", site=inventory_pb2.Site(kind="file", path=str(outside)))))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "outside the configured roots" in message and "site.path" in fields
    # `..` cannot climb out of a root either.
    code, _, _, _ = _error(lambda: inventory_pb2_grpc.InventoryServiceStub(
        control.channel).CreateSite(inventory_pb2.CreateSiteRequest(
            site_id="evil", site=inventory_pb2.Site(kind="file", path=str(control.src / "../..")))))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    _nothing_written(control)


@pytest.mark.parametrize("plan_id", ["Bad_Name", "1abc", ""])
def test_bad_plan_id_is_invalid_argument(control: Cluster, plan_id: str):
    code, _, fields, _ = _error(lambda: control.protection.CreatePlan(_plan_request(plan_id, rpo=60)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "plan_id" in fields
    _nothing_written(control)


def test_drctl_shows_the_field_and_message(control: Cluster):
    code, _, err = control.drctl("plan", "create", "p2", "--source", "src", "--target", "dst",
                                 "--workload", "src/vm1", "--rpo=-5", check=False)
    assert code == 1
    assert "INVALID_ARGUMENT" in err and "rpo_seconds must be positive" in err
    assert "Traceback" not in err


def test_update_plan_validates_and_applies(control: Cluster):
    code, _, err = control.drctl("plan", "update", "existing", "--bandwidth=-1", check=False)
    assert code == 1 and "bandwidth_bytes_per_second must be 0" in err
    code, _, err = control.drctl("plan", "update", "existing", check=False)
    assert code == 2 and "nothing to update" in err
    from google.protobuf import field_mask_pb2
    code, message, fields, _ = _error(lambda: control.protection.UpdatePlan(
        protection_pb2.UpdatePlanRequest(plan=protection_pb2.Plan(name="plans/existing"),
                                         update_mask=field_mask_pb2.FieldMask(
                                             paths=["source_site"]))))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "update_mask" in fields
    plan = control.drctl_json("plan", "update", "existing", "--bandwidth", "50MB/s",
                              "--rpo", "2h")
    assert int(plan["bandwidth_bytes_per_second"]) == 50_000_000
    assert int(plan["rpo_seconds"]) == 7200
    control.drctl("plan", "update", "existing", "--bandwidth", "0", "--rpo", "1h")
