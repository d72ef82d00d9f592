"""Recovery orchestration: bringing workloads up from recovery points at a target site.

One module per provider (`aws`: EC2 instances from `ebs` recovery points; `vsphere`: VMs
on datastores from repository points; `azure`: VMs on managed disks made from
`azure-disk` snapshots or from repository points; `kvm`: QEMU VMs on qcow2 images of
repository points, in a kvm site's directory), each a RecoveryProvider (base.py) found here by
the kind of the recovery plan's recovery site, never by
a test of that kind in the services. Each starts a recovery plan's boot groups in order,
limits its own API traffic, tags everything it creates with the execution, and can clean
an execution up (test drills, failed runs). A new provider is one module plus its line
in PROVIDERS.
"""

from __future__ import annotations

from importlib import import_module

from dr_common.errors import InvalidArgument
from dr_control.recovery.base import RecoveryProvider

# Site kind -> the module and class of the provider that recovers there. Imported on
# first use, so that a provider's SDK is loaded only where workloads are recovered to it.
PROVIDERS: dict[str, tuple[str, str]] = {
    "aws": ("dr_control.recovery.aws", "AwsProvider"),
    "vsphere": ("dr_control.recovery.vsphere", "VsphereProvider"),
    "azure": ("dr_control.recovery.azure", "AzureProvider"),
    "kvm": ("dr_control.recovery.kvm", "KvmProvider"),
}


def provider_class(kind: str, *, field: str = "site.kind") -> type[RecoveryProvider]:
    """The provider of sites of `kind`; InvalidArgument (on `field`) for a kind that has
    none."""
    try:
        module, name = PROVIDERS[kind]
    except KeyError:
        raise InvalidArgument(
            f"workloads cannot be recovered to a {kind} site: recovery providers exist for "
            f"{', '.join(PROVIDERS)} sites only; recover from a plan that targets one",
            field=field) from None
    return getattr(import_module(module), name)
