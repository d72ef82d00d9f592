"""The Azure peer (tests/peers/azure/) driven by Microsoft's own clients: azure-identity
for tokens, azure-mgmt-compute / azure-mgmt-network against the harness ARM, and
azure-storage-blob on the SAS URLs the grants hand out. The diff tests fail against
Azurite's own answer (the full page list, no ClearRange)."""

from __future__ import annotations

import hashlib
import random

import pytest
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from azure.identity import ClientSecretCredential
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.network import NetworkManagementClient
from azure.storage.blob import BlobClient

MIB = 1 << 20
UPLOAD_SIZE = 32 * MIB + 512  # Azure's smallest uploads are 20 MiB + a 512-byte footer
POLL = 0.02  # seconds between LRO polls (azure-core's default is 30)


def credential(peer, reader: bool = False, secret: str | None = None) -> ClientSecretCredential:
    client_id = peer.reader_client_id if reader else peer.client_id
    default = peer.reader_client_secret if reader else peer.client_secret
    return ClientSecretCredential(peer.tenant_id, client_id, secret or default,
                                  authority=peer.authority_host, disable_instance_discovery=True,
                                  connection_verify=str(peer.ca_file))


def mgmt(kind, peer, **kwargs):
    return kind(credential(peer, **kwargs), peer.subscription_id, base_url=peer.arm_endpoint,
                credential_scopes=peer.credential_scopes, connection_verify=str(peer.ca_file),
                polling_interval=POLL)


@pytest.fixture
def compute(azure_peer) -> ComputeManagementClient:
    return mgmt(ComputeManagementClient, azure_peer)


@pytest.fixture
def network(azure_peer) -> NetworkManagementClient:
    return mgmt(NetworkManagementClient, azure_peer)


def ranges(pairs) -> list[tuple[int, int]]:
    """azure-storage-blob's [{'start', 'end'}] (or PageRange items) as (start, end
    inclusive) tuples."""
    return [(r["start"], r["end"]) if isinstance(r, dict) else (r.start, r.end) for r in pairs]


def upload_disk(peer, compute, name: str, size: int = UPLOAD_SIZE) -> BlobClient:
    """An Upload disk with write access granted: the BlobClient of its write SAS."""
    compute.disks.begin_create_or_update(peer.source_group, name, {
        "location": peer.location,
        "properties": {"creationData": {"createOption": "Upload", "uploadSizeBytes": size}},
    }).result()
    sas = compute.disks.begin_grant_access(peer.source_group, name, {
        "access": "Write", "durationInSeconds": 3600}).result().access_sas
    return BlobClient.from_blob_url(sas)


def empty_disk(peer, compute, name: str, gb: int = 1, tags: dict | None = None) -> None:
    compute.disks.begin_create_or_update(peer.source_group, name, {
        "location": peer.location, "tags": tags or {},
        "properties": {"creationData": {"createOption": "Empty"}, "diskSizeGB": gb},
    }).result()


def snapshot(peer, compute, disk: str, name: str) -> str:
    """An incremental snapshot of `disk` and the URL of its read SAS."""
    source = compute.disks.get(peer.source_group, disk)
    compute.snapshots.begin_create_or_update(peer.source_group, name, {
        "location": peer.location,
        "properties": {"incremental": True,
                       "creationData": {"createOption": "Copy", "sourceResourceId": source.id}},
    }).result()
    return compute.snapshots.begin_grant_access(peer.source_group, name, {
        "access": "Read", "durationInSeconds": 3600}).result().access_sas


# -- the journal the diffs come from, against a page-by-page model


