"""Target adapters: where recovery points are written. One module per target kind, one
registry line each; `open_target(locator)` is the only way in.

Repository targets (`fs`, `s3`, `azblob`) store the repository format of
`dr_common.repository` on an object store (targets/repository.py), and differ only in
their store (a directory; a bucket, `s3://bucket/prefix`; a container of an Azure
storage account, `azblob://container/prefix`; the two cloud stores share
targets/cloudstore.py). Targets with a format of their own (`ebs`, `azure-disk`)
implement the same `Target` interface (targets/base.py) in their own module.

A target module offers:
- `open_target(locator, site, env) -> Target` (nodes): `locator` is the kind's own
  message of `TargetLocator` (proto/dr/v1/nodes.proto), `site` the site's settings;
- `locate(path) -> message` (control plane): the kind's locator for a target site's path.
The facts the control plane needs without opening anything are in `KINDS`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import ModuleType

from dr_common.errors import InvalidArgument
from dr_common.registry import Registry
from dr_common.proto.dr.v1 import nodes_pb2
from dr_common.targets.base import IMAGE_FORMATS, Target, TargetEnv


@dataclass(frozen=True)
class TargetKind:
    """What the control plane knows of a target kind without opening one."""

    name: str
    module: str
    # The site kinds a target of this kind can be at, and whether it needs the site's
    # path (fs: the site's directory; s3: its bucket and prefix; azblob: its container and
    # prefix).
    site_kinds: tuple[str, ...]
    path_required: bool
    # The repository format (docs/FORMAT.md): points can be verified chunk by chunk and
    # garbage-collected, and paired target nodes can write it.
    repository: bool
    # What a restore of one of its points makes ("raw", "qcow2": image files at a path
    # of the node; "ebs-volume": a new volume from the snapshot).
    restore_formats: tuple[str, ...]
    # A chunk size the kind requires (EBS blocks are 512 KiB), or 0 for any.
    chunk_size: int = 0
    # Whether chunks may be stored compressed.
    compression: bool = True
    # A restore of its points needs an availability zone (ebs: volumes live in one);
    # the hint names one.
    restore_zone: str = ""
    # Why a point cannot be verified, or its target collected, when `repository` is False.
    no_verify: str = ""
    no_gc: str = ""
    # What the site's path looks like, for errors ("s3://bucket/prefix").
    path_example: str = ""


# The registry. The kind is the name of its field in TargetLocator's `kind` oneof, with
# hyphens for underscores ("azure-disk" is the field azure_disk).
KINDS: dict[str, TargetKind] = {k.name: k for k in (
    TargetKind("fs", "dr_common.targets.fs", ("file", "kvm"), path_required=True,
               repository=True, restore_formats=IMAGE_FORMATS, path_example="/a/directory"),
    TargetKind("s3", "dr_common.targets.s3", ("aws",), path_required=True,
               repository=True, restore_formats=IMAGE_FORMATS,
               path_example="s3://bucket/prefix"),
    TargetKind("azblob", "dr_common.targets.azblob", ("azure",), path_required=True,
               repository=True, restore_formats=IMAGE_FORMATS,
               path_example="azblob://container/prefix"),
    TargetKind("ebs", "dr_common.targets.ebs", ("aws",), path_required=False,
               repository=False, restore_formats=("ebs-volume",), chunk_size=512 * 1024,
               compression=False, restore_zone="e.g. us-east-1a",
               no_verify="EBS checks its snapshots itself (every block was put with its "
               "SHA256); verify reads repository points only",
               no_gc="EBS frees a deleted snapshot's blocks itself"),
    TargetKind("azure-disk", "dr_common.targets.azure_disk", ("azure",), path_required=False,
               repository=False, restore_formats=("azure-disk",), compression=False,
               no_verify="Azure checks the replicas' pages itself (every page was put with "
               "its MD5); verify reads repository points only",
               no_gc="Azure frees the pages of a deleted blob snapshot itself",
               path_example="azblob://container/prefix"),
)}
REPOSITORY_KINDS = tuple(k for k, v in KINDS.items() if v.repository)


REGISTRY = Registry("target", KINDS.values())


def kind(name: str, *, field: str = "target.kind"):
    return REGISTRY.get(name, field=field)


def _module(name: str, field: str) -> ModuleType:
    return REGISTRY.module(name, field=field)


def locator(kind_name: str, path: str) -> nodes_pb2.TargetLocator:
    """The locator of a target of `kind_name` at a site's `path` (control plane). The
    site's settings are added when a task is leased, never stored."""
    module = _module(kind_name, "target.kind")
    loc = nodes_pb2.TargetLocator()
    getattr(loc, _field(kind_name)).CopyFrom(module.locate(path))
    return loc


def _field(kind_name: str) -> str:
    return kind_name.replace("-", "_")


def kind_of(loc: nodes_pb2.TargetLocator) -> str:
    return (loc.WhichOneof("kind") or "").replace("_", "-")


async def open_target(loc: nodes_pb2.TargetLocator, env: TargetEnv) -> Target:
    """Opens the target `loc` names; the caller closes it (or uses `opened`)."""
    name = kind_of(loc)
    if not name:
        raise InvalidArgument("the task names no target (TargetLocator.kind is unset)",
                              field="target")
    module = _module(name, "target")
    return await module.open_target(getattr(loc, _field(name)), loc.site, env)


@contextlib.asynccontextmanager
async def opened(loc: nodes_pb2.TargetLocator, env: TargetEnv) -> AsyncIterator[Target]:
    """`async with opened(locator, env) as target:` — closed when the block ends."""
    target = await open_target(loc, env)
    try:
        yield target
    finally:
        await target.close()
