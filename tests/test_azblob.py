"""The `azblob` target against Azurite: what only AzblobStore does (locations, the
container check, the conditional put on the wire, paging, MD5 in both directions),
throttling and resets, and the errors operators see, none carrying a secret. The
ObjectStore contract and the repository format on a container are the contract suite's:
tests/contracts/test_object_stores.py.

Faults Azurite never gives (ServerBusy, OperationTimedOut, resets, damaged bytes) and
Azure's answers where Azurite's differ come from the Azure peer's Storage front
(tests/peers/azure/storage.py, the `azure_peer` fixture)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dr_common import targets
from dr_common.errors import (
    AlreadyExists,
    CorruptData,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from dr_common.proto.dr.v1 import common_pb2
from dr_common.remote import REQUESTS, RETRIES, THROTTLES
from dr_common.repository import Repository, chunk_key, encode_chunk
from dr_common.targets import REPOSITORY_KINDS
from dr_common.targets.azblob import AzblobStore, account_name, locate, parse_location
from dr_common.targets.base import TargetEnv
from tests.helpers.azblob import azurite_settings, new_container
from tests.helpers.repository import write_point
from tests.peers.azure.azurite import ACCOUNT, ACCOUNT_KEY, connection_string

WRONG_KEY = "A" * 8 + ACCOUNT_KEY[8:]


def sample(counter: Any, *labels: str) -> float:
    return counter.labels(*labels)._value.get()


@pytest.fixture
def front(azure_peer: Any) -> tuple[Any, str]:
    """The Azure peer (faults off) and a new container of its account."""
    return azure_peer, new_container(azure_peer.connection_string)


def front_store(front: tuple[Any, str], prefix: str = "r", **kwargs: Any) -> AzblobStore:
    peer, container = front
    return AzblobStore(container, prefix, azure=azurite_settings(peer.blob_endpoint), **kwargs)


def container_sas(container: str, **permissions: bool) -> str:
    from azure.storage.blob import ContainerSasPermissions, generate_container_sas
    return generate_container_sas(ACCOUNT, container, account_key=ACCOUNT_KEY,
                                  permission=ContainerSasPermissions(**permissions),
                                  expiry=datetime.now(UTC) + timedelta(hours=1))


# -- locations -------------------------------------------------------------------------


def test_locations() -> None:
    assert parse_location("backups") == ("backups", "")
    assert parse_location("backups/dr/site-a/") == ("backups", "dr/site-a")
    assert locate("azblob://backups/dr").location == "backups/dr"
    for bad in ("", "ab", "Backups/x", "a--b/x", "-ab/x", "backups/a/../b", "backups/a//b",
                "b_x/y", "x" * 64):
        with pytest.raises(InvalidArgument) as e:
            parse_location(bad)
        assert e.value.field == "repository.location"
    for bad in ("backups/dr", "s3://backups/dr", "azblob://UP/x"):
        with pytest.raises(InvalidArgument) as e:
            locate(bad)
        assert e.value.field == "repository.location"
    assert account_name("https://acct1.blob.core.windows.net") == "acct1"
    assert account_name("http://127.0.0.1:10000/devstoreaccount1") == "devstoreaccount1"
    with pytest.raises(InvalidArgument) as e:
        AzblobStore("backups", azure=azurite_settings(""))
    assert e.value.field == "repository.azure.storage_account_url"


async def test_open_through_the_registry(azurite: Any, azure_container: str) -> None:
    assert "azblob" in REPOSITORY_KINDS
    assert targets.kind("azblob").site_kinds == ("azure",)
    loc = targets.locator("azblob", f"azblob://{azure_container}/plans/p1")
    loc.site.azure.CopyFrom(common_pb2.AzureSettings(
        **azurite_settings(azurite.endpoint).as_dict()))
    target = await targets.open_target(loc, TargetEnv())
    try:
        store = target.repository.store
        assert isinstance(store, AzblobStore) and store.prefix == "plans/p1"
        assert repr(store) == f"AzblobStore('azblob://{azure_container}/plans/p1')"
    finally:
        await target.close()
    from azure.storage.blob import BlobServiceClient
    with BlobServiceClient.from_connection_string(connection_string(azurite.endpoint)) as svc:
        assert svc.get_blob_client(azure_container, "plans/p1/config").exists()
    with pytest.raises(InvalidArgument) as e:  # no Azure settings in the task
        await targets.open_target(targets.locator("azblob", f"azblob://{azure_container}"),
                                  TargetEnv())
    assert e.value.field == "target.site.azure"


# -- the wire: conditional put, paging, MD5 --------------------------------------------


async def test_conditional_put_lets_one_writer_win_and_lists_page_by_page(
        front: tuple[Any, str]) -> None:
    peer, container = front
    async with front_store(front, list_page=2) as store, front_store(front) as other:
        assert await store.put("points/p.json", b"{}", if_absent=True)
        assert not await store.put("points/p.json", b"other", if_absent=True)
        assert await store.get("points/p.json") == b"{}"
        # Racing writers of one new blob (If-None-Match: * on both): exactly one wins, and
        # the blob holds the winner's bytes.
        won = await asyncio.gather(store.put("points/q.json", b"one", if_absent=True),
                                   other.put("points/q.json", b"two", if_absent=True))
        assert sorted(won) == [False, True]
        assert await store.get("points/q.json") == (b"one" if won[0] else b"two")
        assert await store.put("plain", b"v") and await store.put("plain", b"w")
        assert await store.get("plain") == b"w"  # a plain put overwrites

        # Paging: five keys in pages of two are three List Blobs requests (the peer counts
        # a container's own requests under its name).
        for i in range(5):
            await store.put(f"chunks/{i}", b"x")
        peer.reset_stats()
        assert [k async for k in store.list("chunks/")] == [f"chunks/{i}" for i in range(5)]
        assert peer.stats()["blobs"][container]["requests"] == 3

        # A second writer of a recovery point gets what it gets on s3: AlreadyExists.
        repo = await Repository.open_or_create(store)
        await write_point(repo, "20250101t000000z-1", {"d1": [1, 2]})
        point = await repo.get_recovery_point("20250101t000000z-1")
        assert not await repo.put_recovery_point(point)  # a retry of the same point
        with pytest.raises(AlreadyExists):
            await repo.put_recovery_point(dataclasses.replace(point, cycle="another"))
        assert await repo.get_recovery_point("20250101t000000z-1") == point


async def test_damaged_bodies_are_rejected_and_retried(front: tuple[Any, str]) -> None:
    peer = front[0]
    data = b"0123456789" * 100
    async with front_store(front, attempts=3) as store:
        await store.put("warm", b"")  # the store is open: faults hit only what follows
        # Upload: Azure compares the body with its Content-MD5 (400 Md5Mismatch).
        retries = sample(RETRIES, "azblob", "put")
        peer.faults(storage={"corrupt_request": 1.0, "method": "PUT", "times": 1})
        assert await store.put("chunks/aa/1", data)
        assert peer.stats()["faults"] == {"storage.corrupt_request": 1}
        assert sample(RETRIES, "azblob", "put") - retries == 1
        peer.clear_faults()
        assert await store.get("chunks/aa/1") == data
        # Download: the client checks the range's MD5 (x-ms-range-get-content-md5) and
        # reads again.
        retries = sample(RETRIES, "azblob", "get")
        peer.faults(storage={"corrupt_response": 1.0, "method": "GET", "times": 1})
        assert await store.get("chunks/aa/1") == data
        assert sample(RETRIES, "azblob", "get") - retries == 1
        # Damaged read after read: corrupt, not retried for ever.
        peer.faults(storage={"corrupt_response": 1.0, "method": "GET"})
        with pytest.raises(CorruptData) as e:
            await store.get("chunks/aa/1")
        assert e.value.reason == "corrupt-object" and "MD5" in e.value.message
        assert peer.stats()["faults"] == {"storage.corrupt_response": 3}  # all 3 attempts


async def test_a_blob_damaged_at_rest_is_corrupt_data(azurite: Any,
                                                      azure_container: str) -> None:
    # Its MD5 matches what Azure stores (the damage came in through the front door), so
    # only the chunk's own hash can tell: the read says where, and never retries.
    from azure.storage.blob import BlobServiceClient
    data = b"block blob " * 1000
    async with AzblobStore(azure_container, "r",
                           azure=azurite_settings(azurite.endpoint)) as store:
        repo = await Repository.open_or_create(store)
        cid = repo.chunk_id(data)
        await repo.put_chunk(cid, encode_chunk(data, "none"))
        assert await repo.get_chunk(cid, offset=0) == data
        with BlobServiceClient.from_connection_string(
                connection_string(azurite.endpoint)) as svc:
            svc.get_blob_client(azure_container, f"r/{chunk_key(cid)}").upload_blob(
                encode_chunk(b"something else", "none"), overwrite=True)
        retries = sample(RETRIES, "azblob", "get")
        with pytest.raises(CorruptData) as e:
            await repo.get_chunk(cid, disk="d1", offset=1 << 20)
        assert "d1" in e.value.message
        assert sample(RETRIES, "azblob", "get") == retries


async def test_throttling_and_resets_are_retried_and_counted(front: tuple[Any, str]) -> None:
    peer = front[0]
    throttles = sample(THROTTLES, "azblob", "put") + sample(THROTTLES, "azblob", "get")
    failed = sample(REQUESTS, "azblob", "get", "target-unavailable")
    async with front_store(front, attempts=4) as store:
        await store.put("warm", b"")
        peer.faults(storage={"server_busy": 1.0, "method": "PUT", "times": 2})
        assert await store.put("k", b"v")
        peer.faults(storage={"timeout": 1.0, "method": "PUT", "times": 1})
        assert await store.put("k", b"v")
        peer.faults(storage={"server_busy": 1.0, "method": "GET", "times": 1})
        assert await store.get("k") == b"v"
        # aiohttp sends an idempotent request again once by itself when the connection
        # drops: only a second reset in a row reaches the store.
        peer.faults(storage={"reset": 1.0, "method": "GET", "times": 3})
        assert await store.get("k") == b"v"
        assert peer.stats()["faults"] == {"storage.reset": 3}
    now = sample(THROTTLES, "azblob", "put") + sample(THROTTLES, "azblob", "get")
    assert now - throttles == 4  # ServerBusy and OperationTimedOut are both "busy"
    assert sample(REQUESTS, "azblob", "get", "target-unavailable") > failed


# -- errors operators see --------------------------------------------------------------


async def test_missing_container_is_explained_and_not_created(azurite: Any) -> None:
    name = f"dr-missing-{uuid.uuid4().hex[:8]}"
    store = AzblobStore(name, "x", azure=azurite_settings(azurite.endpoint))
    with pytest.raises(NotFound) as e:
        await store.get("config")
    await store.close()
    assert e.value.message == (f"container {name} does not exist in storage account "
                               f"{ACCOUNT}: create it, or fix repository.location")
    assert not e.value.retryable
    from azure.storage.blob import BlobServiceClient
    with BlobServiceClient.from_connection_string(connection_string(azurite.endpoint)) as svc:
        assert not svc.get_container_client(name).exists()


async def test_a_wrong_key_is_unauthenticated(front: tuple[Any, str], azurite: Any,
                                              azure_container: str) -> None:
    # Through the peer's front, as Azure answers (AuthenticationFailed).
    peer, container = front
    store = AzblobStore(container, azure=azurite_settings(peer.blob_endpoint,
                                                          storage_account_key=WRONG_KEY))
    with pytest.raises(Unauthenticated) as e:
        await store.put("k", b"v")
    await store.close()
    assert "AuthenticationFailed" in e.value.message and ACCOUNT in e.value.message
    assert "storage_account_key" in e.value.message and WRONG_KEY not in e.value.message
    # Azurite itself says AuthorizationFailure: still a clear, final answer.
    store = AzblobStore(azure_container, azure=azurite_settings(azurite.endpoint,
                                                                storage_account_key=WRONG_KEY))
    with pytest.raises(PermissionDenied) as e:
        await store.put("k", b"v")
    await store.close()
    assert "AuthorizationFailure" in e.value.message and not e.value.retryable


async def test_a_sas_that_may_not_write_is_permission_denied_and_never_shown(
        azurite: Any, azure_container: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with AzblobStore(azure_container, "ro",
                           azure=azurite_settings(azurite.endpoint)) as writer:
        await writer.put("config", b"{}")
    sas = container_sas(azure_container, read=True, list=True)
    sig = next(p for p in sas.split("&") if p.startswith("sig="))[4:]
    settings = azurite_settings(f"{azurite.endpoint}?{sas}", storage_account_key="")
    errors: list[str] = []
    before = sample(REQUESTS, "azblob", "put", "permission-denied")
    async with AzblobStore(azure_container, "ro", azure=settings) as store:
        assert await store.get("config") == b"{}"  # reading and listing are allowed
        with pytest.raises(PermissionDenied) as e:
            await store.put("chunks/aa/bb", b"data", if_absent=True)
        errors.append(e.value.message)
        assert repr(store) == f"AzblobStore('azblob://{azure_container}/ro')"
    assert sample(REQUESTS, "azblob", "put", "permission-denied") - before == 1  # not retried
    assert "AuthorizationPermissionMismatch" in errors[0] and azure_container in errors[0]
    # A SAS that may write but not list fails when the store opens.
    no_list = azurite_settings(f"{azurite.endpoint}?"
                               f"{container_sas(azure_container, write=True)}",
                               storage_account_key="")
    store = AzblobStore(azure_container, azure=no_list)
    with pytest.raises(PermissionDenied) as e:
        await store.put("k", b"v")
    await store.close()
    errors.append(e.value.message)
    # A wrong key, a missing container: no message or log line carries a secret.
    for settings in (azurite_settings(azurite.endpoint, storage_account_key=WRONG_KEY),
                     azurite_settings(azurite.endpoint)):
        store = AzblobStore("dr-none" if settings.storage_account_key == ACCOUNT_KEY
                            else azure_container, azure=settings)
        with pytest.raises((PermissionDenied, NotFound)) as e:
            await store.get("k")
        await store.close()
        errors.append(e.value.message)
        errors.append(repr(settings))
    text = "\n".join(errors + [r.getMessage() for r in caplog.records])
    assert caplog.records  # the SDK did log its requests
    for secret in (ACCOUNT_KEY, WRONG_KEY, sig):
        assert secret not in text
    assert "sig=" not in text.replace("sig=REDACTED", "")
