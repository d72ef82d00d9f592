"""The vSphere peer on its own, through pyvmomi, against the vSphere API reference: login
and TLS, inventory, CBT and snapshots (the base frozen while snapshots exist, changeIds
advancing per snapshot), QueryChangedDiskAreas (allocated areas, exact changes, paging,
faults), datastore HTTP access (session, Range, PUT, space) and injected faults."""

from __future__ import annotations

import hashlib
import http.client
import ssl
import time
import urllib.parse

import pytest

from pyVim.connect import Disconnect, SmartConnect
from pyVim.task import WaitForTask
from pyVmomi import vim

from tests.helpers.vsphere import connect, disks, enable_cbt, snapshot
from tests.helpers.vsphere import find_vm as _find_vm

MiB = 1 << 20
BLOCK = 64 << 10
VM = "DC0_H0_VM0"


# -- helpers


@pytest.fixture
def si(vsphere_peer):
    si = connect(vsphere_peer)
    yield si
    try:
        Disconnect(si)
    except Exception:
        pass


def find_vm(si, name=VM):
    return _find_vm(si, name)


def change_id(snap, key):
    return next(d for d in disks(snap.config) if d.key == key).backing.changeId


def changed_areas(vm, snap, key, cid, capacity):
    """Every (start, length) QueryChangedDiskAreas reports, looping on startOffset."""
    areas, offset, calls = [], 0, 0
    while offset < capacity:
        info = vm.QueryChangedDiskAreas(snapshot=snap, deviceKey=key, startOffset=offset,
                                        changeId=cid)
        assert info.startOffset == offset and info.length > 0
        areas += [(a.start, a.length) for a in info.changedArea or []]
        offset += info.length
        calls += 1
    return areas, calls


def cookie(si):
    return si._stub.cookie.split(";")[0]


def folder(peer, method, path, *, session=None, headers=None, body=None):
    conn = http.client.HTTPSConnection(peer.host, peer.port, timeout=30,
                                       context=ssl.create_default_context(cafile=str(peer.ca_file)))
    query = urllib.parse.urlencode({"dcPath": peer.datacenter, "dsName": peer.datastore})
    sent = dict(headers or {})
    if session:
        sent["Cookie"] = session
    conn.request(method, f"/folder/{path}?{query}", body=body, headers=sent)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp, data


# -- login, TLS, inventory


def test_login_needs_the_password_and_tls_the_peers_ca(vsphere_peer, tmp_path):
    si = connect(vsphere_peer)
    assert si.content.about.apiType == "VirtualCenter"
    Disconnect(si)
    with pytest.raises(vim.fault.InvalidLogin):
        connect(vsphere_peer, password="wrong")
    from tests.peers.vsphere.tls import make_certificate
    other, _ = make_certificate(tmp_path)
    with pytest.raises(ssl.SSLCertVerificationError):
        SmartConnect(host=vsphere_peer.host, port=vsphere_peer.port, user=vsphere_peer.user,
                     pwd=vsphere_peer.password,
                     sslContext=ssl.create_default_context(cafile=str(other)))
    der = ssl.PEM_cert_to_DER_cert(ssl.get_server_certificate((vsphere_peer.host,
                                                               vsphere_peer.port)))
    assert vsphere_peer.thumbprint_sha256 == ":".join(
        f"{b:02X}" for b in hashlib.sha256(der).digest())
    assert len(vsphere_peer.thumbprint_sha1.split(":")) == 20


def test_inventory_reads_as_vsphere_shows_it(si, vsphere_peer):
    content = si.RetrieveContent()
    assert [dc.name for dc in content.rootFolder.childEntity] == [vsphere_peer.datacenter]
    vm = find_vm(si)
    assert vm.snapshot is None  # unset property: vcsim 0.24.2 alone panics here
    assert vm.runtime.powerState == "poweredOn"
    assert vm.guest.toolsRunningStatus == "guestToolsNotRunning"
    assert not vm.config.changeTrackingEnabled
    (disk,) = disks(vm.config)
    assert disk.deviceInfo.label == "Hard disk 1"
    assert disk.capacityInBytes == 64 * MiB
    assert disk.backing.fileName == f"[{vsphere_peer.datastore}] {VM}/disk1.vmdk"
    assert not disk.backing.changeId
    vsphere_peer.set_tools(VM, True)
    assert vm.guest.toolsRunningStatus == "guestToolsRunning"


