"""SOAP methods the front answers or corrects on their way to and from vcsim, and fault
injection. Every call is counted by method; a call with no entry in HANDLERS goes to vcsim
as it came.

vcsim 0.24.2 runs every task to completion before it answers the call, so a task the front
forwards has already succeeded or failed when the answer comes back: the front reads the
task's outcome (`/_vcsim/taskinfo`) and updates its model before the client can see it."""

from __future__ import annotations

from typing import Any, Callable
from xml.sax.saxutils import escape

from tests.peers.vsphere import soap
from tests.peers.vsphere.disks import ChangeIdError, extents
from tests.peers.vsphere.inventory import NotFound
from tests.peers.vsphere.wire import Reply, xml_reply

Handler = Callable[[Any, soap.Call, str, Any, bytes], Reply]


def fault(kind: str, message: str, fields: str = "") -> Reply:
    return xml_reply(500, soap.fault(kind, message, fields))


def task_name(method: str) -> str:
    """vSphere's task name for a method: CreateSnapshot_Task -> createSnapshot."""
    name = method[:-5] if method.endswith("_Task") else method
    return name[0].lower() + name[1:]


def task_of(reply: Reply) -> str | None:
    """The Task a forwarded call answered, when it answered one."""
    if reply[0] != 200:
        return None
    value = soap.returnval(reply[2])
    return value[1] if value and value[0] == "Task" else None


def succeeded(peer: Any, reply: Reply) -> dict[str, str] | None:
    task = task_of(reply)
    if task is None:
        return None
    info = peer.vcsim.task_info(task)
    return info if info.get("state") == "success" else None


def handle(peer: Any, call: soap.Call | None, path: str, headers: Any, body: bytes) -> Reply:
    method = call.method if call else "unparsed"
    peer.state.count_call(method)
    rule = peer.state.draw(method) if call else None
    if rule is not None:
        from tests.peers.vsphere.front import Reset
        if rule.reset:
            raise Reset()
        if rule.fault and not rule.in_task:
            return fault(rule.fault, rule.message or f"injected {rule.fault}")
        if rule.in_task:  # the call is accepted, its task fails
            ref = peer.vcsim.task(call.this_type, call.this, task_name(method), fault=rule.fault,
                                  delay=rule.task_seconds)
            return xml_reply(200, soap.moref_response(method, "Task", ref))
    handler = HANDLERS.get(method)
    try:
        reply = (handler(peer, call, path, headers, body) if handler
                 else peer.forward("POST", path, headers, body))
    except NotFound as e:
        return fault("ManagedObjectNotFound", str(e))
    if rule is not None and rule.task_seconds:
        reply = slow(peer, call, reply, rule.task_seconds)
    return reply


def slow(peer: Any, call: soap.Call, reply: Reply, seconds: float) -> Reply:
    """The same outcome as the real task, in a task that stays running `seconds`."""
    task = task_of(reply)
    if task is None:
        return reply
    info = peer.vcsim.task_info(task)
    result = None
    if info.get("result"):
        kind = "VirtualMachineSnapshot" if call.method.startswith("CreateSnapshot") else (
            "VirtualMachine")
        result = (kind, info["result"])
    ref = peer.vcsim.task(call.this_type, call.this, task_name(call.method),
                          fault=info.get("error", ""), delay=seconds, result=result)
    return xml_reply(200, soap.moref_response(call.method, "Task", ref))


# -- the methods


def fetch(peer: Any, call: soap.Call, path: str, headers: Any, body: bytes) -> Reply:
    """vcsim 0.24.2 panics on Fetch of an unset property (pyvmomi 9 reads properties with
    Fetch): ask RetrievePropertiesEx instead, which answers unset as absent."""
    if call.this_type == "ServiceInstance":
        return peer.forward("POST", path, headers, body)
    question = soap.retrieve_one(call.this_type, call.this, call.text("prop"))
    status, got, data = peer.forward("POST", path, headers, question)
    if status != 200:
        return status, got, data
    return xml_reply(200, soap.fetch_from_retrieve(data))


def create_snapshot(peer: Any, call: soap.Call, path: str, headers: Any, body: bytes) -> Reply:
    vm = peer.inventory.vm(call.this)
    if call.flag("quiesce") and vm["tools"] != "guestToolsRunning":
        # vSphere: "Cannot quiesce this virtual machine because VMware Tools is not
        # currently available." - the task fails with ToolsUnavailable
        ref = peer.vcsim.task(call.this_type, call.this, "createSnapshot",
                              fault="ToolsUnavailable")
        return xml_reply(200, soap.moref_response(call.method, "Task", ref))
    reply = peer.forward("POST", path, headers, body)
    info = succeeded(peer, reply)
    if info and info.get("result"):
        peer.inventory.snapshot_created(vm["ref"], info["result"])
    return reply


def remove_snapshot(peer: Any, call: soap.Call, path: str, headers: Any, body: bytes) -> Reply:
    vm, family = peer.inventory.vm_of_snapshot(call.this)
    removed = family if call.flag("removeChildren") else [call.this]
    reply = peer.forward("POST", path, headers, body)
    if succeeded(peer, reply):
        peer.inventory.snapshots_removed(vm["ref"], removed)
    return reply


def remove_all_snapshots(peer: Any, call: soap.Call, path: str, headers: Any,
                         body: bytes) -> Reply:
    vm = peer.inventory.vm(call.this)
    removed: list[str] = []
    for root in [s["ref"] for s in vm["snapshots"] if not s["parent"]]:
        removed += peer.inventory.vm_of_snapshot(root)[1]
    reply = peer.forward("POST", path, headers, body)
    if succeeded(peer, reply):
        peer.inventory.snapshots_removed(vm["ref"], removed)
    return reply


