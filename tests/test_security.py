"""Security: the certificates of `drctl certs`, mutual TLS between real daemons, and API
tokens with roles (DESIGN.md section 5).

One cluster with TLS and auth serves the daemon tests (module scope: starting daemons
is the slow part); the order of the tests does not matter to any of them.
"""

from __future__ import annotations

import contextlib
import io
import ipaddress
import stat
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dr_common import tls
from dr_common.errors import InvalidArgument
from dr_common.proto.dr.v1 import nodes_pb2
from dr_control.api.auth import rule_for
from dr_control.cli.main import main as drctl_main
from tests.helpers.disks import MiB, make_disk
from tools.localcluster import Cluster, sha256, wait_for

# -- certificates (no daemons) --------------------------------------------------------------


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_init_makes_a_ca_and_leaves_that_chain_to_it(tmp_path: Path):
    tls.init_dir(tmp_path, server_names=["dr.example.com", "10.0.0.5"], nodes=["n1"])
    ca = _cert(tmp_path / tls.CA_CERT)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    server = _cert(tmp_path / tls.SERVER_CERT)
    node = _cert(tmp_path / "n1.pem")
    for leaf in (server, node, _cert(tmp_path / "drctl.pem")):
        leaf.verify_directly_issued_by(ca)  # raises when the signature does not verify
    eku = x509.ExtendedKeyUsage
    assert list(server.extensions.get_extension_for_class(eku).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH]
    # A node's certificate also serves its TransferService to paired source nodes.
    assert list(node.extensions.get_extension_for_class(eku).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]
    assert node.subject.rfc4514_string() == "CN=n1"
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["dr.example.com"]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.5")]
    for key in tmp_path.glob("*-key.pem"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key


def test_a_node_from_another_ca_does_not_verify_and_init_refuses_to_replace_a_ca(
        tmp_path: Path):
    tls.init_dir(tmp_path / "a", server_names=tls.DEFAULT_SERVER_NAMES, nodes=[])
    tls.init_dir(tmp_path / "b", server_names=tls.DEFAULT_SERVER_NAMES, nodes=["n9"])
    with pytest.raises(Exception):
        _cert(tmp_path / "b" / "n9.pem").verify_directly_issued_by(
            _cert(tmp_path / "a" / tls.CA_CERT))
    with pytest.raises(InvalidArgument, match="already exists"):
        tls.init_dir(tmp_path / "a", server_names=tls.DEFAULT_SERVER_NAMES, nodes=[])
    with pytest.raises(InvalidArgument, match="drctl certs init"):
        tls.add_client(tmp_path / "none", "n1")


def _drctl(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = drctl_main(list(args))
    return code, out.getvalue(), err.getvalue()


def test_drctl_certs_works_offline(tmp_path: Path):
    # No dr-control runs at this address: certs must not need one.
    code, out, err = _drctl("--server", "127.0.0.1:1", "certs", "init", "--dir",
                            str(tmp_path), "--server-name", "dr.local", "--node", "n1")
    assert code == 0, err
    assert {"ca.pem", "control.pem", "drctl.pem", "n1.pem"} <= {p.name for p in tmp_path.iterdir()}
    code, out, err = _drctl("certs", "node", "n2", "--dir", str(tmp_path))
    assert code == 0 and out.strip() == str(tmp_path / "n2.pem"), err
    code, _, err = _drctl("certs", "init", "--dir", str(tmp_path))
    assert code == 1 and err.startswith("error: ") and "already exists" in err


def test_method_roles():
    assert rule_for("/dr.v1.ProtectionService/ListPlans") == "viewer"
    assert rule_for("/dr.v1.ProtectionService/PausePlan") == "operator"
    assert rule_for("/dr.v1.InventoryService/CreateSite") == "admin"
    assert rule_for("/dr.v1.AdminService/ListApiTokens") == "admin"
    assert rule_for("/dr.v1.NodeService/Heartbeat") == "node"
    assert rule_for("/dr.v1.NodeService/ListNodes") == "viewer"
    assert rule_for("/grpc.health.v1.Health/Check") == "open"


# -- real daemons with mutual TLS and tokens ------------------------------------------------


@pytest.fixture(scope="module")
def secure(tmp_path_factory):
    root = tmp_path_factory.mktemp("secure")
    with Cluster(root, tls=True, auth=True) as c:
        c.secrets = [c.admin_token_file.read_text().strip()]
        c.tokens = {}
        for role in ("viewer", "operator"):
            path = root / f"{role}.token"
            _, out, _ = c.drctl("token", "create", "--name", role, "--role", role)
            path.write_text(out.strip())
            c.tokens[role] = path
            c.secrets.append(out.strip())
        yield c
    # Every log of the run, control's and nodes', must be free of every token secret.
    logs = {p: p.read_text(errors="replace") for p in root.rglob("*.log")}
    assert logs
    for path, text in logs.items():
        for secret in c.secrets:
            assert secret not in text, f"a token secret is in {path}"


def test_node_with_valid_certificate_registers_and_replicates(secure: Cluster):
    c = secure
    disk = c.src / "vm1.img"
    make_disk(disk, 4 * MiB, [(0, MiB), (2 * MiB, MiB)])
    c.drctl("site", "add", "src", "--kind", "file", "--path", str(c.src))
    c.drctl("site", "add", "dst", "--kind", "file", "--path", str(c.repo))
    c.drctl("plan", "create", "p1", "--source", "src", "--target", "dst",
            "--workload", "src/vm1", "--rpo", "1h")
    points = wait_for(lambda: c.points("p1"), timeout=60, what="a recovery point over mTLS")
    dest = c.out / "vm1.restored"
    c.drctl("restore", points[0]["name"], "--to", str(dest))
    assert sha256(dest) == sha256(disk)


def test_node_with_certificate_of_another_ca_never_registers(secure: Cluster, tmp_path: Path):
    c = secure
    other = tmp_path / "other-ca"
    tls.init_dir(other, server_names=tls.DEFAULT_SERVER_NAMES, nodes=["rogue"])
    proc = c._spawn("dr-node", {**c.node_env, "DR_NODE_NODE_ID": "rogue",
                                **c.node_tls_env("rogue", other)}, "node-rogue.log")
    try:
        # The node says why: its handshake is refused, so it keeps retrying to register.
        wait_for(lambda: "cannot register with dr-control" in c.log("node-rogue.log"),
                 timeout=20, what="the rogue node to report its refusal")
        names = [n.name for n in c.nodes_api.ListNodes(nodes_pb2.ListNodesRequest(),
                                                       timeout=5).nodes]
        assert "nodes/rogue" not in names
        # dr-control's log (gRPC's TLS layer) names the cause.
        assert "CERTIFICATE_VERIFY_FAILED" in c.log("control.log")
    finally:
        proc.terminate()
        proc.wait(30)


def test_a_node_may_only_act_as_the_node_its_certificate_names(secure: Cluster):
    c = secure
    env = {**c.node_env, "DR_NODE_NODE_ID": "impostor", **c.node_tls_env("n1")}
    proc = c._spawn("dr-node", env, "node-impostor.log")
    try:
        wait_for(lambda: "PERMISSION_DENIED" in c.log("node-impostor.log"), timeout=20,
                 what="the impostor to be refused")
    finally:
        proc.terminate()
        proc.wait(30)


def test_plaintext_and_certificate_less_clients_are_refused(secure: Cluster):
    for channel in (grpc.insecure_channel(secure.address),
                    grpc.secure_channel(secure.address, tls.channel_credentials(
                        secure.tls_files.ca_file))):
        with channel, pytest.raises(grpc.RpcError) as exc:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(),
                                                      timeout=5)
        assert exc.value.code() == grpc.StatusCode.UNAVAILABLE


def _refused(c: Cluster, token: Path | None, *args: str) -> str:
    """drctl's stderr for a refused command: one error line, exit 1, no traceback."""
    if token is None:
        code, _, err = _drctl("--server", c.address, "--ca-file", c.tls_files.ca_file,
                              "--cert-file", c.tls_files.cert_file, "--key-file",
                              c.tls_files.key_file, *args)
    else:
        code, _, err = c.drctl(*args, check=False, token_file=token)
    assert code == 1, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def test_roles(secure: Cluster):
    c = secure
    viewer, operator = c.tokens["viewer"], c.tokens["operator"]
    c.drctl("site", "list", token_file=viewer)
    c.drctl("node", "list", token_file=viewer)
    c.drctl("plan", "list", token_file=viewer)
    # Refused calls never reach the service: the plans named below need not exist.

    err = _refused(c, viewer, "site", "add", "x1", "--kind", "file", "--path", str(c.src))
    assert "PERMISSION_DENIED" in err and "admin role" in err
    for args in (("plan", "pause", "p1"), ("restore", "plans/p1/recoveryPoints/x", "--to",
                                           str(c.out / "x")), ("plan", "delete", "p1")):
        err = _refused(c, viewer, *args)
        assert "PERMISSION_DENIED" in err and "viewer role" in err, err

    err = _refused(c, operator, "site", "add", "x2", "--kind", "file", "--path", str(c.src))
    assert "PERMISSION_DENIED" in err and "needs the admin role" in err

    err = _refused(c, None, "site", "list")
    assert "UNAUTHENTICATED" in err and "--token-file" in err
    bogus = c.root / "bogus.token"
    bogus.write_text("hdr_not-a-real-token")
    err = _refused(c, bogus, "site", "list")
    assert "UNAUTHENTICATED" in err and "hdr_not-a-real-token" not in err


def test_operator_runs_and_pauses_and_a_revoked_token_is_refused(secure: Cluster):
    c = secure
    src, repo = c.root / "src2", c.root / "repo2"
    repo.mkdir()
    src.mkdir()
    make_disk(src / "vm2.img", MiB, [(0, MiB)])
    c.drctl("site", "add", "src2", "--kind", "file", "--path", str(src))
    c.drctl("site", "add", "dst2", "--kind", "file", "--path", str(repo))
    c.drctl("plan", "create", "p2", "--source", "src2", "--target", "dst2",
            "--rpo", "1h", "--workload", "src2/vm2")
    operator = c.tokens["operator"]
    c.drctl("plan", "run", "p2", token_file=operator)
    c.drctl("plan", "pause", "p2", token_file=operator)
    c.drctl("plan", "resume", "p2", token_file=operator)

    _, out, _ = c.drctl("token", "create", "--name", "short-lived", "--role", "viewer")
    c.secrets.append(out.strip())
    path = c.root / "short.token"
    path.write_text(out.strip())
    c.drctl("plan", "list", token_file=path)
    name = next(t["name"] for t in c.drctl_json("token", "list")
                if t["display_name"] == "short-lived")
    c.drctl("token", "revoke", name)
    err = _refused(c, path, "plan", "list")
    assert "UNAUTHENTICATED" in err and "revoked" in err
    # The list never carries secrets.
    assert out.strip() not in c.drctl("token", "list", "-o", "json")[1]
    err = _refused(c, c.tokens["viewer"], "token", "list")
    assert "needs the admin role" in err
