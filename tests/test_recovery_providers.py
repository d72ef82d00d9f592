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


@pytest.mark.parametrize("kind, settings, field", [
    ("aws", {"instance_type": "t3.small", "subnet_id": "subnet-1",
             "vsphere": {"datastore": "ds"}}, "w.vsphere"),
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
