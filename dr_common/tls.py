"""The certificates of mutual TLS between dr-control, dr-node and drctl.

A private CA (`make_ca`) signs one server certificate for dr-control (`issue_server`)
and one client certificate per node (`issue_client`, CN = node id); drctl gets a
client certificate from the same CA (CN = "drctl"), because dr-control has one TLS
port that asks every peer for a certificate. `drctl certs init` writes them as PEM
files with `write_bundle`; the daemons read them back with `read_pem`.

Keys are EC P-256: as strong as RSA 3072 for our purpose, and fast to make in tests.
Key files are written 0600 (they are the node's identity); certificates 0644.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from dr_common.errors import InvalidArgument

# The CA outlives many leaf generations; leaves are re-issued with `drctl certs node`.
CA_DAYS = 3650
LEAF_DAYS = 825  # the longest lifetime common TLS clients accept for a leaf
# Clock skew between hosts must not make a fresh certificate "not yet valid".
BACKDATE = datetime.timedelta(minutes=5)
DEFAULT_SERVER_NAMES = ("localhost", "127.0.0.1")
CA_CERT, CA_KEY = "ca.pem", "ca-key.pem"
SERVER_CERT, SERVER_KEY = "control.pem", "control-key.pem"
DRCTL_NAME = "drctl"


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())


def make_ca(common_name: str = "Hybrid DR CA") -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = (_builder(name, name, key.public_key(), CA_DAYS)
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                            crl_sign=True, content_commitment=False,
                                            key_encipherment=False, data_encipherment=False,
                                            key_agreement=False, encipher_only=False,
                                            decipher_only=False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                              critical=False))
    return Issued(builder.sign(key, hashes.SHA256()), key)


def issue_server(ca: Issued, names: list[str] | tuple[str, ...] = DEFAULT_SERVER_NAMES
                 ) -> Issued:
    """dr-control's certificate; `names` are its DNS names and IP addresses (the SANs)."""
    if not names:
        raise InvalidArgument("the server certificate needs at least one name; "
                              "pass --server-name HOST", field="server_names")
    return _issue(ca, names[0], ExtendedKeyUsageOID.SERVER_AUTH, _sans(names))


def issue_client(ca: Issued, common_name: str) -> Issued:
    """A client certificate: a node's (CN = node id) or drctl's.

    It also serves: a target node's TransferService shows it to paired source nodes,
    which check it names the node the control plane paired them with (the SAN)."""
    if not common_name:
        raise InvalidArgument("a client certificate needs a name (the node id)", field="node")
    return _issue(ca, common_name, [ExtendedKeyUsageOID.CLIENT_AUTH,
                                    ExtendedKeyUsageOID.SERVER_AUTH], _sans([common_name]))


def _issue(ca: Issued, common_name: str, usage: x509.ObjectIdentifier | list,
           sans: x509.SubjectAlternativeName | None) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = (_builder(subject, ca.cert.subject, key.public_key(), LEAF_DAYS)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage(usage if isinstance(usage, list) else [usage]),
                              critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   ca.key.public_key()), critical=False))
    if sans is not None:
        builder = builder.add_extension(sans, critical=False)
    return Issued(builder.sign(ca.key, hashes.SHA256()), key)


def _builder(subject: x509.Name, issuer: x509.Name, public_key, days: int
             ) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.timezone.utc)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE).not_valid_after(now + datetime.timedelta(days=days)))


def _sans(names: list[str] | tuple[str, ...]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


# -- files ------------------------------------------------------------------------------


def write_issued(issued: Issued, directory: Path, cert_name: str, key_name: str) -> None:
    """Writes the certificate (0644) and the key (0600, created so: never readable by others)."""
    directory.mkdir(parents=True, exist_ok=True)
    _write(directory / cert_name, issued.cert_pem, 0o644)
    _write(directory / key_name, issued.key_pem, 0o600)


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, mode)  # an existing file keeps its old mode through O_CREAT


def client_file_names(common_name: str) -> tuple[str, str]:
    return f"{common_name}.pem", f"{common_name}-key.pem"


def init_dir(directory: Path, *, server_names: list[str] | tuple[str, ...],
             nodes: list[str] | tuple[str, ...]) -> list[Path]:
    """A new CA with dr-control's, drctl's and the given nodes' certificates.

    Refuses a directory that already holds a CA: a new CA would silently invalidate
    every certificate already handed out."""
    if (directory / CA_CERT).exists():
        raise InvalidArgument(f"{directory / CA_CERT} already exists; to add a node use "
                              "`drctl certs node ID --dir DIR`, or choose another --dir")
    ca = make_ca()
    write_issued(ca, directory, CA_CERT, CA_KEY)
    write_issued(issue_server(ca, server_names), directory, SERVER_CERT, SERVER_KEY)
    written = [directory / CA_CERT, directory / SERVER_CERT]
    for name in (DRCTL_NAME, *nodes):
        written.append(add_client(directory, name, ca=ca))
    return written


def add_client(directory: Path, common_name: str, *, ca: Issued | None = None) -> Path:
    """Issues a client certificate from the CA in `directory`; returns the certificate's path."""
    ca = ca or load_ca(directory)
    cert_name, key_name = client_file_names(common_name)
    write_issued(issue_client(ca, common_name), directory, cert_name, key_name)
    return directory / cert_name


def load_ca(directory: Path) -> Issued:
    try:
        cert = x509.load_pem_x509_certificate((directory / CA_CERT).read_bytes())
        key = serialization.load_pem_private_key((directory / CA_KEY).read_bytes(), None)
    except FileNotFoundError as e:
        raise InvalidArgument(f"no CA in {directory} ({e.filename} is missing); "
                              "create one with `drctl certs init --dir DIR`") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise InvalidArgument(f"{directory / CA_KEY} is not an EC key made by drctl certs init")
    return Issued(cert, key)


def read_pem(path: str, what: str) -> bytes:
    """A PEM file named in the configuration, with an error that names the setting."""
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise InvalidArgument(f"cannot read {what} {path}: {e.strerror}; check the "
                              f"configuration's {what} setting", field=what) from None


# -- gRPC credentials -------------------------------------------------------------------


def server_credentials(cert_file: str, key_file: str, client_ca_file: str = ""
                       ) -> grpc.ServerCredentials:
    """dr-control's TLS; with `client_ca_file`, every peer must show a certificate it signed."""
    pair = [(read_pem(key_file, "tls_key_file"), read_pem(cert_file, "tls_cert_file"))]
    if not client_ca_file:
        return grpc.ssl_server_credentials(pair)
    return grpc.ssl_server_credentials(pair, read_pem(client_ca_file, "tls_client_ca_file"),
                                       require_client_auth=True)


def channel_credentials(ca_file: str, cert_file: str = "", key_file: str = ""
                        ) -> grpc.ChannelCredentials:
    """A client's TLS: trust `ca_file` and, when given, present the certificate."""
    if bool(cert_file) != bool(key_file):
        raise InvalidArgument("tls_cert_file and tls_key_file go together; set both or neither",
                              field="tls_cert_file")
    return grpc.ssl_channel_credentials(
        root_certificates=read_pem(ca_file, "tls_ca_file"),
        private_key=read_pem(key_file, "tls_key_file") if key_file else None,
        certificate_chain=read_pem(cert_file, "tls_cert_file") if cert_file else None)
