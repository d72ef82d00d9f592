"""Azure access shared by the `azure` source, the `azure-disk` and `azblob` targets and
recovery into Azure.

`AzureSettings` is what a site says about Azure: a subscription, resource groups, a
region, and a service principal (client secret or certificate; neither: the daemon's
default credential chain). The secret parts are kept sealed by the control plane and
handed to nodes inside a task. Other clouds than the public one (Government, China,
Stack Hub, the test harness) give their Resource Manager endpoint, authority host and
CA bundle.

`Arm` holds one credential and the generated management clients (compute, network) of
Microsoft's SDK, with the SDK's own retries turned off: every call goes through a
`dr_common.remote.Remote`, the one retry layer. A long-running operation is one call
there (its start and its polling together): ARM's PUTs, DELETEs and POST actions are
idempotent, so an operation whose polling was throttled is started again safely.

`azure_error()` turns azure-core's exceptions (ARM's error envelope, Storage's error
codes, Entra ID's AADSTS errors, connection failures) into our error hierarchy, with
Azure's own code in the message and never a secret or a SAS signature.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar
from urllib.parse import urlsplit

from dr_common.errors import (AlreadyExists, DRError, FailedPrecondition, InvalidArgument, NotFound,
                              PermissionDenied, TargetError, Throttled, Unauthenticated)

T = TypeVar("T")

PUBLIC_ARM = "https://management.azure.com"
PUBLIC_AUTHORITY = "login.microsoftonline.com"
# Codes that mean: busy, come back later (Storage's and ARM's).
THROTTLE_CODES = frozenset({"ServerBusy", "OperationTimedOut", "TooManyRequests",
                            "SubscriptionRequestsThrottled", "RetryableError"})
NOT_FOUND_CODES = frozenset({"ResourceNotFound", "NotFound", "ResourceGroupNotFound",
                             "SubscriptionNotFound", "BlobNotFound", "ContainerNotFound",
                             "ParentResourceNotFound"})
ACCESS_CODES = frozenset({"AuthorizationFailed", "AuthorizationFailure",
                          "AuthorizationPermissionMismatch", "LinkedAuthorizationFailed",
                          "InsufficientAccountPermissions"})
_RETRYABLE_STATUS = frozenset({500, 502, 503, 504})
# A SAS grants access to whoever holds it: its signature never reaches a message or log.
_SAS_SIGNATURE = re.compile(r"(sig=)[^&\s\"']+", re.IGNORECASE)
# Resource group names: letters, digits, underscores, hyphens, periods and parentheses.
_GROUP_NAME = re.compile(r"[-\w.()]{1,90}")
# Seconds between polls of a long-running ARM operation: disks, NICs and VM deletes
# take seconds, and azure-core's default (30 s, when ARM sends no Retry-After) would
# add that much to every step of a recovery. Tests against the harness, whose
# operations end at once, lower it.
LRO_POLL_SECONDS = 1.0
_UUID = re.compile(r"[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")


def redact(text: str) -> str:
    """`text` with every SAS signature replaced."""
    return _SAS_SIGNATURE.sub(r"\1REDACTED", text)


@dataclass(frozen=True)
class AzureSettings:
    """Where and as whom to call Azure. Secrets are excluded from repr (logs)."""

    subscription_id: str
    resource_groups: tuple[str, ...]
    location: str = ""
    tenant_id: str = ""
    client_id: str = ""
    client_secret: str = field(default="", repr=False)
    client_certificate: str = field(default="", repr=False)
    arm_endpoint: str = ""
    authority_host: str = ""
    ca_file: str = ""
    storage_account_url: str = ""
    storage_account_key: str = field(default="", repr=False)

    SECRETS = ("client_secret", "client_certificate", "storage_account_key")

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, field_prefix: str = "azure") -> AzureSettings:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise InvalidArgument(f"unknown Azure setting(s) {', '.join(unknown)}; known: "
                                  f"{', '.join(sorted(known))}",
                                  field=f"{field_prefix}.{unknown[0]}")
        values: dict[str, Any] = {k: str(v) for k, v in d.items() if k != "resource_groups"}
        groups = d.get("resource_groups") or ()
        if isinstance(groups, str):
            groups = [g for g in groups.split(",")]
        values["resource_groups"] = tuple(str(g).strip() for g in groups if str(g).strip())
        values.setdefault("subscription_id", "")
        s = cls(**values)
        s.check(field_prefix)
        return s

    @classmethod
    def from_site(cls, site: Any, *, field: str = "site") -> AzureSettings:
        """The settings a task carries (SiteSettings.azure, secrets unsealed)."""
        if site.WhichOneof("kind") != "azure":
            raise InvalidArgument("this task's site has no Azure settings",
                                  field=f"{field}.azure")
        m = site.azure
        return cls(**{k: getattr(m, k) for k in cls.__dataclass_fields__
                      if k != "resource_groups"}, resource_groups=tuple(m.resource_groups))

    def check(self, field_prefix: str = "azure") -> None:
        if not _UUID.fullmatch(self.subscription_id):
            raise InvalidArgument(f"an Azure subscription id is a GUID; got "
                                  f"{self.subscription_id!r}",
                                  field=f"{field_prefix}.subscription_id")
        if not self.resource_groups:
            raise InvalidArgument("an Azure site names at least one resource group",
                                  field=f"{field_prefix}.resource_groups")
        for g in self.resource_groups:
            if not _GROUP_NAME.fullmatch(g) or g.endswith("."):
                raise InvalidArgument(f"{g!r} is not a resource group name",
                                      field=f"{field_prefix}.resource_groups")
        if self.client_secret and self.client_certificate:
            raise InvalidArgument("give a client secret or a certificate, not both",
                                  field=f"{field_prefix}.client_certificate")
        if (self.client_secret or self.client_certificate) and not (
                self.tenant_id and self.client_id):
            raise InvalidArgument("a service principal needs its tenant_id and client_id",
                                  field=f"{field_prefix}.client_id")
        for name in ("arm_endpoint", "storage_account_url"):
            url = getattr(self, name)
            if url and urlsplit(url).scheme not in ("https", "http"):
                raise InvalidArgument(f"{name} is a URL, https://...; got {url!r}",
                                      field=f"{field_prefix}.{name}")

    @property
    def resource_group(self) -> str:
        """Where a recovery site creates what it makes: the first group."""
        return self.resource_groups[0]

    def secrets(self) -> dict[str, str]:
        """The secret part, for encrypted storage; `public()` is the rest."""
        return {k: getattr(self, k) for k in self.SECRETS if getattr(self, k)}

    def public(self) -> AzureSettings:
        return replace(self, **{k: "" for k in self.SECRETS})

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {k: getattr(self, k) for k in self.__dataclass_fields__
                             if getattr(self, k) and k != "resource_groups"}
        d["resource_groups"] = list(self.resource_groups)
        return d

    @property
    def arm(self) -> str:
        return (self.arm_endpoint or PUBLIC_ARM).rstrip("/")

    def transport_options(self) -> dict[str, Any]:
        """What every azure-core client of this site is given: the CA bundle, if any,
        and no retries of the SDK's own (ours are in dr_common.remote)."""
        options: dict[str, Any] = {"retry_total": 0}
        if self.ca_file:
            options["connection_verify"] = self.ca_file
        return options


