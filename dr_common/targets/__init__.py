"""Target adapters: where recovery points are written.

Repository targets (`fs` now; `s3` and `azblob` later) store the repository format of
`dr_common.repository` on an object store; they differ only in their `ObjectStore`.
Native targets (`ebs`, `azure-disk`) keep their own formats and will get their own
adapters beside this one.
"""

from __future__ import annotations

import os
from concurrent.futures import Executor

from dr_common.errors import InvalidArgument
from dr_common.repository import FsStore, Repository
from dr_common.sources.file import check_within_roots

REPOSITORY_KINDS = ("fs",)


async def open_repository(kind: str, location: str, *, roots: list[str] | tuple[str, ...],
                          executor: Executor | None = None) -> Repository:
    """Opens (creating on first use) the repository of a plan's target."""
    if kind == "fs":
        path = check_within_roots(location, roots, field="repository.path")
        return await Repository.open_or_create(FsStore(os.fspath(path), executor=executor))
    raise InvalidArgument(f"repository kind {kind!r} is not supported; supported: "
                          f"{', '.join(REPOSITORY_KINDS)}", field="repository.kind")
