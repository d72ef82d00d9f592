"""The `vsphere` site kind: VMs whose virtual disks are read through vSphere's
changed-block tracking (CBT) and VM snapshots, without VDDK.

Inventory is the vSphere API (inventory.py). A cycle (snapshots.py) first makes sure
CBT is on for each protected VM, then takes one snapshot per VM, all VMs of the plan at
once, so the group's disks are frozen as close together as the API allows (the spread
is recorded). While the product's snapshot is the VM's only one, the disk's base
`-flat.vmdk` is a frozen point-in-time copy: the disk (disk.py) reads it with HTTPS
Range GETs on the datastore's file access, and asks `QueryChangedDiskAreas` which areas
changed since the change id the previous point recorded (`"*"` on a first cycle: the
allocated areas only). The snapshot is removed when the cycle ends, and any the product
left behind (a node that died holding one) at the start of the next cycle.

A disk's "source snapshot" as the control plane stores it with a point is this kind's
own reference (`SnapshotRef`, JSON): the VM snapshot the cycle read from and the disk's
change id and size at it. The control plane never looks inside.
"""