def credential(settings: AzureSettings):
    """An async token credential for the site: its service principal, or the default
    chain. The caller closes it."""
    from azure.identity import aio as identity
    options: dict[str, Any] = settings.transport_options()
    options.pop("retry_total")  # token requests are few; let azure-identity retry them
    if settings.authority_host:
        options["authority"] = settings.authority_host
        # A private authority (Stack Hub, the harness) is not in Microsoft's instance
        # discovery list, which would be fetched from the internet.
        options["disable_instance_discovery"] = True
    if settings.client_secret:
        return identity.ClientSecretCredential(settings.tenant_id, settings.client_id,
                                               settings.client_secret, **options)
    if settings.client_certificate:
        return identity.CertificateCredential(
            settings.tenant_id, settings.client_id,
            certificate_data=settings.client_certificate.encode(), **options)
    return identity.DefaultAzureCredential(**options)


class Arm:
    """One site's Resource Manager clients and credential: `async with Arm(s) as arm:`
    then `arm.compute.disks...`, `arm.network.network_interfaces...`."""

    def __init__(self, settings: AzureSettings, *,
                 on_response: Callable[[Any], None] | None = None):
        """`on_response(headers)` sees the headers of every ARM answer (recovery's
        limiter reads the x-ms-ratelimit-remaining-* budget from them)."""
        self.settings = settings
        self.on_response = on_response
        self._credential = None
        self.compute: Any = None
        self.network: Any = None

    async def __aenter__(self) -> Arm:
        from azure.mgmt.compute.aio import ComputeManagementClient
        from azure.mgmt.network.aio import NetworkManagementClient
        s = self.settings
        self._credential = credential(s)
        common = dict(base_url=s.arm, credential_scopes=[f"{s.arm}/.default"],
                      polling_interval=LRO_POLL_SECONDS, **s.transport_options())
        if self.on_response is not None:
            hook = self.on_response
            # azure-core's CustomHookPolicy calls it with each PipelineResponse.
            common["raw_response_hook"] = lambda r: hook(r.http_response.headers)
        self.compute = ComputeManagementClient(self._credential, s.subscription_id, **common)
        self.network = NetworkManagementClient(self._credential, s.subscription_id, **common)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for c in (self.compute, self.network, self._credential):
            if c is not None:
                with contextlib.suppress(Exception):
                    await c.close()


