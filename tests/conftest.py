"""The suite's fixtures, and only fixtures: helpers live in tests/helpers/, the real
peers' code in tests/peers/. Each fixture name means one thing in every test module."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import uuid
from pathlib import Path

import pytest

from tools.localcluster import Cluster


@pytest.fixture
def cluster(tmp_path: Path):
    """dr-control and one dr-node as processes, in tmp_path (tools.localcluster)."""
    with Cluster(tmp_path) as c:
        yield c


@pytest.fixture
def metered(tmp_path: Path):
    """A cluster whose daemons serve /metrics (tests.helpers.cluster.daemon_metrics)."""
    with Cluster(tmp_path, metrics=True) as c:
        yield c


@pytest.fixture
def single_try_cluster(tmp_path):
    """A cluster that tries a task once (a failure fails its cycle at once), with one
    worker and a two-chunk window: a cycle is slow enough to be hurt mid-way."""
    c = Cluster(tmp_path, node_env={"DR_NODE_ENGINE__WINDOW_CHUNKS": "2",
                                    "DR_NODE_ENGINE__WORKERS": "1"})
    c.control_env["DR_CONTROL_SCHEDULER__MAX_ATTEMPTS"] = "1"
    with c:
        yield c


@pytest.fixture
def short_cluster():
    """A cluster in a short directory under /tmp: the kvm site inside it keeps each VM's
    QMP socket, and a unix socket's path is at most 107 bytes (pytest's tmp_path can be
    longer than that on its own)."""
    root = Path(tempfile.mkdtemp(prefix="kvr-", dir="/tmp"))
    try:
        with Cluster(root) as c:
            yield c
    finally:
        # A failed test's VMs are stopped (they would hold a core each), found as
        # cleanup finds them.
        from dr_control.recovery.kvm import _Files
        for pidfile in root.glob("kvm/hybrid-dr-*/*/qemu.pid"):
            if pid := _Files(pidfile.parent).pid():
                os.kill(pid, signal.SIGKILL)
        if not os.environ.get("KEEP_KVM_TEST"):
            shutil.rmtree(root, ignore_errors=True)


# The AWS test peer (tests/peers/aws/): one moto server per test session, reset before
# each test so tests never see each other's snapshots, volumes, faults or counters.
@pytest.fixture(scope="session")
def _aws_peer_session(tmp_path_factory):
    from tests.peers.aws.client import PeerProcess, PeerStartError
    from tests.peers.tools import unavailable
    process = PeerProcess(tmp_path_factory.mktemp("aws_peer") / "server.log")
    try:
        client = process.start()
    except PeerStartError as e:
        unavailable(f"{e}: run `make test`, which installs moto[server]")
    yield client
    process.stop()


@pytest.fixture
def aws_peer(_aws_peer_session):
    """The AWS peer's client (tests.peers.aws.client.AwsPeerClient), the peer just reset."""
    _aws_peer_session.reset()
    yield _aws_peer_session


@pytest.fixture
def aws_settings(aws_peer):
    """dr_common.aws.AwsSettings for the product's own clients on the AWS peer."""
    from dr_common.aws import AwsSettings
    env = aws_peer.env()
    return AwsSettings(region=aws_peer.region, endpoint_url=aws_peer.endpoint,
                       access_key_id=env["AWS_ACCESS_KEY_ID"],
                       secret_access_key=env["AWS_SECRET_ACCESS_KEY"])


@pytest.fixture
def boto(aws_peer, monkeypatch):
    """boto3 clients on the AWS peer, for a test's own setup and checks: `boto("ec2")`,
    or with other keys `boto("s3", key=..., secret=...)`, or a botocore `config=`;
    `boto.peer` and `boto.key` for drctl. The secret key is in the environment, where
    drctl reads it for `site add --access-key-id`."""
    import boto3
    env = aws_peer.env()
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", env["AWS_SECRET_ACCESS_KEY"])

    def make(service: str, *, config=None, **keys):
        return boto3.client(service, region_name=aws_peer.region,
                            endpoint_url=aws_peer.endpoint, config=config,
                            aws_access_key_id=keys.get("key", env["AWS_ACCESS_KEY_ID"]),
                            aws_secret_access_key=keys.get("secret",
                                                           env["AWS_SECRET_ACCESS_KEY"]))
    make.peer, make.key = aws_peer, env["AWS_ACCESS_KEY_ID"]
    return make


