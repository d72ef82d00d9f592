"""Every resource kind the harness ARM serves, in one list."""

from tests.peers.azure.arm import Kind
from tests.peers.azure.compute import Disks, Snapshots

KINDS: list[Kind] = [Disks(), Snapshots()]