def account_name(url: str) -> str:
    """The storage account of `url`: the first label of account.blob.core.windows.net,
    or the first path part of an IP-style URL (Azurite, Azure Stack: http://host/account)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ".blob." in host:
        return host.split(".", 1)[0]
    return parts.path.strip("/").split("/", 1)[0] or host


def storage_account_id(settings: AzureSettings) -> str:
    """The resource id of the site's storage account, which must be in the site's first
    resource group (ARM names it when a disk is imported from one of its blobs)."""
    return (f"/subscriptions/{settings.subscription_id}/resourceGroups/"
            f"{settings.resource_group}/providers/Microsoft.Storage/storageAccounts/"
            f"{account_name(settings.storage_account_url)}")


@contextlib.asynccontextmanager
async def blob_service(settings: AzureSettings, *, field: str) -> AsyncIterator[Any]:
    """An aio BlobServiceClient on the site's storage account, authorized by its account
    key, else a SAS in the URL, else the site's token credential (its principal)."""
    from azure.core.credentials import AzureNamedKeyCredential
    from azure.storage.blob.aio import BlobServiceClient
    url = settings.storage_account_url
    if not url:
        raise InvalidArgument("the site has no storage account (storage_account_url, "
                              "https://ACCOUNT.blob.core.windows.net)", field=field)
    async with contextlib.AsyncExitStack() as stack:
        cred: Any
        if settings.storage_account_key:
            cred = AzureNamedKeyCredential(account_name(url), settings.storage_account_key)
        elif "sig=" in urlsplit(url).query:
            cred = None  # a SAS in the URL is the credential
        else:
            cred = credential(settings)
            stack.push_async_callback(cred.close)
        try:
            service = BlobServiceClient(url, credential=cred, **settings.transport_options())
        except ValueError as e:
            raise InvalidArgument(f"cannot use storage_account_url: {redact(str(e))}",
                                  field=field) from None
        yield await stack.enter_async_context(service)


async def wait(operation: Awaitable[Any]) -> Any:
    """The result of a long-running operation: `await wait(client.x.begin_y(...))`."""
    poller = await operation
    return await poller.result()


def error_code(exc: BaseException) -> str:
    """Azure's error code: ARM's envelope `error.code`, Storage's x-ms-error-code."""
    code = getattr(exc, "error_code", None)
    if code:
        return str(getattr(code, "value", code))
    error = getattr(exc, "error", None)
    if error is not None and getattr(error, "code", None):
        return str(error.code)
    return ""


