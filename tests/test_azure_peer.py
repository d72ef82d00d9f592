"""The Azure peer (tests/peers/azure/) driven by Microsoft's own clients: azure-identity
for tokens, azure-mgmt-compute / azure-mgmt-network against the harness ARM, and
azure-storage-blob on the SAS URLs the grants hand out. The diff tests fail against
Azurite's own answer (the full page list, no ClearRange)."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pytest
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from azure.core.rest import HttpRequest
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.compute.models import DataDisk, ManagedDiskParameters
from azure.mgmt.network import NetworkManagementClient
from azure.storage.blob import BlobClient

from tests.helpers.azure import POLL, credential, mgmt
from tests.peers.azure import bodies
from tests.peers.azure.client import PeerError

MIB = 1 << 20
UPLOAD_SIZE = 32 * MIB + 512  # Azure's smallest uploads are 20 MiB + a 512-byte footer
EXAMPLES = Path(__file__).parent / "peers" / "azure" / "examples"


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
    return network.virtual_networks.begin_create_or_update(
        peer.source_group, name, bodies.vnet(peer.location, prefix, subnets)).result()


def nic(peer, network, name: str, subnet_id: str, address: str | None = None, nsg_id=None):
    return network.network_interfaces.begin_create_or_update(
        peer.source_group, name, bodies.nic(peer.location, subnet_id, address, nsg_id)).result()


def vm_body(peer, os_disk_id: str, data_disk_ids: list[str], nic_ids: list[str]) -> dict:
    return bodies.vm(peer.location, os_disk_id, data_disk_ids, nic_ids)


def vm_parts(peer, compute, network, nics: list[str], disks: list[str]):
    """NICs in a new network's subnet and empty 1 GiB disks, for VMs: their ids."""
    subnet = vnet(peer, network).subnets[0]
    nic_ids = [nic(peer, network, n, subnet.id).id for n in nics]
    for d in disks:
        empty_disk(peer, compute, d)
    return nic_ids, [compute.disks.get(peer.source_group, d).id for d in disks]


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
    (first, second), (a_os, b_os, b_data) = vm_parts(
        azure_peer, compute, network, ["nic-a", "nic-b"], ["a-os", "b-os", "b-data"])
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
    with pytest.raises(PeerError) as refused:  # a budget that could never be met
        azure_peer.set_arm_budget(reads=0)
    assert refused.value.status == 400
    # An injected throttle (faults) is the same answer, with its own Retry-After.
    azure_peer.set_arm_budget()
    azure_peer.faults(arm={"throttle": 1.0, "retry_after": 7, "operation": "disks.get"})
    with pytest.raises(HttpResponseError) as e:
        compute.disks.get(group, "t1", retry_total=0)
    assert e.value.status_code == 429 and e.value.response.headers["Retry-After"] == "7"
    assert azure_peer.stats()["faults"]["arm.throttle"] == 1


# -- Microsoft's published examples (tests/peers/azure/examples/), sent as they are


def example(peer, name: str, **names: str) -> dict:
    """A vendored example with its subscription and group (and `names`: placeholder ->
    value) replaced by the peer's."""
    text = (EXAMPLES / name).read_text()
    for old, new in {"{subscription-id}": peer.subscription_id,
                     "00000000-0000-0000-0000-000000000000": peer.subscription_id,
                     "/resourceGroups/myResourceGroup/": f"/resourceGroups/{peer.source_group}/",
                     "/resourceGroups/rg1/": f"/resourceGroups/{peer.source_group}/",
                     **names}.items():
        text = text.replace(old, new)
    return json.loads(text)


def differences(expected, actual, path: str = "") -> list[str]:
    """Where `actual` lacks what `expected` has, or holds another value (lists item by
    item); what actual has more does not count."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [path or "."]
        return [d for k, v in expected.items() for d in (
            differences(v, actual[k], f"{path}.{k}") if k in actual else [f"{path}.{k} missing"])]
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return [f"{path} length"]
        return [d for i, (e, a) in enumerate(zip(expected, actual))
                for d in differences(e, a, f"{path}[{i}]")]
    return [] if expected == actual else [path]


def put_example(client, peer, spec: dict, path: str):
    """The example's request as a raw PUT through the SDK's own pipeline (auth, retries):
    nothing of it is lost to the SDK's models."""
    params = spec["parameters"]
    request = HttpRequest("PUT", f"{path}?api-version={params['api-version']}",
                          json=params["parameters"])
    response = client.send_request(request)
    assert response.status_code in (200, 201), response.text()
    return response.status_code, response.json()