# -- snapshots and CBT


def test_snapshot_freezes_the_base_until_removed(si, vsphere_peer):
    vm = find_vm(si)
    key = disks(vm.config)[0].key
    vsphere_peer.write(VM, key, 0, b"A" * BLOCK)
    snap = snapshot(vm, "s1")
    vsphere_peer.write(VM, "Hard disk 1", BLOCK, b"B" * BLOCK)
    session = cookie(si)
    _, base = folder(vsphere_peer, "GET", f"{VM}/disk1-flat.vmdk", session=session,
                     headers={"Range": f"bytes=0-{2 * BLOCK - 1}"})
    assert base == b"A" * BLOCK + bytes(BLOCK)  # the write after the snapshot is in the delta
    assert vsphere_peer.read(VM, key, 0, 2 * BLOCK) == b"A" * BLOCK + b"B" * BLOCK
    # vSphere shows the running delta and the snapshot's frozen base
    current = disks(vm.config)[0].backing
    assert current.fileName == f"[LocalDS_0] {VM}/disk1-000001.vmdk"
    assert current.parent.fileName == f"[LocalDS_0] {VM}/disk1.vmdk"
    assert disks(snap.config)[0].backing.fileName == f"[LocalDS_0] {VM}/disk1.vmdk"
    assert vsphere_peer.stats()["snapshots"][VM] == 1
    WaitForTask(snap.RemoveSnapshot_Task(removeChildren=False))
    _, base = folder(vsphere_peer, "GET", f"{VM}/disk1-flat.vmdk", session=session,
                     headers={"Range": f"bytes=0-{2 * BLOCK - 1}"})
    assert base == b"A" * BLOCK + b"B" * BLOCK
    assert disks(vm.config)[0].backing.fileName == f"[LocalDS_0] {VM}/disk1.vmdk"


def test_a_users_snapshot_keeps_the_base_frozen_at_it(si, vsphere_peer):
    vm = find_vm(si)
    user = snapshot(vm, "user")
    vsphere_peer.write(VM, "Hard disk 1", 0, b"x" * BLOCK)
    ours = snapshot(vm, "ours")
    WaitForTask(ours.RemoveSnapshot_Task(removeChildren=False))
    assert vsphere_peer.read(VM, "Hard disk 1", 0, BLOCK, base=True) == bytes(BLOCK)
    WaitForTask(user.RemoveSnapshot_Task(removeChildren=False))
    assert vsphere_peer.read(VM, "Hard disk 1", 0, BLOCK, base=True) == b"x" * BLOCK


def test_cbt_takes_effect_at_a_stun_and_change_ids_advance_per_snapshot(si, vsphere_peer):
    vm = find_vm(si)
    key = disks(vm.config)[0].key
    WaitForTask(vm.ReconfigVM_Task(vim.vm.ConfigSpec(changeTrackingEnabled=True)))
    assert vm.config.changeTrackingEnabled
    assert not disks(vm.config)[0].backing.changeId  # not in effect before a stun
    s1 = snapshot(vm, "s1")
    s2 = snapshot(vm, "s2")
    id1, id2 = change_id(s1, key), change_id(s2, key)
    uuid1, seq1 = id1.split("/")
    assert uuid1 == id2.split("/")[0] and uuid1.startswith("52 ") and len(uuid1) == 47
    assert int(id2.split("/")[1]) == int(seq1) + 1
    assert disks(vm.config)[0].backing.changeId == id2


def test_query_changed_disk_areas_all_and_between_snapshots(si, vsphere_peer):
    vm = find_vm(si)
    key = disks(vm.config)[0].key
    cap = 64 * MiB
    vsphere_peer.write(VM, key, 3 * BLOCK, b"a" * (2 * BLOCK))
    enable_cbt(vm)
    s1 = snapshot(vm, "s1")
    areas, _ = changed_areas(vm, s1, key, "*", cap)
    assert areas == [(3 * BLOCK, 2 * BLOCK)]  # "*": allocated areas only
    vsphere_peer.write(VM, key, 10 * MiB, b"b" * BLOCK)
    vsphere_peer.write(VM, key, 40 * MiB, b"c" * (3 * BLOCK))
    vsphere_peer.discard(VM, key, 3 * BLOCK, BLOCK)
    id1 = change_id(s1, key)
    WaitForTask(s1.RemoveSnapshot_Task(removeChildren=False))
    s2 = snapshot(vm, "s2")
    areas, _ = changed_areas(vm, s2, key, id1, cap)
    assert areas == [(3 * BLOCK, BLOCK), (10 * MiB, BLOCK), (40 * MiB, 3 * BLOCK)]
    areas, _ = changed_areas(vm, s2, key, change_id(s2, key), cap)
    assert areas == []