def _retry_after(exc: BaseException) -> float:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or {}
    try:
        return float(headers.get("Retry-After", 0) or 0)
    except (TypeError, ValueError):
        return 0.0


def _detail(exc: BaseException) -> str:
    error = getattr(exc, "error", None)
    message = getattr(error, "message", None) if error is not None else None
    text = str(message or getattr(exc, "message", "") or exc).strip()
    # Storage appends RequestId/Time/ErrorCode lines and the XML body: the first line says it.
    return redact(text.splitlines()[0] if text else type(exc).__name__)[:300]


def azure_error(exc: BaseException, what: str, *, source: bool = False) -> DRError:
    """Our error for a failed Azure call; `what` says what we were doing ("put pages of
    disk-1"). `source`: the failure is the source's (a SourceError's reason), not the
    target's."""
    if isinstance(exc, DRError):
        return exc
    from azure.core import exceptions as ax
    status = int(getattr(exc, "status_code", 0) or 0)
    code = error_code(exc)
    said = f"{code}: {_detail(exc)}" if code else _detail(exc)
    unavailable = "source-unavailable" if source else "target-unavailable"
    if code in THROTTLE_CODES or status in (429, 503):
        return Throttled(f"Azure throttled the request to {what} ({said})",
                         retry_after=_retry_after(exc))
    if isinstance(exc, ax.ClientAuthenticationError) and status != 403 or status == 401 or \
            "AADSTS" in said:
        return Unauthenticated(f"Azure did not accept the site's credentials to {what} "
                               f"({said}): check the tenant, client id and secret or "
                               f"certificate")
    if status == 403 or code in ACCESS_CODES:
        return PermissionDenied(f"Azure refused to {what} ({said}): the principal needs "
                                f"a role that allows it (docs/AZURE.md)")
    if status == 404 or code in NOT_FOUND_CODES:
        return NotFound(f"cannot {what}: not found ({said})")
    if isinstance(exc, (ax.ServiceRequestError, ax.ServiceResponseError,
                        ConnectionError, TimeoutError)) or _aiohttp_error(exc):
        return DRError(f"cannot reach Azure to {what} ({type(exc).__name__}): retrying",
                       reason=unavailable, retryable=True)
    if status in _RETRYABLE_STATUS:
        return DRError(f"Azure failed to {what} ({said}, HTTP {status}): retrying",
                       reason=unavailable, retryable=True)
    if status == 400:
        return InvalidArgument(f"Azure rejected the request to {what} ({said})")
    if code in ("ContainerAlreadyExists", "BlobAlreadyExists"):
        return AlreadyExists(f"cannot {what}: {said}")
    if status in (409, 412):
        return FailedPrecondition(f"cannot {what}: {said}")
    if status:
        return TargetError(f"Azure rejected the request to {what} ({said}, HTTP {status})",
                           reason="azure-error", retryable=False)
    return TargetError(f"cannot {what}: {type(exc).__name__}: {redact(str(exc))[:300]}",
                       reason="azure-error", retryable=False)


def _aiohttp_error(exc: BaseException) -> bool:
    import aiohttp
    return isinstance(exc, aiohttp.ClientError)


def errors(*, source: bool = False) -> Callable[[Exception, str], DRError]:
    """The `errors` mapper of a `Remote` to Azure."""
    return lambda exc, what: azure_error(exc, what, source=source)


@contextlib.asynccontextmanager
async def calling(what: str, *, source: bool = False) -> AsyncIterator[None]:
    """Maps any Azure exception raised in the block with `azure_error(exc, what)`."""
    try:
        yield
    except DRError:
        raise
    except Exception as exc:
        raise azure_error(exc, what, source=source) from exc


def resource_group_of(resource_id: str) -> str:
    """"/subscriptions/S/resourceGroups/G/providers/..." → "G"."""
    parts = resource_id.split("/")
    for i, p in enumerate(parts[:-1]):
        if p.lower() == "resourcegroups":
            return parts[i + 1]
    raise InvalidArgument(f"{resource_id!r} is not an Azure resource id")


def resource_name(resource_id: str) -> str:
    return resource_id.rstrip("/").rsplit("/", 1)[-1]
