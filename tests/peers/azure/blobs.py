"""The peer's own hands on Azurite: creating, copying and deleting the page blobs that hold
managed disks' and snapshots' data, guest writes, reads and whole-disk hashes. Talks to
Azurite directly with the development account's key (never through the front, so guest
I/O is not counted or faulted as the product's I/O is).

Each disk and each snapshot is one page blob `md-<12 hex>/abcd` (the shape of Azure's
managed-disk SAS URLs, whose path is `/<random>/abcd`). A snapshot gets its own blob,
because Azurite refuses a blob SAS on blob snapshots and a snapshot must outlive its disk.
That blob is written by the peer, valid range by valid range: Azurite 3.35 in memory lets
a page blob's server-side copies *and* its blob snapshots share its page list, so a later
Put Page on the source shows in them (seen: copy, write source, read copy = new bytes)."""

from __future__ import annotations

import datetime
import hashlib
import secrets

from azure.storage.blob import (
    AccountSasPermissions,
    BlobServiceClient,
    ResourceTypes,
    generate_account_sas,
)

from tests.peers.azure.azurite import ACCOUNT, ACCOUNT_KEY, connection_string

BLOB = "abcd"
MAX_PUT_PAGE = 4 << 20  # the largest Put Page Azure accepts
HASH_CHUNK = 4 << 20
_ZEROS = bytes(HASH_CHUNK)


class BlobStore:
    def __init__(self, azurite_endpoint: str):
        self.endpoint = azurite_endpoint  # http://127.0.0.1:PORT/devstoreaccount1
        self.service = BlobServiceClient.from_connection_string(connection_string(azurite_endpoint))
        # What the front forwards SAS-authorised managed-disk requests with: Azurite knows
        # nothing of the peer's disk SAS tokens, and an account SAS (unlike Shared Key)
        # needs no re-signing of each forwarded request's headers.
        self.account_sas = generate_account_sas(
            ACCOUNT, ACCOUNT_KEY, ResourceTypes(service=True, container=True, object=True),
            AccountSasPermissions(read=True, write=True, delete=True, list=True, add=True,
                                  create=True, update=True, process=True),
            expiry=datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=7))

    def _blob(self, container: str):
        return self.service.get_blob_client(container, BLOB)

    def new_container(self) -> str:
        container = "md-" + secrets.token_hex(6)
        self.service.create_container(container)
        return container

    def create(self, size: int) -> str:
        """A new, all-zero page blob of `size` bytes; returns its container."""
        container = self.new_container()
        self._blob(container).create_page_blob(size)
        return container

    def copy(self, source: str) -> str:
        """A copy of `source`'s blob in a new container (its valid ranges read and written:
        a few MiB for test disks)."""
        src = self._blob(source)
        size = src.get_blob_properties().size
        container = self.create(size)
        target = self._blob(container)
        valid, _ = src.get_page_ranges()
        for r in valid:
            for start in range(r["start"], r["end"] + 1, MAX_PUT_PAGE):
                length = min(MAX_PUT_PAGE, r["end"] + 1 - start)
                data = src.download_blob(offset=start, length=length).readall()
                target.upload_page(data, start, length)
        return container

    def delete(self, container: str) -> None:
        self.service.delete_container(container)

    def delete_all(self) -> None:
        """Every container: managed blobs and what clients made through the front."""
        for container in self.service.list_containers():
            self.service.delete_container(container.name)

    def write(self, container: str, offset: int, data: bytes) -> None:
        blob = self._blob(container)
        for at in range(0, len(data), MAX_PUT_PAGE):
            chunk = data[at:at + MAX_PUT_PAGE]
            blob.upload_page(chunk, offset + at, len(chunk))

    def clear(self, container: str, offset: int, length: int) -> None:
        self._blob(container).clear_page(offset, length)

    def read(self, container: str, offset: int, length: int) -> bytes:
        return self._blob(container).download_blob(offset=offset, length=length).readall()

    def size(self, container: str) -> int:
        return self._blob(container).get_blob_properties().size

    def sha256(self, container: str) -> str:
        """SHA-256 of the whole virtual content: valid ranges read from Azurite, the gaps
        (zeros by definition) hashed locally, so a 1 GiB disk with a few MiB written costs
        a few MiB of reads."""
        blob = self._blob(container)
        size = blob.get_blob_properties().size
        valid, _ = blob.get_page_ranges()
        digest = hashlib.sha256()
        at = 0
        for r in valid:
            _hash_zeros(digest, r["start"] - at)
            for start in range(r["start"], r["end"] + 1, HASH_CHUNK):
                length = min(HASH_CHUNK, r["end"] + 1 - start)
                digest.update(blob.download_blob(offset=start, length=length).readall())
            at = r["end"] + 1
        _hash_zeros(digest, size - at)
        return digest.hexdigest()


def _hash_zeros(digest, length: int) -> None:
    while length > 0:
        n = min(length, HASH_CHUNK)
        digest.update(_ZEROS[:n] if n < HASH_CHUNK else _ZEROS)
        length -= n