def test_query_changed_disk_areas_pages_a_large_disk(si, vsphere_peer):
    vm = find_vm(si)
    key = disks(vm.config)[0].key
    vsphere_peer.set_query_limits(span=8 * MiB, extents=2)
    offsets = [0, 5 * MiB, 6 * MiB, 7 * MiB, 30 * MiB, 63 * MiB]
    for off in offsets:
        vsphere_peer.write(VM, key, off, b"z" * BLOCK)
    enable_cbt(vm)
    snap = snapshot(vm, "s")
    areas, calls = changed_areas(vm, snap, key, "*", 64 * MiB)
    assert areas == [(off, BLOCK) for off in offsets]
    assert calls >= 8  # 8 MiB per answer at most, and 2 extents
    first = vm.QueryChangedDiskAreas(snapshot=snap, deviceKey=key, startOffset=0, changeId="*")
    assert len(first.changedArea) == 2 and first.length == 5 * MiB + BLOCK


def test_query_changed_disk_areas_faults(si, vsphere_peer):
    vm = find_vm(si)
    key = disks(vm.config)[0].key
    snap = snapshot(vm, "no-cbt")
    with pytest.raises(vim.fault.FileFault):  # CBT not enabled
        vm.QueryChangedDiskAreas(snapshot=snap, deviceKey=key, startOffset=0, changeId="*")
    WaitForTask(snap.RemoveSnapshot_Task(removeChildren=False))
    enable_cbt(vm)
    s1 = snapshot(vm, "s1")
    old = change_id(s1, key)
    with pytest.raises(vim.fault.NotFound):
        vm.QueryChangedDiskAreas(snapshot=s1, deviceKey=key + 1, startOffset=0, changeId="*")
    with pytest.raises(vmodl_fault("InvalidArgument")):
        vm.QueryChangedDiskAreas(snapshot=s1, deviceKey=key, startOffset=0, changeId="nonsense")
    other = "52 00 00 00 00 00 00 00-00 00 00 00 00 00 00 00/1"
    with pytest.raises(vim.fault.FileFault):  # another disk's (unknown) tracking id
        vm.QueryChangedDiskAreas(snapshot=s1, deviceKey=key, startOffset=0, changeId=other)
    with pytest.raises(vim.fault.FileFault):  # a running VM needs a snapshot
        vm.QueryChangedDiskAreas(deviceKey=key, startOffset=0, changeId="*")
    WaitForTask(s1.RemoveSnapshot_Task(removeChildren=False))
    vsphere_peer.cbt_reset(VM, key)
    s2 = snapshot(vm, "s2")
    assert change_id(s2, key).split("/")[0] != old.split("/")[0]
    with pytest.raises(vim.fault.FileFault):  # ids from before a CBT reset are unknown
        vm.QueryChangedDiskAreas(snapshot=s2, deviceKey=key, startOffset=0, changeId=old)
    assert vm.QueryChangedDiskAreas(snapshot=s2, deviceKey=key, startOffset=0,
                                    changeId="*").length > 0


def vmodl_fault(name):
    from pyVmomi import vmodl
    return getattr(vmodl.fault, name)


def test_quiesce_needs_running_tools(si, vsphere_peer):
    vm = find_vm(si)
    with pytest.raises(vim.fault.ToolsUnavailable):
        snapshot(vm, "q", quiesce=True)
    assert vm.snapshot is None
    vsphere_peer.set_tools(VM, True)
    assert snapshot(vm, "q", quiesce=True) is not None


