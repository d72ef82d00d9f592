"""The kvm test peer: a tiny guest (Debian's kernel, busybox, init.sh) that runs under
QEMU's TCG, mounts its ext4 virtio disks, writes numbered fsynced files to them while it
runs, and serves them over HTTP; so a live source can replicate a running VM's disks
through QMP, and a recovery site can prove a recovered VM's data by booting it.

  guest.py      Guest (one QEMU boot: wait_ready, count, get, files, qmp, kill, stop)
                and make_disk (an empty ext4 qcow2)
  check.py      check_point: a disk image is a crash-consistent point of the workload
  initramfs.py  the kernel and the cached initramfs
  init.sh       the guest's /init: disks, workload, HTTP
  qmp.py        a minimal synchronous QMP client
"""
