"""Shared fixtures: a running cluster of real daemons, and disk images with holes."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

from tools.localcluster import Cluster

MiB = 1 << 20


@pytest.fixture
def cluster(tmp_path: Path):
    with Cluster(tmp_path) as c:
        yield c


def write_at(path: Path, offset: int, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, data, offset)
    finally:
        os.close(fd)


def make_disk(path: Path, size: int, data_extents: list[tuple[int, int]], seed: int = 1) -> None:
    """A sparse image of `size` bytes with random data in `data_extents` (offset, length)."""
    import random
    rnd = random.Random(seed)
    with open(path, "wb") as f:
        f.truncate(size)
    for off, length in data_extents:
        for pos in range(off, off + length, MiB):  # randbytes is limited to < 256 MiB
            write_at(path, pos, rnd.randbytes(min(MiB, off + length - pos)))


# The AWS test peer (tests/aws_peer.py): one moto server per test session, reset before
# each test so tests never see each other's snapshots, volumes, faults or counters.
@pytest.fixture(scope="session")
def _aws_peer_session(tmp_path_factory):
    from tests.aws_peer import PeerProcess, PeerStartError
    process = PeerProcess(tmp_path_factory.mktemp("aws_peer") / "server.log")
    try:
        client = process.start()
    except PeerStartError as e:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{e}: run `make test`, which installs moto[server]")
        pytest.skip(str(e))
    yield client
    process.stop()


@pytest.fixture
def aws_peer(_aws_peer_session):
    _aws_peer_session.reset()
    yield _aws_peer_session


@pytest.fixture
def aws(aws_peer, monkeypatch):
    """boto3 clients on the AWS peer: `aws("ec2")`, or with other keys
    `aws("s3", key=..., secret=...)`; `aws.peer` and `aws.key` for drctl. The secret key
    is in the environment, where drctl reads it for `site add --access-key-id`."""
    import boto3
    env = aws_peer.env()
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", env["AWS_SECRET_ACCESS_KEY"])

    def make(service: str, **keys):
        return boto3.client(service, region_name=aws_peer.region,
                            endpoint_url=aws_peer.endpoint,
                            aws_access_key_id=keys.get("key", env["AWS_ACCESS_KEY_ID"]),
                            aws_secret_access_key=keys.get("secret",
                                                           env["AWS_SECRET_ACCESS_KEY"]))
    make.peer, make.key = aws_peer, env["AWS_ACCESS_KEY_ID"]
    return make


# PostgreSQL (tests/pg_peer.py): one server per test session, stopped at the end.
@pytest.fixture(scope="session")
def _pg_server():
    from tests.pg_peer import PgServer, PgStartError
    try:
        server = PgServer()
        server.start()
    except PgStartError as e:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{e}: run `make test`, which installs Debian's postgresql")
        pytest.skip(str(e))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres(_pg_server) -> str:
    """URL of a database on the session's PostgreSQL: postgresql+asyncpg://USER@HOST:PORT/DB."""
    return _pg_server.new_database("session")


@pytest.fixture
def postgres_db(_pg_server) -> str:
    """URL of a new, empty database for this test alone."""
    return _pg_server.new_database()


# The control plane's services in-process (cycles and leases, inventory, protection tests).
@pytest.fixture(params=["sqlite", "postgres"])
def metadata_url(request, tmp_path) -> str:
    """An empty metadata database on each backend: SQLite, then PostgreSQL."""
    if request.param == "postgres":
        return request.getfixturevalue("postgres_db")
    return f"sqlite+aiosqlite:///{tmp_path}/c.db"


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