def test_published_examples_vnet_and_nic_answers_have_their_shape(azure_peer, network):
    group = f"/subscriptions/{azure_peer.subscription_id}/resourceGroups/{azure_peer.source_group}"
    spec = example(azure_peer, "VirtualNetworkCreateSubnet.json")
    status, body = put_example(network, azure_peer, spec,
                               f"{group}/providers/Microsoft.Network/virtualNetworks/test-vnet")
    assert status == 201
    assert differences(spec["responses"]["201"]["body"], body) == []
    got = network.virtual_networks.get(azure_peer.source_group, "test-vnet",
                                       cls=lambda response, *_: response.http_response.json())
    assert differences(spec["responses"]["200"]["body"], got) == []

    network.subnets.begin_create_or_update(azure_peer.source_group, "test-vnet", "default", {
        "properties": {"addressPrefix": "10.0.2.0/24"}}).result()
    spec = example(azure_peer, "NetworkInterfaceCreate.json",
                   **{"rg1-vnet": "test-vnet", "172.20.2.4": "10.0.2.4"})
    # Not served: IP prefixes on a NIC (ipconfig2), public IPs (echoed, not checked).
    del spec["parameters"]["parameters"]["properties"]["ipConfigurations"][1]
    expected = spec["responses"]["201"]["body"]
    del expected["properties"]["ipConfigurations"][1]
    status, body = put_example(network, azure_peer, spec,
                               f"{group}/providers/Microsoft.Network/networkInterfaces/test-nic")
    assert status == 201
    assert differences(expected, body) == []


def test_published_example_vm_with_empty_data_disks_has_its_shape(azure_peer, compute, network):
    group = azure_peer.source_group
    subnet = vnet(azure_peer, network).subnets[0]
    card = nic(azure_peer, network, "nsgExistingNic", subnet.id)
    spec = example(azure_peer, "VirtualMachine_Create_WithEmptyDataDisks.json",
                   **{"{existing-nic-name}": "nsgExistingNic", "westus": azure_peer.location})
    base = f"/subscriptions/{azure_peer.subscription_id}/resourceGroups/{group}"
    status, body = put_example(compute, azure_peer, spec,
                               f"{base}/providers/Microsoft.Compute/virtualMachines/myVM")
    assert status == 201
    # vmId is made anew by each create; the password is never shown.
    assert differences(spec["responses"]["201"]["body"], body) == [".properties.vmId"]
    assert "adminPassword" not in body["properties"]["osProfile"]
    # FromImage and Empty made managed disks of their own, attached to the VM.
    for spec_disk in [body["properties"]["storageProfile"]["osDisk"],
                      *body["properties"]["storageProfile"]["dataDisks"]]:
        disk = compute.disks.get(group, spec_disk["name"])
        assert disk.managed_by == body["id"] and disk.id == spec_disk["managedDisk"]["id"]
    assert compute.disks.get(group, "myVMosdisk").os_type == "Windows"
    assert network.network_interfaces.get(group, "nsgExistingNic").virtual_machine.id \
        == body["id"] and card.id == body["properties"]["networkProfile"]["networkInterfaces"][0]["id"]


def test_vm_update_attaches_and_detaches_data_disks_and_refuses_a_nic_swap(
        azure_peer, compute, network):
    group = azure_peer.source_group
    (first, second), (os_id, d0, d1) = vm_parts(
        azure_peer, compute, network, ["u-nic", "u-nic2"], ["u-os", "u-d0", "u-d1"])
    compute.virtual_machines.begin_create_or_update(
        group, "u1", vm_body(azure_peer, os_id, [d0], [first])).result()
    compute.virtual_machines.begin_deallocate(group, "u1").result()
    # get, change, put: what a product does with the SDK's models
    vm = compute.virtual_machines.get(group, "u1")
    vm.storage_profile.data_disks.append(DataDisk(
        lun=1, create_option="Attach", managed_disk=ManagedDiskParameters(id=d1)))
    vm = compute.virtual_machines.begin_create_or_update(group, "u1", vm).result()
    assert [(d.lun, d.managed_disk.id) for d in vm.storage_profile.data_disks] \
        == [(0, d0), (1, d1)]
    assert compute.disks.get(group, "u-d1").disk_state == "Reserved"  # its VM is deallocated
    vm.storage_profile.data_disks[0].to_be_detached = True
    vm = compute.virtual_machines.begin_create_or_update(group, "u1", vm).result()
    assert [d.managed_disk.id for d in vm.storage_profile.data_disks] == [d1]
    assert compute.disks.get(group, "u-d0").disk_state == "Unattached"
    assert compute.disks.get(group, "u-d0").managed_by is None
    vm.network_profile.network_interfaces[0].id = second
    assert error_code(lambda: compute.virtual_machines.begin_create_or_update(
        group, "u1", vm).result()) == (409, "OperationNotAllowed")
    assert network.network_interfaces.get(group, "u-nic2").virtual_machine is None


