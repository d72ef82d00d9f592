"""Target `fs`: the repository format in a directory visible to the node (a local
disk, an NFS or SMB mount inside the recovery site)."""

from __future__ import annotations

import os

from dr_common.paths import check_within_roots
from dr_common.proto.dr.v1 import common_pb2, nodes_pb2
from dr_common.repository import FsStore, Repository
from dr_common.targets.base import TargetEnv
from dr_common.targets.repository import RepositoryTarget


def locate(path: str) -> nodes_pb2.FsTarget:
    return nodes_pb2.FsTarget(path=path)


async def open_target(locator: nodes_pb2.FsTarget, site: common_pb2.SiteSettings,
                      env: TargetEnv) -> RepositoryTarget:
    """Opens (creating on first use) the repository in `locator.path`, which must lie
    inside the node's file roots."""
    path = check_within_roots(locator.path, env.roots, field="target.fs.path")
    repo = await Repository.open_or_create(FsStore(os.fspath(path), executor=env.executor))
    return RepositoryTarget(repo, name=f"fs:{locator.path}", env=env)
