"""Every resource kind the harness ARM serves, in one list."""

from tests.peers.azure.arm import Kind
from tests.peers.azure.compute import Disks, Snapshots
from tests.peers.azure.network import SUBNETS, NetworkInterfaces, NetworkSecurityGroups, VirtualNetworks
from tests.peers.azure.vms import VirtualMachines

_DISKS = Disks()  # one instance: VMs make their FromImage/Empty disks through it

KINDS: list[Kind] = [_DISKS, Snapshots(), VirtualMachines(_DISKS), VirtualNetworks(), SUBNETS,
                     NetworkSecurityGroups(), NetworkInterfaces()]
