"""Restore destination `vsphere`: a disk uploaded to a datastore as a flat virtual disk.

A monolithicFlat virtual disk (VMware's Virtual Disk Format 1.1) is two files: the data,
`<name>-flat.vmdk`, the disk's bytes from sector 0 with nothing else in them, and a small
text descriptor `<name>.vmdk` that names it and gives its size in sectors. Both are put
with the datastore's HTTP file access (`PUT /folder/<path>?dcPath=&dsName=`, the
session's cookie), which is what vCenter and ESXi offer without VDDK:
- the flat file is one streamed PUT with a Content-Length (the disk's size rounded up to
  a sector): the restore's chunks are sent as they come, in order, from a worker
  thread, so memory holds a few chunks, never the disk; zero chunks are sent as zeros,
  since a flat file has no holes to leave;
- the descriptor is put after the flat file is complete, so a disk a VM could be made
  from never exists half-written;
- then the flat file's size is read back (a one-byte Range GET's Content-Range) and the
  descriptor compared byte for byte; restore_to (restores/__init__.py) reads sampled
  chunks back with Range GETs and compares them with their ids.
A failed upload deletes both files (FileManager.DeleteDatastoreFile_Task).
"""

from __future__ import annotations

import asyncio
import http.client
import uuid
from typing import Any

import structlog

from dr_common.errors import (AlreadyExists, DRError, FailedPrecondition, NotFound,
                              TargetError)
from dr_common.targets.base import TargetEnv
from dr_common.vsphere import Session, VsphereSettings, check_pinned, vsphere_error

log = structlog.get_logger()

SECTOR = 512
# Zeros are sent from one buffer of this size, whatever the chunk size.
ZERO_BUFFER = bytes(1 << 20)
# A datastore PUT of a large disk can stall while the host allocates; this is per socket
# operation, not for the whole upload.
SOCKET_TIMEOUT = 300.0
# Geometry vSphere writes for LSI Logic / PVSCSI disks (heads x sectors per track).
HEADS, SECTORS_PER_TRACK = 255, 63


