"""`python -m tests.peers.vsphere --port N --workdir DIR --vcsim BINARY`: the vSphere peer."""

from tests.peers.vsphere.server import main

main()