def test_a_disk_added_later_has_content_and_cbt(si, vsphere_peer):
    vm = find_vm(si)
    controller = disks(vm.config)[0].controllerKey
    spec = vim.vm.device.VirtualDeviceSpec(
        operation="add", fileOperation="create",
        device=vim.vm.device.VirtualDisk(
            key=-1, controllerKey=controller, unitNumber=1, capacityInKB=8 * 1024,
            backing=vim.vm.device.VirtualDisk.FlatVer2BackingInfo(diskMode="persistent",
                                                                  thinProvisioned=True)))
    WaitForTask(vm.ReconfigVM_Task(vim.vm.ConfigSpec(deviceChange=[spec])))
    added = disks(vm.config)[1]
    assert added.capacityInBytes == 8 * MiB and added.deviceInfo.label == "Hard disk 2"
    vsphere_peer.write(VM, added.key, MiB, b"new")
    assert vsphere_peer.read(VM, "Hard disk 2", MiB, 3) == b"new"


# -- datastore HTTP access


def test_folder_needs_a_logged_in_session(si, vsphere_peer):
    resp, _ = folder(vsphere_peer, "GET", f"{VM}/disk1-flat.vmdk")
    assert resp.status == 401
    resp, _ = folder(vsphere_peer, "GET", f"{VM}/disk1-flat.vmdk",
                     session='vmware_soap_session="forged"')
    assert resp.status == 401
    resp, data = folder(vsphere_peer, "GET", f"{VM}/disk1.vmdk", session=cookie(si))
    assert resp.status == 200 and b'RW 131072 VMFS "disk1-flat.vmdk"' in data


def test_range_get_answers_206_and_is_counted(si, vsphere_peer):
    vsphere_peer.write(VM, "Hard disk 1", MiB, b"0123456789")
    vsphere_peer.reset_stats()
    resp, data = folder(vsphere_peer, "GET", f"{VM}/disk1-flat.vmdk", session=cookie(si),
                        headers={"Range": f"bytes={MiB + 2}-{MiB + 5}"})
    assert resp.status == 206 and data == b"2345"
    assert resp.getheader("Content-Range") == f"bytes {MiB + 2}-{MiB + 5}/{64 * MiB}"
    resp, data = folder(vsphere_peer, "GET", f"{VM}/disk1-flat.vmdk", session=cookie(si))
    assert resp.status == 200 and len(data) == 64 * MiB
    assert hashlib.sha256(data).hexdigest() == vsphere_peer.sha256(VM, "Hard disk 1")
    assert vsphere_peer.stats()["served"] == {f"[LocalDS_0] {VM}/disk1-flat.vmdk": 4 + 64 * MiB}


def test_put_then_create_vm_serves_and_tracks_the_content(si, vsphere_peer):
    session = cookie(si)
    content = bytes(MiB) + b"payload" * 1000 + bytes(MiB)

    def chunks():
        for i in range(0, len(content), 100_000):
            yield content[i:i + 100_000]
    resp, _ = folder(vsphere_peer, "PUT", "restored/r-flat.vmdk", session=session,
                     body=chunks())  # http.client sends a generator chunked
    assert resp.status in (200, 201)
    resp, data = folder(vsphere_peer, "GET", "restored/r-flat.vmdk", session=session)
    assert data == content
    assert vsphere_peer.stats()["received"]["[LocalDS_0] restored/r-flat.vmdk"] == len(content)
    dc = si.RetrieveContent().rootFolder.childEntity[0]
    pool = find_vm(si).resourcePool
    disk = vim.vm.device.VirtualDeviceSpec(
        operation="add", device=vim.vm.device.VirtualDisk(
            key=-1, controllerKey=1000, unitNumber=0, capacityInKB=len(content) // 1024,
            backing=vim.vm.device.VirtualDisk.FlatVer2BackingInfo(
                fileName="[LocalDS_0] restored/r.vmdk", diskMode="persistent")))
    scsi = vim.vm.device.VirtualDeviceSpec(
        operation="add", device=vim.vm.device.VirtualLsiLogicController(key=1000, busNumber=0,
                                                                        sharedBus="noSharing"))
    spec = vim.vm.ConfigSpec(name="restored", guestId="otherGuest64", numCPUs=1, memoryMB=128,
                             files=vim.vm.FileInfo(vmPathName="[LocalDS_0] restored"),
                             deviceChange=[scsi, disk])
    WaitForTask(dc.vmFolder.CreateVM_Task(config=spec, pool=pool))
    assert vsphere_peer.read("restored", "Hard disk 1", MiB, 7) == b"payload"
    vm = find_vm(si, "restored")
    WaitForTask(vm.PowerOnVM_Task())
    WaitForTask(vm.PowerOffVM_Task())
    WaitForTask(vm.Destroy_Task())
    assert "restored" not in [v["name"] for v in vsphere_peer.vms()]