async def test_aio_clients_make_and_start_a_vm_as_the_product_does(azure_peer, compute, network):
    """The product drives ARM from asyncio: the aio clients over aiohttp, with the peer's
    CA as connection_verify, see the same VM and its Creating -> Succeeded."""
    from azure.identity.aio import ClientSecretCredential as AioCredential
    from azure.mgmt.compute.aio import ComputeManagementClient as AioCompute
    group = azure_peer.source_group
    (card,), (os_id, data_id) = vm_parts(azure_peer, compute, network, ["a-nic"],
                                         ["a-os", "a-data"])
    azure_peer.set_vm_provisioning_delay(0.2)
    async with AioCredential(azure_peer.tenant_id, azure_peer.client_id,
                             azure_peer.client_secret, authority=azure_peer.authority_host,
                             disable_instance_discovery=True,
                             connection_verify=str(azure_peer.ca_file)) as cred, \
            AioCompute(cred, azure_peer.subscription_id, base_url=azure_peer.arm_endpoint,
                       credential_scopes=azure_peer.credential_scopes,
                       connection_verify=str(azure_peer.ca_file), polling_interval=POLL) as aio:
        poller = await aio.virtual_machines.begin_create_or_update(
            group, "avm", bodies.vm(azure_peer.location, os_id, [data_id], [card]))
        assert (await aio.virtual_machines.get(group, "avm")).provisioning_state == "Creating"
        vm = await poller.result()
        assert vm.provisioning_state == "Succeeded"
        view = await aio.virtual_machines.instance_view(group, "avm")
        assert power_state(view.statuses) == "PowerState/running"
        assert [d.lun for d in vm.storage_profile.data_disks] == [0]
    assert compute.disks.get(group, "a-data").managed_by == vm.id


def test_the_front_answers_as_azure_where_azurite_differs_and_damages_on_request(azure_peer):
    from azure.storage.blob import BlobServiceClient

    from tests.peers.azure.azurite import ACCOUNT_KEY
    svc = BlobServiceClient.from_connection_string(azure_peer.connection_string)
    container = svc.create_container("front-checks")
    blob = container.get_blob_client("b")
    # A Shared Key signature that does not verify: Azure's AuthenticationFailed.
    wrong = BlobServiceClient.from_connection_string(
        azure_peer.connection_string.replace(ACCOUNT_KEY, "A" * 8 + ACCOUNT_KEY[8:]))
    with pytest.raises(HttpResponseError) as e:
        wrong.get_container_client("front-checks").upload_blob("b", b"x")
    assert e.value.status_code == 403 and e.value.error_code == "AuthenticationFailed"
    # A body damaged on the way (one fault in all: `times`): Azure's Md5Mismatch.
    azure_peer.faults(storage={"corrupt_request": 1.0, "method": "PUT", "times": 1})
    with pytest.raises(HttpResponseError) as e:
        blob.upload_blob(b"0123456789" * 10, validate_content=True, overwrite=True)
    assert e.value.status_code == 400 and e.value.error_code == "Md5Mismatch"
    blob.upload_blob(b"0123456789" * 10, validate_content=True, overwrite=True)
    # An answer damaged on the way back, once (a client that checks no MD5 takes it).
    azure_peer.faults(storage={"corrupt_response": 1.0, "method": "GET", "times": 1})
    assert blob.download_blob().readall() != b"0123456789" * 10
    assert blob.download_blob().readall() == b"0123456789" * 10
    assert azure_peer.stats()["faults"] == {"storage.corrupt_response": 1}