def test_journal_diff_matches_a_page_model():
    from tests.peers.azure.pages import Journal, diff, merge, tick
    rng = random.Random(7)
    pages = 64

    def spans(flags):
        return merge((k * 512, (k + 1) * 512) for k in range(pages) if flags[k])
    for _ in range(200):
        journal, seqs, valid, snaps = Journal(), [0] * pages, [False] * pages, []
        for _ in range(30):
            a = rng.randrange(pages)
            b = rng.randrange(a + 1, pages + 1)
            roll = rng.random()
            if roll < 0.5:
                seq = tick()
                journal.write(a * 512, b * 512, seq)
                for k in range(a, b):
                    seqs[k], valid[k] = seq, True
            elif roll < 0.8:
                journal.clear(a * 512, b * 512)
                for k in range(a, b):
                    valid[k] = False
            else:
                snaps.append((journal.copy(), tick(), list(seqs), list(valid)))
        for i, (old, old_seq, _, old_valid) in enumerate(snaps):
            for new, _, new_seqs, new_valid in snaps[i + 1:]:
                changed = spans([new_valid[k] and new_seqs[k] > old_seq for k in range(pages)])
                cleared = spans([old_valid[k] and not new_valid[k] for k in range(pages)])
                assert diff(new, old, old_seq) == (changed, cleared)


# -- identity


def test_token_for_the_operator_and_wrong_secret_is_aadsts7000215(azure_peer):
    token = credential(azure_peer).get_token(azure_peer.credential_scopes[0])
    assert token.token and token.expires_on > 0
    with pytest.raises(ClientAuthenticationError, match="AADSTS7000215"):
        credential(azure_peer, secret="wrong").get_token(azure_peer.credential_scopes[0])


# -- the upload flow


def test_upload_flow_states_and_content(azure_peer, compute):
    group = azure_peer.source_group
    blob = upload_disk(azure_peer, compute, "up1")
    assert compute.disks.get(group, "up1").disk_state == "ActiveUpload"
    data = random.Random(1).randbytes(4 * MIB)
    blob.upload_page(data, offset=0, length=4 * MIB)
    blob.upload_page(b"\x07" * 4096, offset=8 * MIB, length=4096)
    blob.clear_page(offset=MIB, length=MIB)
    valid = list(blob.list_page_ranges())
    assert ranges(valid) == [(0, MIB - 1), (2 * MIB, 4 * MIB - 1), (8 * MIB, 8 * MIB + 4095)]
    assert not any(r.cleared for r in valid)
    compute.disks.begin_revoke_access(group, "up1").result()
    disk = compute.disks.get(group, "up1")
    assert disk.disk_state == "Unattached"
    assert disk.creation_data.upload_size_bytes == UPLOAD_SIZE
    expected = hashlib.sha256(data[:MIB] + bytes(MIB) + data[2 * MIB:] + bytes(4 * MIB)
                              + b"\x07" * 4096 + bytes(UPLOAD_SIZE - 8 * MIB - 4096))
    assert azure_peer.sha256("up1") == expected.hexdigest()
    stats = azure_peer.stats()["blobs"]["up1"]
    assert stats["put_pages"] == 2 and stats["bytes_written"] == 4 * MIB + 4096
    assert stats["clear_pages"] == 1 and stats["pagelists"] == 1


def test_revoked_and_expired_sas_are_refused(azure_peer, compute):
    blob = upload_disk(azure_peer, compute, "up2")
    blob.upload_page(b"a" * 512, offset=0, length=512)
    compute.disks.begin_revoke_access(azure_peer.source_group, "up2").result()
    with pytest.raises(HttpResponseError) as e:
        blob.upload_page(b"b" * 512, offset=0, length=512)
    assert e.value.status_code == 403 and e.value.error_code == "AuthenticationFailed"
    read_sas = compute.disks.begin_grant_access(
        azure_peer.source_group, "up2", {"access": "Read", "durationInSeconds": 60}
    ).result().access_sas
    reader = BlobClient.from_blob_url(read_sas)
    assert reader.download_blob(offset=0, length=512).readall() == b"a" * 512
    with pytest.raises(HttpResponseError) as e:  # a read SAS cannot write
        reader.upload_page(b"c" * 512, offset=0, length=512)
    assert e.value.status_code == 403 and e.value.error_code == "AuthorizationPermissionMismatch"
    azure_peer.expire_sas()
    with pytest.raises(HttpResponseError) as e:
        BlobClient.from_blob_url(read_sas).download_blob(offset=0, length=512).readall()
    assert e.value.status_code == 403 and e.value.error_code == "AuthenticationFailed"


