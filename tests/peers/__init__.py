"""The real systems the tests run against (docs: DESIGN.md section 7, PEERS.md): how each
is found or started, waited for and stopped. The fixtures over them are in
tests/conftest.py.

  tools.py  programs a test needs (qemu-img, chromium, buf, ...), and the rule for a
            missing peer: a skip, or a failure under CI=true
  aws/      the AWS peer: moto's server corrected to AWS's EBS semantics, with faults
  vsphere/  the vSphere peer: govmomi's vcsim behind a front that adds disk contents,
            snapshot and CBT semantics, /folder sessions, and faults
  kvm/      the tiny kvm guest: a TCG VM over ext4 qcow2 disks that writes fsynced
            numbered files while it runs and serves them; check_point for its disks
  pg.py     a throw-away PostgreSQL server
"""
