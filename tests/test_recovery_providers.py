"""The recovery provider registry (dr_control.recovery): a site kind finds its provider,
an unknown kind is refused with the field to fix, and a provider refuses the points it
cannot launch with the message StartRecovery's callers know."""

from __future__ import annotations

import pytest

from dr_common.errors import InvalidArgument
from dr_control.recovery import PROVIDERS, provider_class
from dr_control.recovery.base import RecoveryProvider


def test_every_registered_kind_finds_a_provider_of_that_kind():
    for kind in PROVIDERS:
        cls = provider_class(kind)
        assert issubclass(cls, RecoveryProvider) and cls.kind == kind


def test_an_unknown_kind_is_an_invalid_argument_naming_the_field():
    with pytest.raises(InvalidArgument, match="cannot be recovered to a file site") as e:
        provider_class("file", field="recovery_plan.protection_plan")
    assert e.value.field == "recovery_plan.protection_plan"


def test_aws_launches_ebs_points_only():
    aws = provider_class("aws")
    aws.check_points("plans/p", "ebs")
    with pytest.raises(InvalidArgument) as e:
        aws.check_points("plans/p", "s3")
    assert e.value.message == ("plans/p stores its recovery points as s3; EC2 recovery "
                               "launches EBS snapshots: use a plan with an ebs target")
    assert e.value.field == "recovery_plan.protection_plan"


def test_vsphere_recovers_repository_points_only():
    vsphere = provider_class("vsphere")
    for kind in ("fs", "s3", "azblob"):
        vsphere.check_points("plans/p", kind)
    with pytest.raises(InvalidArgument) as e:
        vsphere.check_points("plans/p", "ebs")
    assert e.value.message == ("plans/p stores its recovery points as ebs; vSphere recovery "
                               "uploads the disks of repository points to datastores: use a "
                               "plan with an fs or s3 or azblob target")


def test_azure_recovers_azure_disk_and_repository_points():
    azure = provider_class("azure")
    for kind in ("azure-disk", "fs", "s3"):  # REPOSITORY_KINDS: azblob too once registered
        azure.check_points("plans/p", kind)
    with pytest.raises(InvalidArgument) as e:
        azure.check_points("plans/p", "ebs")
    assert e.value.field == "recovery_plan.protection_plan"
    assert "use a plan with an azure-disk or fs" in e.value.message


SUBNET = "/subscriptions/s/resourceGroups/g/providers/Microsoft.Network/virtualNetworks/v/subnets/n"


@pytest.mark.parametrize("kind, settings, field", [
    ("aws", {"instance_type": "t3.small", "subnet_id": "subnet-1",
             "vsphere": {"datastore": "ds"}}, "w.vsphere"),
    ("aws", {"instance_type": "t3.small", "subnet_id": "subnet-1",
             "azure": {"vm_size": "B1s"}}, "w.azure"),
    ("vsphere", {"vsphere": {"datastore": "ds"}, "azure": {"vm_size": "B1s"}}, "w.azure"),
    ("azure", {"instance_type": "t3.small", "azure": {"vm_size": "B1s", "subnet_id": SUBNET}},
     "w.instance_type"),
    ("azure", {"vsphere": {"datastore": "ds"}, "azure": {"vm_size": "B1s",
                                                         "subnet_id": SUBNET}}, "w.vsphere"),
    ("azure", {"security_group_ids": ["sg-1"], "azure": {"vm_size": "B1s",
                                                         "subnet_id": SUBNET}},
     "w.security_group_ids"),
    ("azure", {"azure": {"subnet_id": SUBNET}}, "w.azure.vm_size"),
    ("vsphere", {"instance_type": "t3.small", "vsphere": {"datastore": "ds"}},
     "w.instance_type"),
    ("vsphere", {"vsphere": {}}, "w.vsphere.datastore"),
    ("vsphere", {"vsphere": {"datastore": "ds", "cpus": 0.5}}, "w.vsphere.cpus"),
    ("vsphere", {"vsphere": {"datastore": "ds", "networks": [{"source": "lan"}]}},
     "w.vsphere.networks[0].port_group"),
    ("vsphere", {"vsphere": {"datastore": "ds", "wait_for": "ping"}}, "w.vsphere.wait_for"),
    ("vsphere", {"vsphere": {"datastore": "ds", "disk_mode": "x"}}, "w.vsphere.disk_mode"),
])
def test_each_provider_checks_its_own_workload_settings(kind, settings, field):
    """The recovery service passes a workload's settings through unread; the provider
    refuses another provider's and its own wrong ones, naming the field."""
    with pytest.raises(InvalidArgument) as e:
        provider_class(kind).check_workload("w", settings)
    assert e.value.field == field, e.value.message