# -- incremental snapshots and their diffs


def test_diff_is_the_written_and_cleared_pages_not_the_full_list(azure_peer, compute):
    empty_disk(azure_peer, compute, "d1")
    azure_peer.write("d1", 0, b"\x01" * (2 * MIB))
    azure_peer.write("d1", 10 * MIB, b"\x02" * MIB)
    s1 = snapshot(azure_peer, compute, "d1", "d1-s1")
    azure_peer.write("d1", 512 * 1024, b"\x03" * 4096)        # inside an old range
    azure_peer.write("d1", 2 * MIB, b"\x04" * 1024)           # adjacent to one
    azure_peer.write("d1", 100 * MIB, b"\x05" * 512)          # a new one
    azure_peer.clear("d1", 10 * MIB + 4096, 8192)             # part of an old range
    s2 = snapshot(azure_peer, compute, "d1", "d1-s2")
    second = BlobClient.from_blob_url(s2)
    changed, cleared = second.get_page_range_diff_for_managed_disk(s1)
    assert ranges(changed) == [(512 * 1024, 512 * 1024 + 4095), (2 * MIB, 2 * MIB + 1023),
                               (100 * MIB, 100 * MIB + 511)]
    assert ranges(cleared) == [(10 * MIB + 4096, 10 * MIB + 4096 + 8191)]
    full = list(second.list_page_ranges())
    assert ranges(full) == [(0, 2 * MIB + 1023), (10 * MIB, 10 * MIB + 4095),
                            (10 * MIB + 12288, 11 * MIB - 1), (100 * MIB, 100 * MIB + 511)]
    assert ranges(changed) != ranges(full)  # what Azurite itself answers for the diff
    # offset/length narrow the answer (x-ms-range), clipping ranges at the edges
    part, _ = second.get_page_range_diff_for_managed_disk(s1, offset=2 * MIB, length=MIB)
    assert ranges(part) == [(2 * MIB, 2 * MIB + 1023)]
    assert azure_peer.stats()["blobs"]["d1-s2"]["diffs"] == 2
    # the snapshots hold their moments' data
    assert BlobClient.from_blob_url(s1).download_blob(offset=512 * 1024, length=4).readall() \
        == b"\x01" * 4
    assert second.download_blob(offset=512 * 1024, length=4).readall() == b"\x03" * 4


def test_diff_of_non_adjacent_snapshots_and_of_the_disk(azure_peer, compute):
    empty_disk(azure_peer, compute, "d2")
    azure_peer.write("d2", 0, b"\x01" * MIB)
    s1 = snapshot(azure_peer, compute, "d2", "d2-s1")
    azure_peer.write("d2", 4 * MIB, b"\x02" * 4096)
    snapshot(azure_peer, compute, "d2", "d2-s2")
    azure_peer.clear("d2", 4 * MIB, 4096)         # written after s1, gone again by s3
    azure_peer.clear("d2", 0, 8192)               # valid at s1, cleared by s3
    azure_peer.write("d2", 8 * MIB, b"\x03" * 512)
    s3 = snapshot(azure_peer, compute, "d2", "d2-s3")
    changed, cleared = BlobClient.from_blob_url(s3).get_page_range_diff_for_managed_disk(s1)
    assert ranges(changed) == [(8 * MIB, 8 * MIB + 511)]
    assert ranges(cleared) == [(0, 8191)]
    assert azure_peer.read("d2-s3", 0, 8192) == bytes(8192)
    assert azure_peer.read("d2-s1", 0, 8192) == b"\x01" * 8192


