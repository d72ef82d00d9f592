"""vSphere access shared by the `vsphere` source and recovery into vSphere.

`VsphereSettings` is what a site says about a vCenter (or an ESXi host): its SDK URL,
an account, and how its TLS certificate is trusted — verified against the system's CAs
by default, or against a CA file, or pinned by its SHA-256 fingerprint. The password is
kept sealed by the control plane and handed to nodes inside a task.

`Session` is one logged-in SOAP session (VMware's pyvmomi bindings). pyvmomi blocks:
every call here is made from a worker thread (`asyncio.to_thread`), never on the event
loop. It offers what both users need and nothing platform-specific beyond that:
property reads through the PropertyCollector (one round trip for many objects, and no
lazy reads of unset properties), task waits that raise vSphere's own fault name and
message, and the datastore's HTTP file access (`/folder`) with the session's cookie,
which is how disks are read and uploaded without VDDK.

`vsphere_error()` turns pyvmomi faults and socket errors into our error hierarchy, in
terms a vSphere operator recognises: the fault's name (InvalidLogin, FileFault,
InsufficientDisk...) and its message, never a password.
"""

from __future__ import annotations

import hashlib
import http.client
import socket
import ssl
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote, urlsplit

from dr_common.errors import (DRError, FailedPrecondition, InvalidArgument, NotFound,
                              PermissionDenied, TargetError, Throttled)

# Faults that mean "busy, try again": another task holds the object, or the host is
# momentarily overloaded.
BUSY_FAULTS = frozenset({"TaskInProgress", "ConcurrentAccess", "HostCommunication",
                         "SystemError", "ResourceInUse"})
NOT_FOUND_FAULTS = frozenset({"ManagedObjectNotFound", "NotFound", "FileNotFound"})
ACCESS_FAULTS = frozenset({"InvalidLogin", "NoPermission", "NotAuthenticated",
                           "InvalidLocale"})
STATE_FAULTS = frozenset({"InvalidState", "InvalidPowerState", "SnapshotFault",
                          "ToolsUnavailable", "InsufficientDisk", "FileFault",
                          "InvalidDatastore", "NoDiskSpace"})
_TIMEOUT = 60.0


@dataclass(frozen=True)
class VsphereSettings:
    """Where and as whom to call vSphere. The password is excluded from repr (logs)."""

    url: str  # https://vcenter.example.com/sdk
    user: str
    password: str = field(default="", repr=False)
    # The CA bundle that signed vCenter's certificate (VMCA's root, exported from the
    # vCenter's "Download trusted root CA certificates" page); empty: the system's CAs.
    ca_file: str = ""
    # Instead of a CA: the certificate's SHA-256 fingerprint (hex, colons optional).
    thumbprint: str = ""
    # The datacenter the site is, when the vCenter has several; empty: all of them.
    datacenter: str = ""

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, field_prefix: str = "vsphere") -> VsphereSettings:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise InvalidArgument(f"unknown vSphere setting(s) {', '.join(unknown)}; known: "
                                  f"{', '.join(sorted(known))}",
                                  field=f"{field_prefix}.{unknown[0]}")
        s = cls(**{k: str(v) for k, v in d.items() if k in known})
        s.check(field_prefix)
        return s

    @classmethod
    def from_site(cls, site: Any, *, field: str = "site") -> VsphereSettings:
        """The settings a task carries (SiteSettings.vsphere, the password unsealed)."""
        if site.WhichOneof("kind") != "vsphere":
            raise InvalidArgument("this task's site has no vSphere settings",
                                  field=f"{field}.vsphere")
        m = site.vsphere
        return cls(url=m.url, user=m.user, password=m.password, ca_file=m.ca_file,
                   thumbprint=m.thumbprint, datacenter=m.datacenter)

    def check(self, field_prefix: str = "vsphere") -> None:
        parts = urlsplit(self.url)
        if parts.scheme != "https" or not parts.hostname:
            raise InvalidArgument(f"a vSphere URL is https://HOST[:PORT]/sdk; got {self.url!r}",
                                  field=f"{field_prefix}.url")
        if not self.user:
            raise InvalidArgument("a vSphere account is needed (--user)",
                                  field=f"{field_prefix}.user")
        if self.thumbprint and len(_hex(self.thumbprint)) not in (40, 64):
            raise InvalidArgument("a thumbprint is the certificate's SHA-256 (or SHA-1) "
                                  "fingerprint in hex", field=f"{field_prefix}.thumbprint")

    def secrets(self) -> dict[str, str]:
        return {"password": self.password} if self.password else {}

    def public(self) -> VsphereSettings:
        return replace(self, password="")

    def as_dict(self) -> dict[str, str]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__ if getattr(self, k)}

    @property
    def address(self) -> tuple[str, int]:
        parts = urlsplit(self.url)
        return parts.hostname or "", parts.port or 443


