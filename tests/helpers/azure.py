"""Tests' side of Azure: Microsoft's own clients on the Azure peer (tests/peers/azure/),
a source VM with managed disks written as a guest would, and the drctl arguments of an
`azure` site on the peer."""

from __future__ import annotations

import hashlib
import random

from azure.identity import ClientSecretCredential

from tests.peers.azure import bodies

MiB = 1 << 20
POLL = 0.02  # seconds between LRO polls (azure-core's default is 30)


def credential(peer, reader: bool = False, secret: str | None = None) -> ClientSecretCredential:
    client_id = peer.reader_client_id if reader else peer.client_id
    default = peer.reader_client_secret if reader else peer.client_secret
    return ClientSecretCredential(peer.tenant_id, client_id, secret or default,
                                  authority=peer.authority_host, disable_instance_discovery=True,
                                  connection_verify=str(peer.ca_file))


def mgmt(kind, peer, **kwargs):
    """An azure-mgmt-* client (ComputeManagementClient, NetworkManagementClient) on the
    peer's ARM; kwargs go to `credential`."""
    return kind(credential(peer, **kwargs), peer.subscription_id, base_url=peer.arm_endpoint,
                credential_scopes=peer.credential_scopes, connection_verify=str(peer.ca_file),
                polling_interval=POLL)


def site_args(peer, group: str, *, storage: bool = False) -> list[str]:
    """`drctl site add NAME` arguments of an azure site on the peer using one resource
    group (and, with `storage`, the dev storage account through the peer's front); the
    secrets go in the environment (see `site_env`)."""
    return ["--kind", "azure", "--subscription", peer.subscription_id,
            "--resource-group", group, "--location", peer.location,
            "--tenant-id", peer.tenant_id, "--client-id", peer.client_id,
            "--arm-endpoint", peer.arm_endpoint, "--authority-host", peer.authority_host,
            "--azure-ca-file", str(peer.ca_file),
            *(["--storage-account-url", peer.blob_endpoint] if storage else [])]


def site_env(peer) -> dict[str, str]:
    from tests.peers.azure.azurite import ACCOUNT_KEY
    return {"AZURE_CLIENT_SECRET": peer.client_secret, "AZURE_STORAGE_KEY": ACCOUNT_KEY}


class SourceVM:
    """A VM of the peer's source group with an OS disk and one data disk (LUN 0) of
    `gb` GiB each, on a NIC in a fresh VNet, and a guest that writes them 1 MiB at a time
    (a whole chunk, so an incremental reads exactly what changed)."""

    def __init__(self, peer, name: str = "vm1", gb: int = 1):
        from azure.mgmt.compute import ComputeManagementClient
        from azure.mgmt.network import NetworkManagementClient
        self.peer, self.name, self.group = peer, name, peer.source_group
        self.compute = mgmt(ComputeManagementClient, peer)
        network = mgmt(NetworkManagementClient, peer)
        self.disks = [f"{name}-os", f"{name}-data"]
        self.size = gb << 30
        ids = []
        for disk in self.disks:
            ids.append(self.compute.disks.begin_create_or_update(self.group, disk, {
                "location": peer.location, "properties": {
                    "creationData": {"createOption": "Empty"}, "diskSizeGB": gb}}).result().id)
        vnet = network.virtual_networks.begin_create_or_update(
            self.group, f"{name}-net",
            bodies.vnet(peer.location, "10.1.0.0/16", {"default": "10.1.0.0/24"})).result()
        nic = network.network_interfaces.begin_create_or_update(
            self.group, f"{name}-nic", bodies.nic(peer.location, vnet.subnets[0].id)).result()
        self.compute.virtual_machines.begin_create_or_update(
            self.group, name, bodies.vm(peer.location, ids[0], ids[1:], [nic.id])).result()
        self.rnd = random.Random(17)

    def write(self, disk: str, mib: list[int]) -> None:
        for i in mib:
            self.peer.write(disk, i * MiB, self.rnd.randbytes(MiB), group=self.group)

    def discard(self, disk: str, mib: int) -> None:
        self.peer.clear(disk, mib * MiB, MiB, group=self.group)

    def state(self) -> dict[str, str]:
        return {d: self.peer.sha256(d, group=self.group) for d in self.disks}


def sha256_of(peer, name: str, size: int, group: str) -> str:
    """SHA-256 of the first `size` bytes of a disk or snapshot (a disk made by direct
    upload is its data and then a VHD footer): its valid pages read from the peer, the
    gaps hashed as the zeros they are."""
    h, at = hashlib.sha256(), 0
    zeros = bytes(4 * MiB)

    def gap(n: int) -> None:
        for k in range(0, n, len(zeros)):
            h.update(zeros[:min(len(zeros), n - k)])
    for start, end in peer.valid_ranges(name, group=group):
        start, end = min(start, size), min(end, size)
        gap(start - at)
        for offset in range(start, end, 64 * MiB):
            h.update(peer.read(name, offset, min(64 * MiB, end - offset), group=group))
        at = end
    gap(size - at)
    return h.hexdigest()