def test_deleted_or_foreign_previous_snapshot_is_refused(azure_peer, compute):
    group = azure_peer.source_group
    for disk in ("d3", "d4"):
        empty_disk(azure_peer, compute, disk)
        azure_peer.write(disk, 0, b"x" * 512)
    s1 = snapshot(azure_peer, compute, "d3", "d3-s1")
    other = snapshot(azure_peer, compute, "d4", "d4-s1")
    s2 = BlobClient.from_blob_url(snapshot(azure_peer, compute, "d3", "d3-s2"))
    with pytest.raises(HttpResponseError) as e:
        s2.get_page_range_diff_for_managed_disk(other)
    assert e.value.status_code == 409
    assert e.value.error_code == "PreviousSnapshotOperationNotSupported"
    with pytest.raises(HttpResponseError) as e:  # an active SAS blocks the delete
        compute.snapshots.begin_delete(group, "d3-s1").result()
    assert e.value.error.code == "OperationNotAllowed"
    compute.snapshots.begin_revoke_access(group, "d3-s1").result()
    compute.snapshots.begin_delete(group, "d3-s1").result()
    with pytest.raises(HttpResponseError) as e:
        s2.get_page_range_diff_for_managed_disk(s1)
    assert e.value.status_code == 409 and e.value.error_code == "PreviousSnapshotNotFound"


# -- networks, NICs and VMs


def vnet(peer, network, name: str = "net", prefix: str = "10.1.0.0/16",
         subnets: dict[str, str] | None = None):
    """A virtual network with inline subnets ({name: prefix}; default one /24 "default")."""
    subnets = subnets or {"default": prefix.replace("0.0/16", "0.0/24")}
    return network.virtual_networks.begin_create_or_update(peer.source_group, name, {
        "location": peer.location,
        "properties": {"addressSpace": {"addressPrefixes": [prefix]},
                       "subnets": [{"name": n, "properties": {"addressPrefix": p}}
                                   for n, p in subnets.items()]},
    }).result()


def nic(peer, network, name: str, subnet_id: str, address: str | None = None, nsg_id=None):
    """A NIC with one IP configuration: Static at `address`, else Dynamic."""
    config = {"subnet": {"id": subnet_id}, "privateIPAllocationMethod": "Dynamic"}
    if address:
        config.update(privateIPAllocationMethod="Static", privateIPAddress=address)
    props = {"ipConfigurations": [{"name": "ipconfig1", "properties": config}]}
    if nsg_id:
        props["networkSecurityGroup"] = {"id": nsg_id}
    return network.network_interfaces.begin_create_or_update(peer.source_group, name, {
        "location": peer.location, "properties": props}).result()


def vm_body(peer, os_disk_id: str, data_disk_ids: list[str], nic_ids: list[str]) -> dict:
    """A VM made of existing managed disks (createOption Attach) and NICs, the way a
    recovery brings one up."""
    return {
        "location": peer.location,
        "properties": {
            "hardwareProfile": {"vmSize": "Standard_D2s_v3"},
            "storageProfile": {
                "osDisk": {"createOption": "Attach", "osType": "Linux",
                           "managedDisk": {"id": os_disk_id}},
                "dataDisks": [{"lun": lun, "createOption": "Attach", "managedDisk": {"id": d}}
                              for lun, d in enumerate(data_disk_ids)]},
            "networkProfile": {"networkInterfaces": [
                {"id": n, "properties": {"primary": i == 0}} for i, n in enumerate(nic_ids)]},
        },
    }


def power_state(statuses) -> str:
    return next(s.code for s in statuses if s.code.startswith("PowerState/"))


