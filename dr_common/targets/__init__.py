"""Target adapters: where recovery points are written.

Repository targets (`fs`, `s3`; `azblob` later) store the repository format of
`dr_common.repository` on an object store; they differ only in their `ObjectStore`.
Native targets (`ebs`, `azure-disk`) keep their own formats and will get their own
adapters beside this one.
"""

from __future__ import annotations

import os
from concurrent.futures import Executor

from dr_common.aws import AwsSettings
from dr_common.errors import InvalidArgument
from dr_common.repository import FsStore, Repository
from dr_common.sources.file import check_within_roots

REPOSITORY_KINDS = ("fs", "s3")


async def open_repository(kind: str, location: str, *, roots: list[str] | tuple[str, ...],
                          executor: Executor | None = None,
                          aws: AwsSettings | None = None) -> Repository:
    """Opens (creating on first use) the repository of a plan's target.

    For `s3`, `location` is `s3://bucket/prefix` and `aws` is required; the bucket must
    exist (operators own buckets). The caller closes `repo.store` when done: an S3
    store holds an open client.
    """
    if kind == "fs":
        path = check_within_roots(location, roots, field="repository.path")
        return await Repository.open_or_create(FsStore(os.fspath(path), executor=executor))
    if kind == "s3":
        from dr_common.targets.s3 import S3Store  # imports botocore: only when used
        if aws is None:
            raise InvalidArgument("an s3 repository needs AWS settings (at least a region)",
                                  field="repository.aws")
        store = S3Store.from_location(location, aws=aws)
        try:
            return await Repository.open_or_create(store)
        except BaseException:
            await store.close()
            raise
    raise InvalidArgument(f"repository kind {kind!r} is not supported; supported: "
                          f"{', '.join(REPOSITORY_KINDS)}", field="repository.kind")
