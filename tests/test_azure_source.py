"""The `azure` source on the Azure peer, beside the source contract
(tests/contracts/test_sources.py): inventory of a VM's disks, a consistency group of
snapshots, a read SAS that expires mid-read, and a principal without the rights."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from dr_common.azure import AzureSettings
from dr_common.errors import PermissionDenied
from dr_common.sources.azure.disk import AzureDisk
from dr_common.sources.azure.inventory import discover
from dr_common.sources.azure.snapshots import delete_snapshots, snapshot_group
from tests.helpers.azure import MiB, SourceVM


def _settings(peer, *, reader: bool = False) -> AzureSettings:
    return AzureSettings(
        subscription_id=peer.subscription_id, resource_groups=(peer.source_group,),
        location=peer.location, tenant_id=peer.tenant_id,
        client_id=peer.reader_client_id if reader else peer.client_id,
        client_secret=peer.reader_client_secret if reader else peer.client_secret,
        arm_endpoint=peer.arm_endpoint, authority_host=peer.authority_host,
        ca_file=str(peer.ca_file))


async def test_inventory_lists_the_vm_os_disk_first(azure_peer):
    vm = await asyncio.to_thread(SourceVM, azure_peer)
    [workload] = await discover(_settings(azure_peer))
    assert workload.id == "vm1"
    assert [(d.id, d.size, d.cbt) for d in workload.disks] == [
        ("os-disk", vm.size, "azure-incremental-snapshots"),
        ("lun-0", vm.size, "azure-incremental-snapshots")]
    assert [d.locator.rsplit("/", 1)[-1] for d in workload.disks] == vm.disks


async def test_a_read_sas_that_expires_mid_read_is_granted_again(azure_peer):
    vm = await asyncio.to_thread(SourceVM, azure_peer)
    await asyncio.to_thread(vm.write, vm.disks[1], [2, 3])
    settings = _settings(azure_peer)
    [workload] = await discover(settings)
    disk_id = workload.disks[1].locator
    snaps = await snapshot_group(settings, {"vm1": [disk_id]}, tags={"t": "1"},
                                 cycle="plans/p/cycles/1")
    disk = await AzureDisk.open(settings, snapshot_id=snaps[disk_id], previous_snapshot_id="",
                                disk_id=disk_id)
    try:
        first = bytearray(MiB)
        assert await asyncio.to_thread(disk.readinto, 2 * MiB, memoryview(first)) == MiB
        azure_peer.reset_stats()
        azure_peer.expire_sas()
        second = bytearray(MiB)
        assert await asyncio.to_thread(disk.readinto, 3 * MiB, memoryview(second)) == MiB
        assert bytes(first) + bytes(second) == azure_peer.read(
            vm.disks[1], 2 * MiB, 2 * MiB, group=azure_peer.source_group)
        assert azure_peer.stats()["arm"].get("snapshots.beginGetAccess") == 1
    finally:
        await asyncio.to_thread(disk.close)
        await delete_snapshots(settings, snaps.values())


async def test_a_principal_that_may_not_snapshot_gets_a_clear_error(azure_peer):
    vm = await asyncio.to_thread(SourceVM, azure_peer)
    reader = _settings(azure_peer, reader=True)
    [workload] = await discover(reader)  # a reader may list
    disks = [d.locator for d in workload.disks]
    with pytest.raises(PermissionDenied) as e:
        await snapshot_group(reader, {"vm1": disks}, tags={}, cycle="plans/p/cycles/1")
    assert "AuthorizationFailed" in str(e.value) and vm.disks[0] in str(e.value)
    assert reader.client_secret not in str(e.value)
    # Nothing is left behind by the refused group.
    assert not [r for r in azure_peer.resources() if r["type"] == "Microsoft.Compute/snapshots"]


def test_settings_never_show_the_secret(azure_peer):
    settings = _settings(azure_peer)
    assert azure_peer.client_secret not in repr(settings)
    assert azure_peer.client_secret not in repr(dataclasses.replace(settings).public())