def test_vm_from_two_disks_and_a_nic_attaches_them_and_delete_detaches(
        azure_peer, compute, network):
    group = azure_peer.source_group
    subnet = vnet(azure_peer, network).subnets[0]
    card = nic(azure_peer, network, "vm1-nic", subnet.id)
    empty_disk(azure_peer, compute, "vm1-os")
    empty_disk(azure_peer, compute, "vm1-data", gb=2)
    os_id, data_id = (compute.disks.get(group, d).id for d in ("vm1-os", "vm1-data"))
    azure_peer.set_vm_provisioning_delay(0.3)
    poller = compute.virtual_machines.begin_create_or_update(
        group, "vm1", vm_body(azure_peer, os_id, [data_id], [card.id]))
    # While the create runs the VM is Creating, and the peer says so too.
    assert compute.virtual_machines.get(group, "vm1").provisioning_state == "Creating"
    assert {r["name"]: r["state"] for r in azure_peer.resources()}["vm1"] == "Creating/starting"
    vm = poller.result()
    assert vm.provisioning_state == "Succeeded"
    got = compute.virtual_machines.get(group, "vm1")
    assert got.storage_profile.os_disk.managed_disk.id == os_id
    assert got.storage_profile.os_disk.os_type == "Linux"
    assert [(d.lun, d.managed_disk.id, d.disk_size_gb) for d in got.storage_profile.data_disks] \
        == [(0, data_id, 2)]
    assert [n.id for n in got.network_profile.network_interfaces] == [card.id]
    assert [v.name for v in compute.virtual_machines.list(group)] == ["vm1"]
    assert list(compute.virtual_machines.list(azure_peer.recovery_group)) == []
    for name in ("vm1-os", "vm1-data"):
        disk = compute.disks.get(group, name)
        assert (disk.disk_state, disk.managed_by) == ("Attached", vm.id)
    assert network.network_interfaces.get(group, "vm1-nic").virtual_machine.id == vm.id
    assert power_state(compute.virtual_machines.instance_view(group, "vm1").statuses) \
        == "PowerState/running"
    assert {r["name"]: r["state"] for r in azure_peer.resources()}["vm1"] == "Succeeded/running"

    compute.virtual_machines.begin_deallocate(group, "vm1").result()
    expanded = compute.virtual_machines.get(group, "vm1", expand="instanceView")
    assert power_state(expanded.instance_view.statuses) == "PowerState/deallocated"
    assert compute.disks.get(group, "vm1-data").disk_state == "Reserved"
    compute.virtual_machines.begin_start(group, "vm1").result()
    assert compute.disks.get(group, "vm1-data").disk_state == "Attached"

    compute.virtual_machines.begin_delete(group, "vm1").result()
    for name in ("vm1-os", "vm1-data"):
        disk = compute.disks.get(group, name)
        assert (disk.disk_state, disk.managed_by) == ("Unattached", None)
    assert network.network_interfaces.get(group, "vm1-nic").virtual_machine is None
    assert list(compute.virtual_machines.list(group)) == []


def test_vm_refuses_disks_and_nics_in_use_and_changes_nothing(azure_peer, compute, network):
    group = azure_peer.source_group
    subnet = vnet(azure_peer, network).subnets[0]
    first, second = (nic(azure_peer, network, n, subnet.id).id for n in ("nic-a", "nic-b"))
    for d in ("a-os", "b-os", "b-data"):
        empty_disk(azure_peer, compute, d)
    a_os, b_os, b_data = (compute.disks.get(group, d).id for d in ("a-os", "b-os", "b-data"))
    compute.virtual_machines.begin_create_or_update(
        group, "vm-a", vm_body(azure_peer, a_os, [], [first])).result()
    with pytest.raises(HttpResponseError) as e:  # vm-a's NIC
        compute.virtual_machines.begin_create_or_update(
            group, "vm-b", vm_body(azure_peer, b_os, [b_data], [first])).result()
    assert e.value.error.code == "NicInUse"
    with pytest.raises(HttpResponseError) as e:  # vm-a's OS disk as a data disk
        compute.virtual_machines.begin_create_or_update(
            group, "vm-b", vm_body(azure_peer, b_os, [a_os], [second])).result()
    assert e.value.error.code == "OperationNotAllowed"
    # Refused creates attach nothing: b's disks and NIC are as they were.
    assert compute.disks.get(group, "b-os").disk_state == "Unattached"
    assert network.network_interfaces.get(group, "nic-b").virtual_machine is None
    assert "vm-b" not in {r["name"] for r in azure_peer.resources()}
    with pytest.raises(HttpResponseError) as e:  # a NIC in use cannot be deleted
        network.network_interfaces.begin_delete(group, "nic-a").result()
    assert e.value.status_code == 400 and e.value.error.code == "NicInUse"
    with pytest.raises(HttpResponseError) as e:  # nor an attached disk
        compute.disks.begin_delete(group, "a-os").result()
    assert e.value.error.code == "OperationNotAllowed"


