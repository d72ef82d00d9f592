"""Request bodies for what a test makes in the harness ARM: virtual networks, NICs and VMs
made of existing managed disks, as plain dicts in ARM's REST shape (the published
examples' shape), to pass to azure-mgmt-network / azure-mgmt-compute
`begin_create_or_update`. Standard library only, like client.py: a product test builds
its recovery site's network with these and leaves the rest to the product."""

from __future__ import annotations

from typing import Any


def vnet(location: str, prefix: str, subnets: dict[str, str]) -> dict[str, Any]:
    """A virtual network over `prefix` with inline subnets {name: prefix}."""
    return {"location": location,
            "properties": {"addressSpace": {"addressPrefixes": [prefix]},
                           "subnets": [{"name": n, "properties": {"addressPrefix": p}}
                                       for n, p in subnets.items()]}}


def nic(location: str, subnet_id: str, address: str | None = None,
        nsg_id: str | None = None) -> dict[str, Any]:
    """A NIC with one IP configuration "ipconfig1": Static at `address`, else Dynamic."""
    config: dict[str, Any] = {"subnet": {"id": subnet_id},
                              "privateIPAllocationMethod": "Static" if address else "Dynamic"}
    if address:
        config["privateIPAddress"] = address
    props: dict[str, Any] = {"ipConfigurations": [{"name": "ipconfig1", "properties": config}]}
    if nsg_id:
        props["networkSecurityGroup"] = {"id": nsg_id}
    return {"location": location, "properties": props}


def vm(location: str, os_disk_id: str, data_disk_ids: list[str], nic_ids: list[str],
       os_type: str = "Linux", size: str = "Standard_D2s_v3") -> dict[str, Any]:
    """A VM made of existing managed disks (createOption Attach; data disks at luns 0, 1,
    ... in order) and existing NICs (the first primary), the way a recovery brings one up."""
    return {
        "location": location,
        "properties": {
            "hardwareProfile": {"vmSize": size},
            "storageProfile": {
                "osDisk": {"createOption": "Attach", "osType": os_type,
                           "managedDisk": {"id": os_disk_id}},
                "dataDisks": [{"lun": lun, "createOption": "Attach", "managedDisk": {"id": d}}
                              for lun, d in enumerate(data_disk_ids)]},
            "networkProfile": {"networkInterfaces": [
                {"id": n, "properties": {"primary": i == 0}} for i, n in enumerate(nic_ids)]},
        },
    }