def revert(peer: Any, call: soap.Call, path: str, headers: Any, body: bytes) -> Reply:
    return fault("NotSupported", "the vSphere peer does not model reverting disk content "
                                 "to a snapshot")


def then_sync(peer: Any, call: soap.Call, path: str, headers: Any, body: bytes) -> Reply:
    """Calls that change VMs' devices or CBT (ReconfigVM, CreateVM, ...): vSphere shows real
    capacities, labels and changeIds on the new disks too."""
    reply = peer.forward("POST", path, headers, body)
    if succeeded(peer, reply):
        peer.inventory.sync()
    return reply


def power_on(peer: Any, call: soap.Call, path: str, headers: Any, body: bytes) -> Reply:
    reply = peer.forward("POST", path, headers, body)
    if succeeded(peer, reply):
        peer.inventory.powered_on(call.this)
    return reply


def destroy(peer: Any, call: soap.Call, path: str, headers: Any, body: bytes) -> Reply:
    reply = peer.forward("POST", path, headers, body)
    if call.this_type == "VirtualMachine" and succeeded(peer, reply):
        peer.inventory.destroyed(call.this)
    return reply


def refresh_datastore(peer: Any, call: soap.Call, path: str, headers: Any,
                      body: bytes) -> Reply:
    """vcsim re-reads its temp directory's statfs here; a test's space setting stays."""
    reply = peer.forward("POST", path, headers, body)
    for ds in list(peer.state.datastores):
        peer.apply_datastore(ds)
    return reply


def query_changed_disk_areas(peer: Any, call: soap.Call, path: str, headers: Any,
                             body: bytes) -> Reply:
    """vim.VirtualMachine.QueryChangedDiskAreas (declared faults: FileFault, NotFound)."""
    if not peer.logged_in(headers):
        return fault("NotAuthenticated", "The session is not authenticated.")
    inv = peer.inventory
    with inv.lock:
        vm = inv.sync_vm(inv.vm(call.this))
        try:
            key, start = int(call.text("deviceKey")), int(call.text("startOffset"))
        except ValueError:
            return fault("InvalidArgument", "deviceKey and startOffset must be numbers",
                         "<invalidProperty>deviceKey</invalidProperty>")
        change_id, snapshot = call.text("changeId"), call.text("snapshot")
        disk = inv.devices.get((vm["ref"], key))
        if disk is None or key not in [d["key"] for d in vm["disks"]]:
            return fault("NotFound", f"The object or item referred to could not be found: "
                                     f"no virtual disk with key {key}")
        file = f"<file>{escape(disk.current_file)}</file>"
        if not vm["cbt"] or not disk.tracking:
            return fault("FileFault", f"Error caused by file {disk.current_file}: change "
                                      f"tracking is not in effect for this disk", file)
        if not snapshot:
            if vm["power"] != "poweredOff":
                return fault("FileFault", f"Error caused by file {disk.current_file}: the "
                                          f"disk is in use; query a snapshot of a running VM",
                             file)
            snapshot = "*current*"
            disk.frozen[snapshot], disk.snap_seq[snapshot] = disk.layers[-1], (
                f"{disk.tracking}/{disk.seq + 1}")
        elif snapshot not in disk.frozen:
            return fault("InvalidArgument", f"A specified parameter was not correct: "
                                            f"snapshot {snapshot} is not a snapshot of this VM",
                         "<invalidProperty>snapshot</invalidProperty>")
        try:
            if start < 0 or start >= disk.capacity:
                return fault("InvalidArgument", "A specified parameter was not correct: "
                                                "startOffset", "<invalidProperty>startOffset"
                                                "</invalidProperty>")
            blocks = disk.changed_blocks(snapshot, change_id)
        except ChangeIdError as e:
            if e.malformed:
                return fault("InvalidArgument", f"A specified parameter was not correct: "
                                                f"changeId ({e})",
                             "<invalidProperty>changeId</invalidProperty>")
            return fault("FileFault", f"Error caused by file {disk.current_file}: {e}", file)
        finally:
            if snapshot == "*current*":
                disk.frozen.pop(snapshot, None)
                disk.snap_seq.pop(snapshot, None)
        length, areas = extents(blocks, start, peer.state.query_span, peer.state.query_extents,
                                disk.capacity)
    inner = "".join(f"<changedArea><start>{a}</start><length>{n}</length></changedArea>"
                    for a, n in areas)
    return xml_reply(200, soap.response(
        "QueryChangedDiskAreas", f'<returnval><startOffset>{start}</startOffset>'
                                 f'<length>{length}</length>{inner}</returnval>'))


HANDLERS: dict[str, Handler] = {
    "Fetch": fetch,
    "CreateSnapshot_Task": create_snapshot,
    "RemoveSnapshot_Task": remove_snapshot,
    "RemoveAllSnapshots_Task": remove_all_snapshots,
    "RevertToSnapshot_Task": revert,
    "RevertToCurrentSnapshot_Task": revert,
    "ReconfigVM_Task": then_sync,
    "CreateVM_Task": then_sync,
    "CloneVM_Task": then_sync,
    "RegisterVM_Task": then_sync,
    "PowerOffVM_Task": then_sync,
    "PowerOnVM_Task": power_on,
    "Destroy_Task": destroy,
    "RefreshDatastore": refresh_datastore,
    "RefreshDatastoreStorageInfo": refresh_datastore,
    "QueryChangedDiskAreas": query_changed_disk_areas,
}