def error_code(call) -> tuple[int, str]:
    """(status, ARM error code) of a call that must be refused."""
    with pytest.raises(HttpResponseError) as e:
        call()
    return e.value.status_code, e.value.error.code


def test_subnets_inline_and_as_child_resources_are_one_list(azure_peer, network):
    group = azure_peer.source_group
    net = vnet(azure_peer, network, subnets={"a": "10.1.0.0/24", "b": "10.1.1.0/24"})
    assert [(s.name, s.address_prefix) for s in net.subnets] == [("a", "10.1.0.0/24"),
                                                                 ("b", "10.1.1.0/24")]
    assert net.subnets[0].id == net.id + "/subnets/a"
    network.subnets.begin_create_or_update(group, "net", "c", {
        "properties": {"addressPrefix": "10.1.2.0/24"}}).result()
    assert [s.name for s in network.virtual_networks.get(group, "net").subnets] == ["a", "b", "c"]
    assert [s.name for s in network.subnets.list(group, "net")] == ["a", "b", "c"]
    assert network.subnets.get(group, "net", "c").address_prefix == "10.1.2.0/24"

    def subnet(prefix, vnet_name="net"):
        return lambda: network.subnets.begin_create_or_update(
            group, vnet_name, "d", {"properties": {"addressPrefix": prefix}}).result()
    assert error_code(subnet("10.2.0.0/24")) == (400, "NetcfgSubnetRangeOutsideVnet")
    assert error_code(subnet("10.1.0.128/25")) == (400, "NetcfgSubnetRangesOverlap")
    assert error_code(subnet("10.1.3.0/24", "nonet")) == (404, "ResourceNotFound")
    # A PUT of the network replaces its subnets.
    vnet(azure_peer, network, subnets={"a": "10.1.0.0/24"})
    assert [s.name for s in network.subnets.list(group, "net")] == ["a"]
    network.virtual_networks.begin_delete(group, "net").result()
    assert azure_peer.resources() == []