def test_a_put_that_does_not_fit_the_datastore_fails(si, vsphere_peer):
    vsphere_peer.set_datastore("LocalDS_0", capacity=100 * MiB, free=MiB)
    ds = find_vm(si).datastore[0]
    assert (ds.summary.capacity, ds.summary.freeSpace) == (100 * MiB, MiB)
    resp, _ = folder(vsphere_peer, "PUT", "big/b-flat.vmdk", session=cookie(si),
                     body=b"x" * (2 * MiB))
    assert resp.status == 500
    resp, _ = folder(vsphere_peer, "PUT", "small/s-flat.vmdk", session=cookie(si),
                     body=b"x" * (MiB // 2))
    assert resp.status in (200, 201)
    assert ds.summary.freeSpace == MiB // 2


# -- injected faults and outages


def test_injected_soap_faults_and_failing_tasks(si, vsphere_peer):
    vm = find_vm(si)
    vsphere_peer.faults("CreateSnapshot_Task", fault="TaskInProgress", count=1)
    with pytest.raises(vim.fault.TaskInProgress):
        vm.CreateSnapshot_Task(name="s", memory=False, quiesce=False)
    vsphere_peer.faults("CreateSnapshot_Task", fault="InvalidState", in_task=True, count=1)
    with pytest.raises(vim.fault.InvalidState):
        snapshot(vm, "s")
    vsphere_peer.faults("RemoveSnapshot_Task", fault="HostCommunication", count=1)
    snap = snapshot(vm, "s")
    with pytest.raises(vmodl_fault("HostCommunication")):  # a busy or unreachable host
        snap.RemoveSnapshot_Task(removeChildren=False)
    WaitForTask(snap.RemoveSnapshot_Task(removeChildren=False))
    stats = vsphere_peer.stats()
    assert stats["calls"]["CreateSnapshot_Task"] == 3
    assert stats["faults"] == {"CreateSnapshot_Task fault": 1,
                               "CreateSnapshot_Task task_fault": 1,
                               "RemoveSnapshot_Task fault": 1}


def test_slow_tasks_stay_running(si, vsphere_peer):
    vm = find_vm(si)
    vsphere_peer.faults("CreateSnapshot_Task", task_seconds=1.0, count=1)
    started = time.monotonic()
    task = vm.CreateSnapshot_Task(name="slow", memory=False, quiesce=False)
    assert task.info.state in ("queued", "running")
    WaitForTask(task)
    assert time.monotonic() - started >= 1.0
    assert isinstance(task.info.result, vim.vm.Snapshot)


def test_resets_on_datastore_reads(si, vsphere_peer):
    vsphere_peer.faults("GET /folder", reset=True, count=1)
    with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
        folder(vsphere_peer, "GET", f"{VM}/disk1-flat.vmdk", session=cookie(si),
               headers={"Range": "bytes=0-9"})
    resp, data = folder(vsphere_peer, "GET", f"{VM}/disk1-flat.vmdk", session=cookie(si),
                        headers={"Range": "bytes=0-9"})
    assert resp.status == 206 and data == bytes(10)


def test_an_outage_resets_everything_and_keeps_state(si, vsphere_peer):
    vm = find_vm(si)
    snapshot(vm, "before")
    vsphere_peer.outage(True)
    with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
        vm.CreateSnapshot_Task(name="during", memory=False, quiesce=False)
    with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
        folder(vsphere_peer, "GET", f"{VM}/disk1-flat.vmdk", session=cookie(si))
    vsphere_peer.outage(False)
    si2 = connect(vsphere_peer)  # the old session is kept too, but pyvmomi dropped its socket
    vm2 = find_vm(si2)
    assert [s.name for s in vm2.snapshot.rootSnapshotList] == ["before"]
    assert vsphere_peer.stats()["snapshots"][VM] == 1