def test_vsphere_settings_are_normalized_with_defaults():
    got = provider_class("vsphere").check_workload("w", {
        "instance_type": "", "subnet_id": "", "security_group_ids": [], "private_ip": "",
        "vsphere": {"datastore": " ds ", "memory_mib": "2048",
                    "networks": [{"port_group": "VM Network"}]}})
    assert got == {"vsphere": {
        "cpus": 1, "memory_mib": 2048, "datastore": "ds", "folder": "", "resource_pool": "",
        "networks": [{"source": "", "port_group": "VM Network"}], "isolated_port_group": "",
        "guest_id": "otherGuest64", "wait_for": "tools"}}


def test_azure_settings_are_normalized_and_an_ip_planned_twice_is_refused():
    azure = provider_class("azure")
    # What the API hands over: every provider's fields, the others' empty.
    got = azure.check_workload("w", {
        "instance_type": "", "subnet_id": "", "security_group_ids": [], "private_ip": "",
        "vsphere": {}, "azure": {"vm_size": " Standard_B1s ", "subnet_id": SUBNET,
                                 "private_ip": "10.1.0.9", "os_type": "windows"}})
    assert got == {"azure": {"vm_size": "Standard_B1s", "subnet_id": SUBNET,
                             "network_security_group_id": "", "private_ip": "10.1.0.9",
                             "test_subnet_id": "", "os_type": "Windows", "disk_sku": ""}}
    with pytest.raises(InvalidArgument) as e:
        azure.check_plan_settings([("a", got), ("b", got)])
    assert e.value.field == "b.azure.private_ip"


def test_an_azure_workload_goes_from_the_api_to_the_provider_and_back():
    """RecoveryWorkload.azure as a request gives it, checked by check_boot_groups with
    the azure provider, stored, and shown again as the same message."""
    from dr_common.proto.dr.v1 import recovery_pb2
    from dr_control.api import convert
    from dr_control.db.models import Plan
    from dr_control.services.recovery import check_boot_groups
    w = "sites/src/workloads/vm1"
    request = [recovery_pb2.BootGroup(name="db", workloads=[recovery_pb2.RecoveryWorkload(
        workload=w, tags={"app": "shop"}, azure=recovery_pb2.AzureWorkload(
            vm_size="Standard_B2s", subnet_id=SUBNET, private_ip="10.1.0.9"))])]
    stored = check_boot_groups(Plan(id="p1", workloads=[w], disks=[]),
                               convert.boot_groups(request), provider_class("azure"))
    assert stored[0]["workloads"][0]["azure"]["os_type"] == "Linux"
    shown = convert._recovery_workload(stored[0]["workloads"][0])
    assert shown.azure.vm_size == "Standard_B2s" and shown.azure.private_ip == "10.1.0.9"
    assert shown.tags == {"app": "shop"} and not shown.HasField("vsphere")
    bad = [recovery_pb2.BootGroup(name="db", workloads=[recovery_pb2.RecoveryWorkload(
        workload=w, instance_type="t3.small", azure=recovery_pb2.AzureWorkload(
            vm_size="Standard_B2s", subnet_id=SUBNET))])]
    with pytest.raises(InvalidArgument) as e:
        check_boot_groups(Plan(id="p1", workloads=[w], disks=[]), convert.boot_groups(bad),
                          provider_class("azure"))
    assert e.value.field == "recovery_plan.boot_groups[0].workloads[0].instance_type"


def test_recovery_limits_come_from_the_configuration_and_bound_each_provider(tmp_path):
    """[recovery.limits] (or DR_CONTROL_RECOVERY__LIMITS__*) bounds every recovery site's
    limiter and its prepare step; 0 keeps each provider's own default."""
    from dr_common import config as loader
    from dr_control.config import ControlConfig, RecoveryLimits
    from dr_control.recovery.aws import EC2_CONCURRENCY
    from dr_control.recovery.kvm import RESTORES_IN_FLIGHT, STARTS_IN_FLIGHT

    path = tmp_path / "control.toml"
    path.write_text("[recovery.limits]\nlaunches_in_flight = 2\n")
    cfg = loader.load(ControlConfig, path, env_prefix="DR_CONTROL_",
                      environ={"DR_CONTROL_RECOVERY__LIMITS__RESTORES_IN_FLIGHT": "7"})
    limits = cfg.recovery.limits
    assert limits == RecoveryLimits(launches_in_flight=2, restores_in_flight=7)
    kvm = provider_class("kvm")
    assert kvm.new_limiter(limits)._value == 2
    assert kvm.new_limiter()._value == STARTS_IN_FLIGHT
    provider = kvm({"path": str(tmp_path)}, kvm.new_limiter(limits))
    assert provider.restores_in_flight(RESTORES_IN_FLIGHT) == RESTORES_IN_FLIGHT
    provider.limits = limits
    assert provider.restores_in_flight(RESTORES_IN_FLIGHT) == 7
    aws = provider_class("aws")
    assert aws.new_limiter(RecoveryLimits(api_calls_in_flight=9)).remote._slots._value == 9
    assert aws.new_limiter().remote._slots._value == EC2_CONCURRENCY