def _hex(thumbprint: str) -> str:
    return thumbprint.replace(":", "").replace(" ", "").lower()


def fingerprint(host: str, port: int) -> str:
    """The SHA-256 fingerprint of the certificate the server presents (unverified: this
    is what the operator compares against the vCenter's own)."""
    pem = ssl.get_server_certificate((host, port), timeout=10)
    digest = hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def check_pinned(sock: Any, settings: VsphereSettings) -> None:
    """With a pinned thumbprint the TLS context verifies nothing (ssl_context): this is
    the check, on each connection that is not pyvmomi's (pyvmomi checks its own)."""
    pinned = _hex(settings.thumbprint)
    if not pinned:
        return
    der = sock.getpeercert(binary_form=True) or b""
    seen = (hashlib.sha256(der) if len(pinned) == 64 else hashlib.sha1(der)).hexdigest()
    if seen != pinned:
        shown = hashlib.sha256(der).hexdigest().upper()
        raise FailedPrecondition(
            f"vSphere at {settings.address[0]}:{settings.address[1]} presented a "
            f"certificate that the pinned thumbprint {settings.thumbprint} does not match "
            f"(its SHA-256 fingerprint is "
            f"{':'.join(shown[i:i + 2] for i in range(0, len(shown), 2))})",
            reason="certificate-untrusted")


def ssl_context(settings: VsphereSettings) -> ssl.SSLContext:
    if settings.thumbprint:
        # Pinned: the fingerprint is the trust (checked by pyvmomi on connect and by
        # DatastoreFiles on each connection), not a CA.
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    try:
        return ssl.create_default_context(cafile=settings.ca_file or None)
    except (OSError, ssl.SSLError) as e:
        raise InvalidArgument(f"cannot read the CA file {settings.ca_file}: {e}",
                              field="vsphere.ca_file") from None


def fault_name(exc: BaseException) -> str:
    """vSphere's name of a fault ("InvalidLogin"), or the exception's class name."""
    name = getattr(type(exc), "_wsdlName", "") or type(exc).__name__
    return name.rsplit(".", 1)[-1]


def fault_message(exc: BaseException) -> str:
    msg = getattr(exc, "msg", "") or ""
    if not msg:
        messages = [m.message for m in (getattr(exc, "faultMessage", None) or [])
                    if getattr(m, "message", "")]
        msg = "; ".join(messages)
    return msg or str(exc) or fault_name(exc)


def vsphere_error(exc: BaseException, what: str, *, where: str = "") -> DRError:
    """Our error for a failed vSphere call or task: `what` says what was being done."""
    if isinstance(exc, DRError):
        return exc
    at = f" at {where}" if where else ""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return FailedPrecondition(f"{what}{at}: the server's certificate is not trusted "
                                  f"({exc.verify_message})", reason="certificate-untrusted")
    if isinstance(exc, (ConnectionError, TimeoutError, socket.timeout, http.client.HTTPException,
                        ssl.SSLError, OSError)) and not hasattr(exc, "_wsdlName"):
        return TargetError(f"{what}{at}: vSphere unreachable ({type(exc).__name__}: {exc})",
                           reason="target-unavailable")
    name, msg = fault_name(exc), fault_message(exc)
    text = f"{what}{at}: vSphere fault {name}: {msg}"
    if name in ACCESS_FAULTS:
        return PermissionDenied(text, reason="access-denied")
    if name in BUSY_FAULTS:
        return Throttled(text)
    if name in NOT_FOUND_FAULTS:
        return NotFound(text)
    if name in STATE_FAULTS:
        return FailedPrecondition(text, reason=f"vsphere-{_kebab(name)}")
    if name in ("InvalidArgument", "InvalidRequest", "InvalidName"):
        return InvalidArgument(text)
    return TargetError(text, reason="vsphere-fault", retryable=False)


def _kebab(name: str) -> str:
    return "".join(f"-{c.lower()}" if c.isupper() and i else c.lower()
                   for i, c in enumerate(name))


