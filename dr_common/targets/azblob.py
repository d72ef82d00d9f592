"""The `azblob` target: the repository format (docs/FORMAT.md) on block blobs of an
Azure Storage container.

`AzblobStore` is the `ObjectStore` of `dr_common.repository` on a container of the
site's storage account (`AzureSettings.storage_account_url`) and an optional name
prefix: the location `container/prefix` (a site's path `azblob://container/prefix`)
keeps repository key `chunks/ab/ab12...` in the block blob `prefix/chunks/ab/ab12...`
of `container` (just `chunks/ab/ab12...` without a prefix). Blob Storage gives every
primitive the format needs natively: a Put Blob is atomic (a block blob's content
appears whole when it is committed), `If-None-Match: *` is the conditional put
(409 BlobAlreadyExists when the blob exists), a put is durable when it returns, and
List Blobs returns names in UTF-8 binary order, which is Python's string order.

The account is reached with its Shared Key (`storage_account_key`), a SAS carried in
the account URL's query, or, with neither, the site's token credential (its service
principal, which needs Storage Blob Data Contributor on the container).

Every request is one attempt of Microsoft's client (`transport_options()` turns its
retries off) through the remote-call layer (`dr_common.remote`), the only place it is
retried (the plumbing is targets/cloudstore.py's, shared with s3). Integrity in
transit is MD5, the only checksum both Azure and Azurite answer (CRC64 needs the
SDK's native extension and the structured-message protocol): every put sends the
body's Content-MD5, which the service checks before storing (400 Md5Mismatch), and
every read is made of ranged GETs of at most 4 MiB, each answered with the MD5 of its
range (`x-ms-range-get-content-md5`), which the client checks.

Operators own containers: the store never creates one. It checks on first use that
the container exists and that we may list it.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any
from urllib.parse import urlsplit

from dr_common.azure import (
    AzureSettings, account_name, azure_error, blob_service, error_code, redact,
)
from dr_common.errors import (
    DRError,
    InvalidArgument,
    NotFound,
    ObjectNotFound,
    PermissionDenied,
    TargetError,
    Unauthenticated,
)
from dr_common.proto.dr.v1 import common_pb2, nodes_pb2
from dr_common.repository import Repository
from dr_common.targets.base import TargetEnv
from dr_common.targets.cloudstore import ChecksumMismatch, CloudStore, check_prefix
from dr_common.targets.repository import RepositoryTarget

TARGET = "azblob"
SCHEME = "azblob://"
LOCATION_FIELD = "repository.location"
URL_FIELD = "repository.azure.storage_account_url"
# Azure's rules for container names: 3-63 characters of lowercase letters, digits and
# single hyphens, starting and ending with a letter or digit. Checking them here turns
# a typo into a clear InvalidArgument instead of Azure's OutOfRangeInput/InvalidResourceName.
_CONTAINER_NAME = re.compile(r"(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")
# List Blobs' page limit (Azure's maximum is 5000); tests make it small to exercise paging.
LIST_PAGE = 1000
# Azure checked the body against the Content-MD5 we sent and it did not match: the body
# was damaged on the way, and sending it again from memory fixes that.
_BAD_UPLOAD_CODES = frozenset({"Md5Mismatch", "Crc64Mismatch"})
# The answers to a conditional put whose blob exists: Azure's 409 for Put Blob with
# If-None-Match: *, and 412, which a condition may also give.
_EXISTS_CODES = frozenset({"BlobAlreadyExists", "ConditionNotMet"})


def parse_location(location: str) -> tuple[str, str]:
    """(container, prefix) of `container[/prefix]`; InvalidArgument if malformed."""
    container, _, prefix = location.partition("/")
    return _check_container_name(container), check_prefix(prefix, "blob name prefix")


def _check_container_name(container: str) -> str:
    if not _CONTAINER_NAME.fullmatch(container):
        raise InvalidArgument(f"an azblob repository location is CONTAINER/PREFIX, with a "
                              f"container name of 3-63 characters of a-z, 0-9 and single "
                              f"'-'; got container {container!r}", field=LOCATION_FIELD)
    return container


class AzblobStore(CloudStore):
    """ObjectStore on an Azure Storage container, under an optional blob name prefix;
    the client is opened on first use and closed by `close()` (CloudStore)."""

    service = TARGET

    def __init__(self, container: str, prefix: str = "", *, azure: AzureSettings,
                 attempts: int = 5, deadline: float = 120.0,
                 list_page: int = LIST_PAGE) -> None:
        self.container = _check_container_name(container)
        if not azure.storage_account_url:
            raise InvalidArgument("an azblob repository needs the site's storage account "
                                  "(storage_account_url, https://ACCOUNT.blob.core.windows.net)",
                                  field=URL_FIELD)
        if urlsplit(azure.storage_account_url).scheme not in ("https", "http"):
            raise InvalidArgument("storage_account_url is a URL, https://...", field=URL_FIELD)
        self._azure = azure
        self.account = account_name(azure.storage_account_url)
        super().__init__(prefix, prefix_name="blob name prefix", attempts=attempts,
                         deadline=deadline, list_page=list_page)

    @classmethod
    def from_location(cls, location: str, *, azure: AzureSettings,
                      **kwargs: Any) -> AzblobStore:
        container, prefix = parse_location(location)
        return cls(container, prefix, azure=azure, **kwargs)

    @property
    def location(self) -> str:
        return f"{SCHEME}{self.container}/{self.prefix}" if self.prefix else \
            f"{SCHEME}{self.container}"

    def _where(self) -> str:
        return f"container {self.container} of storage account {self.account}"

    # -- the ObjectStore protocol ----------------------------------------------------

    async def get(self, key: str) -> bytes:
        name = self._name(key)

        async def fetch(c: Any) -> bytes:
            stream = await c.get_blob_client(name).download_blob(validate_content=True,
                                                                 max_concurrency=1)
            return await stream.readall()

        return await self._get_checked(key, f"get blob {name} from {self._where()}", fetch)

    async def put(self, key: str, data: bytes | bytearray | memoryview, *,
                  if_absent: bool = False) -> bool:
        from azure.core import MatchConditions
        name = self._name(key)
        body = data if isinstance(data, bytes) else bytes(data)
        # If-None-Match: * itself (overwrite=True keeps the client from adding its own).
        cond = {"match_condition": MatchConditions.IfMissing} if if_absent else {}

        async def send(c: Any) -> bool:
            try:
                await c.get_blob_client(name).upload_blob(
                    body, blob_type="BlockBlob", overwrite=True, validate_content=True,
                    max_concurrency=1, **cond)
            except Exception as exc:
                # The blob exists: the answer a conditional put asks for. (After a lost
                # response to our own earlier attempt it may be our blob: the repository
                # compares content where that matters, e.g. recovery points.)
                if if_absent and error_code(exc) in _EXISTS_CODES:
                    return False
                raise
            return True

        return await self._call("put", f"put blob {name} into {self._where()}", send, key=key)

    async def exists(self, key: str) -> bool:
        name = self._name(key)
        props = await self._call(
            "exists", f"look up blob {name} in {self._where()}",
            lambda c: self._unless_missing(c.get_blob_client(name).get_blob_properties(), None),
            key=key)
        return props is not None

    async def delete(self, key: str) -> None:
        name = self._name(key)

        async def remove(c: Any) -> None:
            # A missing blob is no error: delete is idempotent, as the protocol wants.
            await self._unless_missing(
                c.get_blob_client(name).delete_blob(delete_snapshots="include"), None)

        await self._call("delete", f"delete blob {name} from {self._where()}", remove,
                         key=key)

    async def touch(self, key: str) -> bool:
        name = self._name(key)

        async def set_metadata(c: Any) -> bool:
            # Set Blob Metadata moves Last-Modified and leaves the content as it is (we
            # store no metadata, so replacing it with none loses nothing).
            done = await self._unless_missing(c.get_blob_client(name).set_blob_metadata({}),
                                              None)
            return done is not None

        return await self._call("touch", f"touch blob {name} in {self._where()}",
                                set_metadata, key=key)

    async def delete_if_older(self, key: str, cutoff: float) -> int | None:
        from azure.core import MatchConditions
        name = self._name(key)

        async def check_and_remove(c: Any) -> int | None:
            blob = c.get_blob_client(name)
            props = await self._unless_missing(blob.get_blob_properties(), None)
            if props is None or props.last_modified.timestamp() >= cutoff:
                return None
            # Atomic against a touch, unlike S3's HEAD then DELETE: the delete is
            # conditional on the ETag we judged, which a touch changes (412: keep it).
            try:
                await blob.delete_blob(etag=props.etag,
                                       match_condition=MatchConditions.IfNotModified)
            except Exception as exc:
                if error_code(exc) == "ConditionNotMet" or self._missing(exc):
                    return None
                raise
            return int(props.size)

        return await self._call("delete", f"delete blob {name} from {self._where()}",
                                check_and_remove, key=key)

    # -- internals -------------------------------------------------------------------

    async def _page(self, c: Any, prefix: str, token: str
                    ) -> tuple[list[tuple[str, float, int]], str]:
        pages = c.list_blobs(name_starts_with=prefix or None,
                             results_per_page=self._list_page).by_page(token or None)
        names = []
        async for page in pages:
            names = [(b.name, b.last_modified.timestamp(), int(b.size or 0))
                     async for b in page]
            break
        return names, pages.continuation_token or ""

    async def _connect(self, stack: contextlib.AsyncExitStack) -> Any:
        svc = await stack.enter_async_context(blob_service(self._azure, field=URL_FIELD))
        container = svc.get_container_client(self.container)
        await self._check_container(container)
        return container

    async def _check_container(self, c: Any) -> None:
        """Fail early, and clearly, on a missing container, a key Azure does not accept
        or a credential that may not list. (Listing, not Get Container Properties: a
        container SAS may list but never read the container's properties.)"""
        await self._attempt("open-container", f"list {self._where()}",
                            lambda: self._page(c, self.prefix, ""))

    def _missing(self, exc: BaseException) -> bool:
        # HEAD has no body, but Storage names its error in x-ms-error-code even then; a
        # 404 without one is the blob's too (the container was checked when opened).
        code = error_code(exc)
        return code == "BlobNotFound" or (
            not code and int(getattr(exc, "status_code", 0) or 0) == 404)

    def _error(self, exc: BaseException, op: str, what: str, key: str) -> DRError:
        """Our error for a failed Storage call, in the terms an operator acts on."""
        code = error_code(exc)
        status = int(getattr(exc, "status_code", 0) or 0)
        if code == "ContainerNotFound" or (op == "open-container" and status == 404):
            return NotFound(f"container {self.container} does not exist in storage account "
                            f"{self.account}: create it, or fix repository.location")
        if code == "BlobNotFound":
            return ObjectNotFound(f"object {key!r} not found in {self._where()}"
                                  + (f" under prefix {self.prefix!r}" if self.prefix else ""))
        if code == "AuthenticationFailed":
            # Azure's answer to a Shared Key signature it cannot verify: a wrong key (or a
            # clock far off), never a missing permission.
            return Unauthenticated(
                f"storage account {self.account} did not accept the credentials to {what} "
                f"(AuthenticationFailed): check storage_account_key (or the SAS), and the "
                f"node's clock")
        if status == 403:
            return PermissionDenied(
                f"Azure refused to {what} ({code or 'HTTP 403'}): the key, SAS or principal "
                f"must allow read, add, create, write, delete and list on container "
                f"{self.container} (role Storage Blob Data Contributor)")
        if code in _BAD_UPLOAD_CODES:
            return TargetError(f"Azure rejected a damaged upload: {what} ({code}); retrying",
                               retryable=True)
        if not status and "mismatch" in str(exc).lower() and "md5" in str(exc).lower():
            # The client's check of a range's transactional MD5.
            return ChecksumMismatch(f"{what}: {redact(str(exc))[:200]}")
        return azure_error(exc, what)


def locate(path: str) -> nodes_pb2.AzblobTarget:
    """The locator of a site's path `azblob://container/prefix`."""
    if not path.startswith(SCHEME):
        raise InvalidArgument(f"an azblob repository is at azblob://CONTAINER/PREFIX, not "
                              f"{path!r}", field=LOCATION_FIELD)
    location = path[len(SCHEME):]
    parse_location(location)
    return nodes_pb2.AzblobTarget(location=location)


async def open_target(locator: nodes_pb2.AzblobTarget, site: common_pb2.SiteSettings,
                      env: TargetEnv) -> RepositoryTarget:
    """Opens (creating on first use) the repository at `locator.location`,
    container/prefix of the site's storage account. The container must exist:
    operators own containers."""
    store = AzblobStore.from_location(locator.location,
                                      azure=AzureSettings.from_site(site, field="target.site"))
    try:
        repo = await Repository.open_or_create(store)
    except BaseException:
        await store.close()
        raise
    return RepositoryTarget(repo, name=f"azblob:{locator.location}", env=env)
