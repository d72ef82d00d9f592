"""The vSphere test peer: govmomi's vcsim (Debian's 0.24.2, built from source by build.py),
behind a TLS front that corrects it to vSphere's snapshot, CBT and datastore-access semantics,
with guest writes, request counters and fault injection.

Run it as `python -m tests.peers.vsphere --port N --workdir DIR --vcsim BINARY` (client.py's
`PeerProcess` builds vcsim and does this); it is ready when `GET /_peer/stats` answers over
TLS verified with DIR/tls/vcenter.pem. Log in as `administrator@vsphere.local` /
`peer-Passw0rd!` (client.py `VspherePeerClient.user`/`password`) at https://127.0.0.1:N/sdk.

Shape (PEERS.md, "vSphere"): replacing objects inside vcsim crashed it, so vcsim runs
unmodified on an internal plain-HTTP loopback port and everything vSphere does that it
does not is done by the front, which forwards all other SOAP calls and /folder requests.
What the front cannot show through vcsim's own objects it writes into them through a small
JSON API of our vcsim/main.go (`/_vcsim/...`, internal port only): disk changeIds, file
names and parent chains, capacities and labels; tools state; datastore space; and tasks of
vcsim's own kind that fail or take time. So every PropertyCollector path
(RetrievePropertiesEx, WaitForUpdatesEx, Fetch) shows the same values.

What differs from plain vcsim 0.24.2, and why:

* Disk content. Every VirtualDisk of every VM - vcsim's four model VMs (64 MiB disks; vcsim
  gives 1 MiB), disks added by ReconfigVM_Task, VMs from CreateVM_Task - has sparse block
  content in the front (64 KiB blocks; unwritten = zeros and not allocated). Tests write as
  a guest would through /_peer/disk/write. Labels are "Hard disk N" as vSphere names them
  (vcsim: "disk-202-0"). Device keys are vcsim's (not vSphere's 2000+).
* Snapshots freeze the base. While a VM has snapshots, guest writes go to a delta: the
  VM's current backing becomes `<name>-00000N.vmdk` with `parent` = the chain down to the
  base, each snapshot's `config` shows the file it froze (its own copy of the device: vcsim
  shares the VM's device objects with its snapshots). Removing a snapshot consolidates the
  layer written after it into the layer it froze; removing the last one writes the delta
  into the base; removing one of several keeps the base frozen at the oldest remaining. So
  a VM with a user's snapshot has a base frozen at the *user's* snapshot, as on vSphere.
  RemoveSnapshot_Task answers a task whose entity is the VM (vcsim names the snapshot,
  which pyvmomi 9 rejects). RevertToSnapshot_Task / RevertToCurrentSnapshot_Task answer
  `NotSupported`: reverting content is not modelled (vcsim would "succeed" silently).
* CBT. With `changeTrackingEnabled`, each disk backing carries a changeId
  "52 xx xx xx xx xx xx xx-xx xx xx xx xx xx xx xx/N" (a per-disk tracking uuid, then a
  sequence advanced by each snapshot) in the VM's config and in each snapshot's config (the
  id at that snapshot). As on vSphere, enabling CBT on a running VM takes effect at its next
  stun (snapshot create, or power-on); a powered-off VM's at once. Disabling it, or
  `/_peer/disk/cbt_reset` (vSphere resets CBT e.g. after a crash), makes every earlier id
  unknown.
* QueryChangedDiskAreas (vcsim: MethodNotFound) is answered by the front per the vSphere
  API reference (vim.VirtualMachine.queryChangedDiskAreas; DiskChangeInfo{startOffset,
  length, changedArea[DiskChangeExtent{start,length}]}): areas changed between `changeId`
  and the snapshot, exact at 64 KiB granularity (discards count as changes); "*" = the
  snapshot's allocated areas. One answer covers at most 1 GiB or 2048 extents
  (/_peer/query_limits), so callers must loop on startOffset + length. Faults (the method
  declares FileFault and NotFound; runtime faults are always possible):
    CBT not enabled / not yet in effect on the disk      FileFault (file = the disk)
    changeId well formed but unknown (another disk's,
      from before a CBT reset, later than the snapshot)  FileFault
    changeId malformed                                   InvalidArgument(invalidProperty=changeId)
    no disk with deviceKey                               NotFound
    snapshot of another VM                               InvalidArgument(invalidProperty=snapshot)
    no snapshot while the VM is powered on               FileFault (the reference says the
                                                         "current" form only works powered off)
    startOffset outside the disk                         InvalidArgument(invalidProperty=startOffset)
    no session                                           NotAuthenticated
  Which of FileFault / InvalidArgument real vCenter gives in each case is our reading of
  the reference and of what backup vendors report ("Error caused by file ..." after a CBT
  reset; "A specified parameter was not correct: changeId"): a guess where it says so.
* Datastore HTTP access (/folder/<path>?dcPath=DC0&dsName=LocalDS_0) needs the
  `vmware_soap_session` cookie of a session logged in through the front (401 otherwise), as
  vCenter does (vcsim: no auth). GET of a disk's base `<name>-flat.vmdk` serves the *base*
  content (Range `bytes=a-b`, `a-`, `-n` → 206 with Content-Range; none → 200; outside →
  416). GET of `<name>.vmdk` serves a vSphere-style text descriptor (`createType="vmfs"`,
  one `RW <sectors> VMFS "<name>-flat.vmdk"` extent) unless a client PUT one. Delta files
  are not served (vSphere's are sparse-format files, not raw). PUT of `-flat.vmdk`
  (Content-Length or chunked) is stored sparsely in the front (vcsim gets an empty
  placeholder so its file checks pass): the peer then serves it and a VM made over it by
  CreateVM_Task reads and tracks it like any disk. A new file answers what vcsim answers
  (200). Destroying a VM drops its disks' content.
* Datastore space: /_peer/datastore sets `summary.capacity`/`summary.freeSpace` (kept
  across RefreshDatastore); each PUT then uses up free space, and a PUT that does not fit
  answers HTTP 500 "Insufficient disk space on datastore ..." (a guess: the SDK guide does
  not document the status for a full datastore; hostd answers 500 for write errors).
* CreateSnapshot_Task with quiesce=True on a VM whose tools are not running answers a task
  that fails with ToolsUnavailable ("Cannot quiesce this virtual machine because VMware
  Tools is not currently available"); tools state per VM is set by /_peer/tools
  (guest.toolsRunningStatus / toolsStatus).
* Fetch (how pyvmomi 9 reads a property) of an unset property makes vcsim 0.24.2 panic:
  the front asks RetrievePropertiesEx instead and answers unset as absent (None).
* Faults, all per SOAP method or "GET /folder" / "PUT /folder", for the next N calls or
  at a rate: a SOAP fault on the call (any vim25 fault name: TaskInProgress, InvalidState,
  HostCommunication for a busy/unreachable host ...), a task that fails with it, a task that
  stays running S seconds (same outcome as the real one), a connection reset. The outage
  switch resets every vSphere request while on and keeps vcsim's state, as a vCenter
  restart keeps VMs and snapshots. vcsim runs each task to completion before it answers,
  so the front knows a task's outcome before the client can see it.

Peer endpoints (all under /_peer/, JSON, on the same HTTPS port; they work during an outage):
  POST   /_peer/reset                     vcsim restarted (fresh inventory), all peer state
  GET    /_peer/vms                       vcsim's VMs: ref, name, power, cbt, tools, disks,
                                          snapshots
  POST   /_peer/disk/write?vm=&disk=&offset=        body = bytes (a guest write)
  POST   /_peer/disk/discard?vm=&disk=&offset=&length=
  GET    /_peer/disk/read?vm=&disk=&offset=&length=[&base=1]
  GET    /_peer/disk/sha256?vm=&disk=[&base=1]
  GET    /_peer/disk/info?vm=&disk=
  POST   /_peer/disk/cbt_reset?vm=&disk=
  POST   /_peer/tools          {vm, running}
  POST   /_peer/datastore      {name, capacity, free}
  POST   /_peer/query_limits   {span, extents}
  POST   /_peer/faults         {method, fault, in_task, task_seconds, reset, count, rate}
  DELETE /_peer/faults[?seed=N]
  POST   /_peer/outage         {on}
  GET    /_peer/stats          POST /_peer/stats/reset
`vm` is a VM's name or moref; `disk` its device key or label ("Hard disk 1").

The modules, one concern each:
  vcsim/main.go  vcsim over the simulator, with the /_vcsim/ JSON API
  build.py       building it once per machine (cached by source hash, locked)
  vcsim.py       vcsim as the front's child process, and a client of /_vcsim/
  disks.py       disk content: base and delta layers, consolidation, CBT, change extents
  inventory.py   which disk each VM device is; what vSphere would show, written into vcsim
  soap.py        the SOAP wire: parsing calls, writing responses and faults
  methods.py     the SOAP methods answered or corrected, and fault injection
  front.py       the HTTPS server: routing, forwarding, sessions, /folder
  control.py     the /_peer/ endpoints
  state.py       faults, counters, sessions, outage, datastore space
  tls.py         the self-signed certificate and its thumbprints
  server.py      the process's entry point
  client.py      the test side: the peer as a process, and a client of /_peer/
Only client.py (with build.py and tls.py) is imported by the tests.

Not done: delta-disk file contents (no raw delta files exist to GET), revert, clone with
content (CloneVM_Task makes empty disks), NFC/ExportVm, freeing datastore space on delete,
changeIds for disks of VMs made by CloneVM before CBT is enabled on them.
"""