class Session:
    """One logged-in vSphere session. Blocking: use from a worker thread."""

    def __init__(self, settings: VsphereSettings):
        from pyVim import connect
        self.settings = settings
        host, port = settings.address
        path = urlsplit(settings.url).path or "/sdk"
        self.context = ssl_context(settings)
        try:
            if settings.thumbprint:
                # pyvmomi checks a pinned thumbprint only when the CA check fails, and
                # the pinned context checks nothing: so the pin is checked here.
                with socket.create_connection((host, port), timeout=_TIMEOUT) as raw, \
                        self.context.wrap_socket(raw, server_hostname=host) as tls:
                    check_pinned(tls, settings)
            self.si = connect.SmartConnect(
                host=host, port=port, path=path, user=settings.user, pwd=settings.password,
                sslContext=self.context, thumbprint=_hex(settings.thumbprint) or None,
                connectionPoolTimeout=-1)
        except Exception as exc:
            raise self._login_error(exc, host, port) from None
        self.content = self.si.RetrieveContent()
        self.files = DatastoreFiles(self)

    def _login_error(self, exc: BaseException, host: str, port: int) -> DRError:
        where = f"{host}:{port}"
        if getattr(exc, "reason", "") == "certificate-untrusted":
            return exc
        if isinstance(exc, ssl.SSLCertVerificationError) or "thumbprint" in str(exc).lower():
            try:
                seen = fingerprint(host, port)
            except OSError:
                seen = "unknown"
            trust = (f"the pinned thumbprint {self.settings.thumbprint}" if self.settings.thumbprint
                     else f"the CA file {self.settings.ca_file}" if self.settings.ca_file
                     else "the system's CAs")
            return FailedPrecondition(
                f"vCenter at {where} presented a certificate that {trust} does not trust "
                f"(its SHA-256 fingerprint is {seen}); give the CA that signed it "
                f"(ca_file) or pin that fingerprint (thumbprint) if it is the right server",
                reason="certificate-untrusted")
        if fault_name(exc) == "InvalidLogin":
            return PermissionDenied(f"vSphere at {where} refused the login of "
                                    f"{self.settings.user}: wrong user name or password",
                                    reason="invalid-credentials")
        return vsphere_error(exc, "log in to vSphere", where=where)

    def close(self) -> None:
        from pyVim import connect
        self.files.close()
        try:
            connect.Disconnect(self.si)
        except Exception:  # the server may be gone already: nothing left to release
            pass

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def cookie(self) -> str:
        """`vmware_soap_session=...`, the header value /folder requests need."""
        from http.cookies import SimpleCookie
        jar = SimpleCookie(self.si._stub.cookie)
        morsel = jar.get("vmware_soap_session")
        return f"vmware_soap_session={morsel.value}" if morsel else ""

    # -- properties ------------------------------------------------------------------

    def retrieve(self, obj_type: Any, paths: Iterable[str], *, root: Any = None,
                 objects: Iterable[Any] = ()) -> list[tuple[Any, dict[str, Any]]]:
        """(object, {path: value}) for every object of `obj_type` under `root` (the root
        folder by default), or for the given `objects`; unset properties are absent."""
        from pyVmomi import vmodl
        pc = self.content.propertyCollector
        paths = list(paths)
        view = None
        if objects:
            obj_specs = [vmodl.query.PropertyCollector.ObjectSpec(obj=o) for o in objects]
        else:
            view = self.content.viewManager.CreateContainerView(
                root or self.content.rootFolder, [obj_type], True)
            traverse = vmodl.query.PropertyCollector.TraversalSpec(
                name="view", path="view", skip=False, type=type(view))
            obj_specs = [vmodl.query.PropertyCollector.ObjectSpec(obj=view, skip=True,
                                                                  selectSet=[traverse])]
        spec = vmodl.query.PropertyCollector.FilterSpec(
            objectSet=obj_specs,
            propSet=[vmodl.query.PropertyCollector.PropertySpec(type=obj_type, pathSet=paths)])
        out: list[tuple[Any, dict[str, Any]]] = []
        try:
            result = pc.RetrievePropertiesEx([spec], vmodl.query.PropertyCollector.RetrieveOptions())
            while result is not None:
                for o in result.objects:
                    out.append((o.obj, {p.name: p.val for p in (o.propSet or [])}))
                if not result.token:
                    break
                result = pc.ContinueRetrievePropertiesEx(result.token)
        finally:
            if view is not None:
                view.Destroy()
        return out

    def get(self, obj: Any, paths: Iterable[str]) -> dict[str, Any]:
        found = self.retrieve(type(obj), paths, objects=[obj])
        return found[0][1] if found else {}

    # -- tasks -----------------------------------------------------------------------

    def wait(self, task: Any, what: str, *, timeout: float = 600.0) -> Any:
        """The task's result once it succeeded; its fault as our error otherwise."""
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            info = self.get(task, ["info.state", "info.error", "info.result"])
            state = info.get("info.state")
            if state == "success":
                return info.get("info.result")
            if state == "error":
                raise vsphere_error(info.get("info.error"), what)
            if time.monotonic() > deadline:
                raise TargetError(f"{what}: the vSphere task did not finish within "
                                  f"{timeout:.0f}s", reason="vsphere-task-timeout")
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)

    def call(self, what: str, fn: Any, *args: Any, timeout: float = 600.0, **kwargs: Any) -> Any:
        """Runs a method that returns a task and waits for it; faults become our errors."""
        try:
            task = fn(*args, **kwargs)
        except DRError:
            raise
        except Exception as exc:
            raise vsphere_error(exc, what) from None
        return self.wait(task, what, timeout=timeout)

    # -- inventory helpers -------------------------------------------------------------

    def datacenters(self) -> list[tuple[Any, str]]:
        from pyVmomi import vim
        found = [(dc, p.get("name", "")) for dc, p in self.retrieve(vim.Datacenter, ["name"])]
        if self.settings.datacenter:
            found = [f for f in found if f[1] == self.settings.datacenter]
            if not found:
                raise NotFound(f"datacenter {self.settings.datacenter} is not in the vCenter "
                               f"at {self.settings.url}", reason="datacenter-not-found")
        return found