@pytest.fixture
def bucket(boto) -> str:
    """The name of a new, empty S3 bucket on the AWS peer."""
    name = f"dr-test-{uuid.uuid4().hex[:12]}"
    boto("s3").create_bucket(Bucket=name)
    return name


# The vSphere test peer (tests/peers/vsphere/): vcsim behind a TLS front that corrects it to
# vSphere's CBT and snapshot semantics; one per test session, reset before each test (a
# fresh inventory, no disk content, faults, counters or sessions).
@pytest.fixture(scope="session")
def _vsphere_peer_session(tmp_path_factory):
    from tests.peers.tools import unavailable
    from tests.peers.vsphere.client import PeerProcess, PeerStartError
    process = PeerProcess(tmp_path_factory.mktemp("vsphere_peer"))
    try:
        client = process.start()
    except PeerStartError as e:
        unavailable(f"the vSphere peer is unavailable: {e}")
    yield client
    process.stop()


@pytest.fixture
def vsphere_peer(_vsphere_peer_session):
    """The vSphere peer's client (tests.peers.vsphere.client.VspherePeerClient), just reset."""
    _vsphere_peer_session.reset()
    yield _vsphere_peer_session


# PostgreSQL (tests/peers/pg.py): one server per test session, stopped at the end.
@pytest.fixture(scope="session")
def _pg_server():
    from tests.peers.pg import PgServer, PgStartError
    from tests.peers.tools import unavailable
    try:
        server = PgServer()
        server.start()
    except PgStartError as e:
        unavailable(f"{e}: run `make test`, which installs Debian's postgresql")
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


# The Azure peer (tests/peers/azure/): Azurite behind a Storage front that corrects its
# page-range diffs and checks managed-disk SAS, and a harness ARM over TLS; one per test
# session, reset before each test (no resources, blobs, grants, faults or counters).
@pytest.fixture(scope="session")
def _azure_peer_session(tmp_path_factory):
    from tests.peers.azure.client import PeerProcess, PeerStartError
    from tests.peers.tools import unavailable
    process = PeerProcess(tmp_path_factory.mktemp("azure_peer"))
    try:
        client = process.start()
    except PeerStartError as e:
        unavailable(f"the Azure peer is unavailable: {e}")
    yield client
    process.stop()


@pytest.fixture
def azure_peer(_azure_peer_session):
    """The Azure peer's client (tests.peers.azure.client.AzurePeerClient), just reset."""
    _azure_peer_session.reset()
    yield _azure_peer_session


# Azurite (tests/peers/azure/azurite.py), Azure Storage's emulator: one blob service per
# test session, in memory; each test that wants storage gets a container of its own.
@pytest.fixture(scope="session")
def azurite(tmp_path_factory):
    """The session's Azurite (tests.peers.azure.azurite.Azurite): `.endpoint` is the
    development account's blob URL; ACCOUNT and ACCOUNT_KEY are in that module."""
    from tests.peers.azure.azurite import Azurite, AzuriteStartError
    from tests.peers.tools import free_port, unavailable
    try:
        server = Azurite(tmp_path_factory.mktemp("azurite"), free_port()).start()
    except AzuriteStartError as e:
        unavailable(f"Azurite is unavailable: {e}")
    yield server
    server.stop()


@pytest.fixture
def azure_container(azurite) -> str:
    """The name of a new, empty container of Azurite's development account."""
    from tests.helpers.azblob import new_container
    from tests.peers.azure.azurite import connection_string
    return new_container(connection_string(azurite.endpoint))
