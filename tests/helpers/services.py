"""The control plane's services in-process, over a real metadata database (SQLite or
PostgreSQL): a ServiceContext, and a small plan to run the coordinator against."""

from __future__ import annotations

import contextlib
from pathlib import Path

from tests.helpers.disks import MiB, make_disk


@contextlib.asynccontextmanager
async def service_context(url: str, tmp_path: Path, **scheduler):
    """The database at `url` migrated and a ServiceContext over it, whose file roots are
    `tmp_path` (scheduler: SchedulerConfig settings; lease 30 s, 2 attempts unless
    given). The engine is disposed on exit."""
    from dr_control.config import ControlConfig, SchedulerConfig
    from dr_control.db.engine import make_engine, migrate, sessionmaker
    from dr_control.services.context import ServiceContext
    await migrate(url)
    engine = make_engine(url)
    cfg = ControlConfig(state_dir=str(tmp_path), file_roots=[str(tmp_path)],
                        scheduler=SchedulerConfig(**{"lease_seconds": 30, "max_attempts": 2,
                                                     **scheduler}))
    try:
        yield ServiceContext(db=sessionmaker(engine), config=cfg)
    finally:
        await engine.dispose()


async def two_disk_plan(ctx, tmp_path: Path, *, paired: bool = False):
    """Sites src (disks a and b, 1 MiB each) and dst (a repository in tmp_path/repo,
    `paired` or not), and plan p from one to the other; returns (leases, protection
    service)."""
    from dr_control.services.inventory import InventoryService
    from dr_control.services.leasing import Leases
    from dr_control.services.protection import ProtectionService
    (tmp_path / "src").mkdir()
    (tmp_path / "repo").mkdir()
    make_disk(tmp_path / "src" / "a.img", MiB, [(0, MiB)])
    make_disk(tmp_path / "src" / "b.img", MiB, [(0, MiB)])
    inv = InventoryService(ctx)
    await inv.create_site("src", kind="file", path=str(tmp_path / "src"))
    await inv.create_site("dst", kind="file", path=str(tmp_path / "repo"), paired=paired)
    leases = Leases(ctx)
    prot = ProtectionService(ctx)
    await prot.create_plan("p", source_site="sites/src", target_site="sites/dst",
                           target_kind="fs", workloads=["sites/src/workloads/a",
                                                        "sites/src/workloads/b"],
                           disks=[], rpo_seconds=60, keep_last=0, chunk_size=0,
                           compression="")
    return leases, prot