def parse_ds_path(path: str) -> tuple[str, str]:
    """"[LocalDS_0] vm-1/disk.vmdk" -> ("LocalDS_0", "vm-1/disk.vmdk")."""
    if not path.startswith("[") or "]" not in path:
        raise InvalidArgument(f"not a datastore path: {path!r}")
    ds, rest = path[1:].split("]", 1)
    return ds, rest.strip()


def flat_file(descriptor: str) -> str:
    """The data file of a flat disk whose descriptor is `descriptor` (a datastore path):
    "[ds] vm/disk.vmdk" -> "[ds] vm/disk-flat.vmdk"."""
    if not descriptor.endswith(".vmdk"):
        raise InvalidArgument(f"not a virtual disk descriptor: {descriptor!r}")
    return descriptor[:-len(".vmdk")] + "-flat.vmdk"


class DatastoreFiles:
    """HTTP access to datastore files (`/folder/PATH?dcPath=DC&dsName=DS`) with the
    session's cookie: one keep-alive connection per thread, so worker threads read in
    parallel."""

    def __init__(self, session: Session):
        self._session = session
        self._local = threading.local()
        self._all: list[http.client.HTTPSConnection] = []
        self._lock = threading.Lock()

    def url(self, ds_path: str, datacenter: str) -> str:
        ds, rel = parse_ds_path(ds_path)
        return (f"/folder/{quote(rel)}?dcPath={quote(datacenter, safe='')}"
                f"&dsName={quote(ds, safe='')}")

    def _conn(self) -> http.client.HTTPSConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            host, port = self._session.settings.address
            conn = http.client.HTTPSConnection(host, port, context=self._session.context,
                                               timeout=_TIMEOUT)
            conn.connect()
            check_pinned(conn.sock, self._session.settings)
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def request(self, method: str, url: str, *, headers: dict[str, str] | None = None,
                body: Any = None) -> http.client.HTTPResponse:
        """One request on this thread's connection (reconnecting once if the kept-alive
        connection was closed by the server); the caller reads the response."""
        hdrs = {"Cookie": self._session.cookie, **(headers or {})}
        for attempt in (1, 2):
            conn = self._conn()
            try:
                conn.request(method, url, body=body, headers=hdrs)
                return conn.getresponse()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self._drop()
                if attempt == 2 or body is not None:
                    raise
        raise AssertionError("unreachable")

    def read_into(self, url: str, offset: int, view: memoryview) -> int:
        """Reads len(view) bytes at `offset` of the file into `view` (a Range GET)."""
        end = offset + len(view) - 1
        try:
            resp = self.request("GET", url, headers={"Range": f"bytes={offset}-{end}"})
            if resp.status not in (200, 206):
                body = resp.read(512).decode(errors="replace")
                self._drop()
                raise self.http_error(resp.status, body, f"read {url}")
            if resp.status == 200 and offset:
                resp.close()
                self._drop()
                raise TargetError(f"read {url}: the datastore ignored the Range header",
                                  reason="vsphere-range-unsupported", retryable=False)
            got = 0
            while got < len(view):
                n = resp.readinto(view[got:])
                if not n:
                    break
                got += n
            if resp.status == 200:
                resp.close()
                self._drop()  # the rest of a whole-file answer is not wanted
            return got
        except (OSError, http.client.HTTPException) as exc:
            self._drop()
            raise vsphere_error(exc, f"read {url}") from None

    @staticmethod
    def http_error(status: int, body: str, what: str) -> DRError:
        text = f"{what}: HTTP {status} {body.strip()[:200]}"
        if status in (401, 403):
            return PermissionDenied(text, reason="access-denied")
        if status == 404:
            return NotFound(text)
        if status in (503, 429):
            return Throttled(text)
        if status == 507:
            return FailedPrecondition(text, reason="vsphere-insufficient-disk")
        return TargetError(text, retryable=status >= 500)

    def close(self) -> None:
        with self._lock:
            for c in self._all:
                c.close()
            self._all.clear()
