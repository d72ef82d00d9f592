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