def test_nic_addresses_come_from_the_subnet_and_references_are_checked(azure_peer, network):
    group = azure_peer.source_group
    subnet = vnet(azure_peer, network, subnets={"a": "10.1.0.0/29"}).subnets[0]

    def address(card):
        return card.ip_configurations[0].private_ip_address
    # .0-.3 and the broadcast address are Azure's; the first NIC gets .4
    assert address(nic(azure_peer, network, "n1", subnet.id)) == "10.1.0.4"
    assert address(nic(azure_peer, network, "n2", subnet.id, "10.1.0.6")) == "10.1.0.6"
    assert address(nic(azure_peer, network, "n3", subnet.id)) == "10.1.0.5"
    assert address(nic(azure_peer, network, "n1", subnet.id)) == "10.1.0.4"  # kept on update
    assert error_code(lambda: nic(azure_peer, network, "n4", subnet.id, "10.1.0.6")) \
        == (400, "PrivateIPAddressInUse")
    assert error_code(lambda: nic(azure_peer, network, "n4", subnet.id)) == (400, "SubnetIsFull")
    missing = subnet.id.replace("/subnets/a", "/subnets/zz")
    assert error_code(lambda: nic(azure_peer, network, "n4", missing)) \
        == (400, "InvalidResourceReference")
    nsg_id = network.network_security_groups.begin_create_or_update(group, "nsg", {
        "location": azure_peer.location}).result().id
    assert error_code(lambda: nic(azure_peer, network, "n2", subnet.id, "10.1.0.6",
                                  nsg_id=nsg_id + "x")) == (400, "InvalidResourceReference")
    card = nic(azure_peer, network, "n2", subnet.id, "10.1.0.6", nsg_id=nsg_id)
    assert card.network_security_group.id == nsg_id
    nsg = network.network_security_groups.get(group, "nsg")
    assert [n.id for n in nsg.network_interfaces] == [card.id]
    assert "DenyAllInBound" in {r.name for r in nsg.default_security_rules}
    used_by = network.subnets.get(group, "net", "a").ip_configurations
    assert len(used_by) == 3 and card.ip_configurations[0].id in {c.id for c in used_by}
    # What NICs use cannot go, by any path.
    assert error_code(lambda: network.network_security_groups.begin_delete(
        group, "nsg").result()) == (400, "InUseNetworkSecurityGroupCannotBeDeleted")
    assert error_code(lambda: network.subnets.begin_delete(group, "net", "a").result()) \
        == (400, "InUseSubnetCannotBeDeleted")
    assert error_code(lambda: vnet(azure_peer, network, subnets={"b": "10.1.1.0/24"})) \
        == (400, "InUseSubnetCannotBeDeleted")
    for name in ("n1", "n2", "n3"):
        network.network_interfaces.begin_delete(group, name).result()
    network.subnets.begin_delete(group, "net", "a").result()
    network.network_security_groups.begin_delete(group, "nsg").result()
    assert [r["name"] for r in azure_peer.resources()] == ["net"]


# -- ARM's request budget


def test_arm_answers_count_down_a_budget_per_principal_and_then_429_retry_after(
        azure_peer, compute):
    group, reads = azure_peer.source_group, "x-ms-ratelimit-remaining-subscription-reads"
    empty_disk(azure_peer, compute, "t1")
    azure_peer.set_arm_budget(reads=3, writes=50, refill_seconds=30)  # a read back each 10 s
    seen = []

    def hook(response):
        seen.append(response.http_response.headers)
    compute.disks.get(group, "t1", raw_response_hook=hook)
    compute.disks.get(group, "t1", raw_response_hook=hook)
    compute.disks.begin_delete(group, "no-such-disk", raw_response_hook=hook).result()
    assert [h.get(reads) for h in seen] == ["2", "1", None]
    assert seen[2]["x-ms-ratelimit-remaining-subscription-writes"] == "49"
    compute.disks.get(group, "t1")
    with pytest.raises(HttpResponseError) as e:
        compute.disks.get(group, "t1", retry_total=0)
    assert e.value.status_code == 429 and e.value.error.code == "SubscriptionRequestsThrottled"
    assert e.value.response.headers["Retry-After"] == "10"
    assert e.value.response.headers[reads] == "0"
    assert azure_peer.stats()["throttled"] == 1
    # The budget is the principal's: the reader still has all of its own.
    assert mgmt(ComputeManagementClient, azure_peer, reader=True).disks.get(group, "t1").name \
        == "t1"
    # azure-core honours Retry-After: with a read back within a second, the call succeeds.
    azure_peer.set_arm_budget(reads=1, refill_seconds=0.5)
    compute.disks.get(group, "t1")
    assert compute.disks.get(group, "t1").name == "t1"
    assert azure_peer.stats()["throttled"] == 2
    # An injected throttle (faults) is the same answer, with its own Retry-After.
    azure_peer.set_arm_budget()
    azure_peer.faults(arm={"throttle": 1.0, "retry_after": 7, "operation": "disks.get"})
    with pytest.raises(HttpResponseError) as e:
        compute.disks.get(group, "t1", retry_total=0)
    assert e.value.status_code == 429 and e.value.response.headers["Retry-After"] == "7"
    assert azure_peer.stats()["faults"]["arm.throttle"] == 1
