"""Microsoft.Compute as the harness ARM serves it: managed disks, snapshots (and, in
vms.py, virtual machines), from the REST reference (Disks, Snapshots: Create Or Update,
Grant Access, Revoke Access) and its published examples.

A disk's or snapshot's data is an Azurite page blob (blobs.py) with a change journal
(pages.py). diskState follows Azure's: ReadyToUpload (created with Upload) -> ActiveUpload
(while a Write grant is open) -> Unattached (after endGetAccess); Unattached -> ActiveSAS
(while a Read grant is open) -> Unattached; Attached while a VM uses it. Where it knowingly
differs: a grant's expiry invalidates its SAS but leaves diskState as it was until
endGetAccess (Azure moves it back by itself); Standard_LRS/Premium_LRS are names only;
encryption, zones, bursting and performance tiers are echoed, not modelled."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from tests.peers.azure import pages
from tests.peers.azure.arm import ArmError, Context, Kind, base_resource, invalid
from tests.peers.azure.sas import sas_query
from tests.peers.azure.state import Grant, Managed
from tests.peers.azure.wire import Reply

GIB = 1 << 30
MIN_UPLOAD = 20 * (1 << 20) + 512   # Azure: uploadSizeBytes of at least 20 MiB + a VHD footer
MAX_UPLOAD = 32 * (1 << 40) + 512
MAX_GRANT = 3 * 24 * 3600  # durationInSeconds Azure accepts at most? it documents none; a bound


def _now_iso() -> str:
    stamp = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(stamp)) + f".{int(stamp % 1 * 1e7):07d}+00:00"


def operation_not_allowed(message: str) -> ArmError:
    return ArmError(409, "OperationNotAllowed", message)


class ManagedKind(Kind):
    """What disks and snapshots share: data in a managed blob, SAS grants, diskState."""

    create_status = (202, 200)
    blob_kind = ""

    def managed(self, ctx: Context, resource: dict[str, Any]) -> Managed:
        m = ctx.state.managed_of(resource["id"])
        assert m is not None, resource["id"]
        return m

    def delete(self, ctx: Context, resource: dict[str, Any]) -> None:
        state = resource["properties"].get("diskState")
        if state in ("ActiveSAS", "ActiveUpload"):
            raise operation_not_allowed(
                f"{self.noun} {resource['name']} has an active SAS (diskState {state}): call "
                "EndGetAccess before deleting it.")
        if resource.get("managedBy"):
            raise operation_not_allowed(f"Disk {resource['name']} is attached to VM "
                                        f"{resource['managedBy']}.")
        m = self.managed(ctx, resource)
        for grant in ctx.state.grants.values():
            if grant.container == m.container:
                grant.revoked = True
        ctx.state.managed.pop(m.container, None)
        ctx.state.blobs.delete(m.container)

    noun = "Disk"

    def actions(self) -> dict[str, Callable[[Context, dict[str, Any]], Reply]]:
        return {"POST beginGetAccess": self.grant, "POST endGetAccess": self.revoke}

    def grant(self, ctx: Context, resource: dict[str, Any]) -> Reply:
        access = ctx.body.get("access")
        duration = ctx.body.get("durationInSeconds")
        if access not in ("Read", "Write"):
            raise invalid("The value of parameter access is invalid.", "access")
        if not isinstance(duration, int) or not 0 < duration <= MAX_GRANT:
            raise invalid("The value of parameter durationInSeconds is invalid.",
                          "durationInSeconds")
        props = resource["properties"]
        state = props.get("diskState")
        if access == "Write":
            if state not in ("ReadyToUpload", "ActiveUpload"):
                raise operation_not_allowed(
                    f"Write access can only be granted to a {self.noun.lower()} in "
                    f"ReadyToUpload state; {resource['name']} is {state}.")
            new_state = "ActiveUpload"
        else:
            if state in ("ReadyToUpload", "ActiveUpload"):
                raise operation_not_allowed(
                    f"Read access cannot be granted to {resource['name']} in {state} state.")
            if state == "Attached":
                raise operation_not_allowed(
                    f"Disk {resource['name']} is attached to a running VM: deallocate it "
                    "(or snapshot the disk) before granting access.")
            new_state = "ActiveSAS"
        m = self.managed(ctx, resource)
        grant = Grant(str(uuid.uuid4()), m.container, access, time.time() + duration)
        ctx.state.grants[grant.si] = grant
        props["diskState"] = new_state
        url = (f"{ctx.state.storage_endpoint}/{m.container}/{'abcd'}?"
               f"{sas_query(ctx.state.sas_key, grant)}")
        return ctx.lro(202, None, result={"accessSAS": url})

    def revoke(self, ctx: Context, resource: dict[str, Any]) -> Reply:
        m = self.managed(ctx, resource)
        for grant in ctx.state.grants.values():
            if grant.container == m.container:
                grant.revoked = True
        props = resource["properties"]
        if props.get("diskState") in ("ActiveSAS", "ActiveUpload"):
            props["diskState"] = "Attached" if resource.get("managedBy") else "Unattached"
        return ctx.lro(202, None)

    @staticmethod
    def copy_source(ctx: Context, creation: dict[str, Any]) -> tuple[dict[str, Any], Managed]:
        source_id = creation.get("sourceResourceId")
        if not source_id:
            raise invalid("Required parameter 'sourceResourceId' is missing (null).",
                          "creationData.sourceResourceId")
        source = ctx.state.resource(source_id)
        if source is None or source["type"].lower() not in ("microsoft.compute/disks",
                                                            "microsoft.compute/snapshots"):
            raise ArmError(404, "NotFound", f"Resource {source_id} is not found.")
        if source["properties"].get("diskState") in ("ReadyToUpload", "ActiveUpload"):
            raise operation_not_allowed(
                f"{source['name']} is in {source['properties']['diskState']} state: finish the "
                "upload (endGetAccess) first.")
        m = ctx.state.managed_of(source["id"])
        assert m is not None
        return source, m


def _common_properties(size: int, creation: dict[str, Any], body_props: dict[str, Any]
                       ) -> dict[str, Any]:
    props: dict[str, Any] = {
        "creationData": creation,
        "diskSizeGB": -(-size // GIB),
        "diskSizeBytes": size,
        "uniqueId": str(uuid.uuid4()),
        "timeCreated": _now_iso(),
        "provisioningState": "Succeeded",
        "encryption": {"type": "EncryptionAtRestWithPlatformKey"},
        "networkAccessPolicy": body_props.get("networkAccessPolicy", "AllowAll"),
        "publicNetworkAccess": body_props.get("publicNetworkAccess", "Enabled"),
    }
    for key in ("osType", "hyperVGeneration", "supportedCapabilities", "dataAccessAuthMode",
                "supportsHibernation", "securityProfile"):
        if key in body_props:
            props[key] = body_props[key]
    return props


class Disks(ManagedKind):
    type_name = "Microsoft.Compute/disks"
    noun = "Disk"

    def create(self, ctx: Context, existing: dict[str, Any] | None) -> dict[str, Any]:
        props_in = ctx.body.get("properties") or {}
        if existing is not None:  # an update: tags and the few mutable properties
            existing["tags"] = dict(ctx.body.get("tags") or existing.get("tags") or {})
            return existing
        creation = dict(props_in.get("creationData") or {})
        option = creation.get("createOption")
        state = ctx.state
        lineage = str(uuid.uuid4())
        if option == "Empty":
            gb = props_in.get("diskSizeGB")
            if not isinstance(gb, int) or gb < 1:
                raise invalid("Disk size must be given (diskSizeGB >= 1) for an empty disk.",
                              "diskSizeGB")
            size = gb * GIB
            container, journal, disk_state = state.blobs.create(size), pages.Journal(), "Unattached"
        elif option == "Upload":
            size = creation.get("uploadSizeBytes")
            if not isinstance(size, int) or size % 512 or not MIN_UPLOAD <= size <= MAX_UPLOAD:
                raise invalid(f"uploadSizeBytes must be a multiple of 512 between {MIN_UPLOAD} "
                              f"and {MAX_UPLOAD}; got {size}.", "uploadSizeBytes")
            container, journal, disk_state = state.blobs.create(size), pages.Journal(), "ReadyToUpload"
        elif option == "Copy":
            source, m = self.copy_source(ctx, creation)
            size = source["properties"]["diskSizeBytes"]
            with m.io_lock:
                container, journal = state.blobs.copy(m.container), m.journal.copy()
            creation["sourceUniqueId"] = source["properties"]["uniqueId"]
            disk_state = "Unattached"
        else:
            raise invalid(f"createOption '{option}' is not supported by the peer (Empty, "
                          "Upload, Copy are).", "creationData.createOption")
        props = _common_properties(size, creation, props_in)
        props["diskState"] = disk_state
        props["diskIOPSReadWrite"], props["diskMBpsReadWrite"] = 500, 60
        props["uniqueId"] = lineage
        resource = base_resource(ctx, sku=_sku(ctx.body, "Standard_LRS"), properties=props)
        state.managed[container] = Managed(container, "disk", ctx.ref.id, ctx.ref.names[-1],
                                           journal, lineage)
        return resource


class Snapshots(ManagedKind):
    type_name = "Microsoft.Compute/snapshots"
    noun = "Snapshot"

    def create(self, ctx: Context, existing: dict[str, Any] | None) -> dict[str, Any]:
        props_in = ctx.body.get("properties") or {}
        if existing is not None:
            existing["tags"] = dict(ctx.body.get("tags") or existing.get("tags") or {})
            return existing
        creation = dict(props_in.get("creationData") or {})
        if creation.get("createOption") != "Copy":
            raise invalid(f"createOption '{creation.get('createOption')}' is not supported by "
                          "the peer for snapshots (Copy is).", "creationData.createOption")
        source, m = self.copy_source(ctx, creation)
        incremental = bool(props_in.get("incremental", False))
        with m.io_lock:  # the copy and the frozen journal are the same moment
            container = ctx.state.blobs.copy(m.container)
            journal, seq = m.journal.copy(), pages.tick()
        creation["sourceUniqueId"] = source["properties"]["uniqueId"]
        inherited = {k: v for k, v in source["properties"].items()
                     if k in ("osType", "hyperVGeneration", "supportedCapabilities")}
        props = _common_properties(source["properties"]["diskSizeBytes"], creation,
                                   {**inherited, **props_in})
        props.update(incremental=incremental, diskState="Unattached", completionPercent=100.0)
        resource = base_resource(ctx, sku=_sku(ctx.body, "Standard_LRS"), properties=props)
        ctx.state.managed[container] = Managed(container, "snapshot", ctx.ref.id,
                                               ctx.ref.names[-1], journal, m.lineage, seq,
                                               incremental)
        return resource


def _sku(body: dict[str, Any], default: str) -> dict[str, str]:
    name = (body.get("sku") or {}).get("name", default)
    return {"name": name, "tier": "Premium" if name.startswith("Premium") else "Standard"}