def descriptor(name: str, size: int, *, adapter: str = "lsilogic") -> bytes:
    """The monolithicFlat descriptor of `<name>-flat.vmdk` holding `size` bytes
    (rounded up to a sector). CID is random: a new disk, with no parent."""
    sectors = -(-size // SECTOR)
    cylinders = max(1, min(65535, sectors // (HEADS * SECTORS_PER_TRACK)))
    cid = uuid.uuid4().hex[:8]
    disk_uuid = " ".join(f"{b:02x}" for b in uuid.uuid4().bytes)
    return (
        "# Disk DescriptorFile\n"
        "version=1\n"
        'encoding="UTF-8"\n'
        f"CID={cid}\n"
        "parentCID=ffffffff\n"
        'createType="monolithicFlat"\n'
        "\n"
        "# Extent description\n"
        f'RW {sectors} FLAT "{name}-flat.vmdk" 0\n'
        "\n"
        "# The Disk Data Base\n"
        "#DDB\n"
        "\n"
        f'ddb.adapterType = "{adapter}"\n'
        f'ddb.geometry.cylinders = "{cylinders}"\n'
        f'ddb.geometry.heads = "{HEADS}"\n'
        f'ddb.geometry.sectors = "{SECTORS_PER_TRACK}"\n'
        f'ddb.uuid = "{disk_uuid}"\n'
        'ddb.virtualHWVersion = "13"\n'
    ).encode()


def _http_error(status: int, body: str, what: str) -> DRError:
    if status == 507 or "space" in body.lower():
        return FailedPrecondition(f"{what}: the datastore is full (HTTP {status} "
                                  f"{body.strip()[:200]}); free space or choose another "
                                  f"datastore", reason="vsphere-insufficient-disk")
    from dr_common.vsphere import DatastoreFiles
    return DatastoreFiles.http_error(status, body, what)


class DatastoreWriter:
    """One flat disk being uploaded. Blocking parts run on the node's worker threads;
    the calls are strictly sequential, so one connection serves them."""

    volume_id = ""  # files on a datastore, not a volume: the descriptor is the name

    def __init__(self, settings: VsphereSettings, datacenter: str, datastore: str, path: str,
                 size: int, env: TargetEnv, overwrite: bool):
        if not path.endswith(".vmdk") or path.endswith("-flat.vmdk"):
            raise FailedPrecondition(f"a datastore destination is a descriptor path "
                                     f"ending in .vmdk, got {path!r}")
        self.settings = settings
        self.datacenter = datacenter
        self.datastore = datastore
        self.path = path
        self.size = size
        self.padded = -(-size // SECTOR) * SECTOR
        self.env = env
        self.overwrite = overwrite
        self.name = f"[{datastore}] {path}"
        self.flat_name = f"[{datastore}] {path[:-len('.vmdk')]}-flat.vmdk"
        self.descriptor = descriptor(path.rsplit("/", 1)[-1][:-len(".vmdk")], size)
        self._session: Session | None = None
        self._conn: http.client.HTTPSConnection | None = None
        self._sent = 0

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.env.executor, fn, *args)

    # -- opening: log in, find the datastore, start the PUT

    def _open(self) -> None:
        from pyVmomi import vim
        self._session = session = Session(self.settings)
        dcs = session.datacenters() if not self.datacenter else [
            d for d in session.datacenters() if d[1] == self.datacenter]
        if not dcs:
            raise NotFound(f"datacenter {self.datacenter} is not in the vCenter at "
                           f"{self.settings.url}", reason="datacenter-not-found")
        dc, self.datacenter = dcs[0]
        stores = {p.get("name"): p for _, p in session.retrieve(
            vim.Datastore, ["name", "summary.freeSpace", "summary.accessible"], root=dc)}
        found = stores.get(self.datastore)
        if found is None:
            raise NotFound(f"datastore {self.datastore} is not in datacenter "
                           f"{self.datacenter}", reason="datastore-not-found")
        if found.get("summary.accessible") is False:
            raise FailedPrecondition(f"datastore {self.datastore} is not accessible")
        free = int(found.get("summary.freeSpace") or 0)
        if free < self.padded:
            raise FailedPrecondition(
                f"datastore {self.datastore} has {free} bytes free; the disk needs "
                f"{self.padded}: free space or choose another datastore",
                reason="vsphere-insufficient-disk")
        if not self.overwrite and self._exists(self.name):
            raise AlreadyExists(f"{self.name} exists; pass overwrite to replace it")
        host, port = self.settings.address
        conn = http.client.HTTPSConnection(host, port, context=session.context,
                                           timeout=SOCKET_TIMEOUT)
        conn.connect()
        check_pinned(conn.sock, self.settings)
        url = session.files.url(self.flat_name, self.datacenter)
        conn.putrequest("PUT", url, skip_accept_encoding=True)
        conn.putheader("Cookie", session.cookie)
        conn.putheader("Content-Type", "application/octet-stream")
        conn.putheader("Content-Length", str(self.padded))
        conn.endheaders()
        self._conn = conn

    def _exists(self, ds_path: str) -> bool:
        url = self._session.files.url(ds_path, self.datacenter)
        resp = self._session.files.request("GET", url, headers={"Range": "bytes=0-0"})
        resp.read()
        return resp.status in (200, 206)

    # -- the stream

    def _send(self, data: bytes | memoryview) -> None:
        try:
            self._conn.send(data)
        except OSError as exc:
            # The server may have answered (and closed) early: a full datastore, say.
            raise self._early_answer() or vsphere_error(
                exc, f"upload {self.flat_name}") from None
        self._sent += len(data)

    def _early_answer(self) -> DRError | None:
        try:
            resp = self._conn.getresponse()
        except (OSError, http.client.HTTPException):
            return None
        return _http_error(resp.status, resp.read(512).decode(errors="replace"),
                           f"upload {self.flat_name}")

    def _zeros(self, length: int) -> None:
        while length:
            n = min(length, len(ZERO_BUFFER))
            self._send(memoryview(ZERO_BUFFER)[:n])
            length -= n

    async def write(self, data: bytes | memoryview) -> None:
        await self._run(self._send, data)

    async def zeros(self, length: int) -> None:
        await self._run(self._zeros, length)

    # -- the end: complete the PUT, the descriptor, read back

    def _finish(self) -> int:
        if self._sent != self.size:
            raise TargetError(f"upload {self.flat_name}: {self._sent} bytes were given for "
                              f"a disk of {self.size}", retryable=False)
        self._zeros(self.padded - self.size)  # up to the sector the descriptor counts
        try:
            resp = self._conn.getresponse()
            body = resp.read(4096).decode(errors="replace")
        except (OSError, http.client.HTTPException) as exc:
            raise vsphere_error(exc, f"upload {self.flat_name}") from None
        finally:
            self._conn.close()
            self._conn = None
        if resp.status not in (200, 201, 204):
            raise _http_error(resp.status, body, f"upload {self.flat_name}")
        files = self._session.files
        resp = files.request("PUT", files.url(self.name, self.datacenter),
                             headers={"Content-Type": "application/octet-stream",
                                      "Content-Length": str(len(self.descriptor))},
                             body=self.descriptor)
        body = resp.read().decode(errors="replace")
        if resp.status not in (200, 201, 204):
            raise _http_error(resp.status, body, f"upload {self.name}")
        resp = files.request("GET", files.url(self.name, self.datacenter))
        got = resp.read()
        if resp.status != 200 or got != self.descriptor:
            raise TargetError(f"{self.name}: the descriptor read back differs from the one "
                              f"written (HTTP {resp.status}, {len(got)} bytes)",
                              reason="restore-verify-failed", retryable=True)
        return self._size_of(self.flat_name)

    def _size_of(self, ds_path: str) -> int:
        files = self._session.files
        resp = files.request("GET", files.url(ds_path, self.datacenter),
                             headers={"Range": f"bytes={self.padded - 1}-{self.padded - 1}"})
        resp.read()
        span = resp.getheader("Content-Range", "")  # "bytes 99-99/100"
        if resp.status == 206 and "/" in span and span.rsplit("/", 1)[1].isdigit():
            return int(span.rsplit("/", 1)[1])
        if resp.status == 416:  # the file is shorter than the disk
            return int(span.rsplit("/", 1)[1]) if span.rsplit("/", 1)[-1].isdigit() else 0
        raise _http_error(resp.status, "", f"read the size of {ds_path}")

    def _finish_mapped(self) -> int:
        try:
            return self._finish()
        except (OSError, http.client.HTTPException) as exc:  # a request after the stream
            raise vsphere_error(exc, f"finish the upload of {self.name}") from None

    async def finish(self) -> int:
        return await self._run(self._finish_mapped)

    def _read(self, offset: int, length: int) -> bytes:
        buf = bytearray(length)
        url = self._session.files.url(self.flat_name, self.datacenter)
        got = self._session.files.read_into(url, offset, memoryview(buf))
        return bytes(buf[:got])

    async def read(self, offset: int, length: int) -> bytes:
        return await self._run(self._read, offset, length)

    # -- failure and release

    def _abort(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._session is None:
            return
        session = self._session
        dc = next((d for d, n in session.datacenters() if n == self.datacenter), None)
        for name in (self.name, self.flat_name):
            try:
                session.call(f"delete {name}",
                             session.content.fileManager.DeleteDatastoreFile_Task,
                             name=name, datacenter=dc, timeout=60)
            except NotFound:
                pass
            except DRError as exc:  # the upload's own error is the one to report
                log.warning("could not delete a partial upload", file=name, error=exc.message)

    async def abort(self) -> None:
        try:
            await self._run(self._abort)
        except Exception as exc:  # noqa: BLE001 - best effort; the upload's error wins
            log.warning("abort of a datastore upload failed", file=self.name, error=str(exc))

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await self._run(session.close)


async def open_writer(dest: Any, site: Any, *, size: int, env: TargetEnv) -> DatastoreWriter:
    """`dest`: a VsphereDatastoreFile; `site`: the destination's SiteSettings."""
    settings = VsphereSettings.from_site(site, field="destination.site")
    writer = DatastoreWriter(settings, dest.datacenter or settings.datacenter, dest.datastore,
                             dest.path, size, env, dest.overwrite)
    try:
        await writer._run(writer._open)
    except BaseException:
        await writer.close()
        raise
    return writer
